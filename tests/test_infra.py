"""infra/: the compose stack, its params file, the image and the work-pool templates hold together.

No Docker engine is needed: the files are parsed and cross-checked; `docker compose config`
runs only where the compose plugin is installed."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
from importlib.metadata import version

import pytest
import yaml
from pathlib import Path

from mmd.config import load_settings
from mmd.cycle import uses_dvc

from .conftest import REPO

INFRA = REPO / "infra"
COMPOSE = INFRA / "compose.yaml"
PARAMS = INFRA / "params.compose.yaml"
DOCKERFILE = INFRA / "Dockerfile"
POOLS = INFRA / "work-pools"
REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")   # ${VAR} or ${VAR:-default}
SECRET_KEY = re.compile(r"PASSWORD|API_KEY|SECRET|TOKEN", re.I)
APP = "/app"                                             # the image's WORKDIR


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _container_ports(service: dict) -> set[int]:
    """The container side of each `[host_ip:]published:target` mapping."""
    return {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", [])}


def _interpolated(text: str) -> str:
    """What compose makes of ${VAR:-default} with nothing set."""
    return REF.sub(lambda m: m.group(2) or "", text)


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), comments dropped and continuation lines joined."""
    text = re.sub(r"\\\n", " ", "\n".join(l for l in DOCKERFILE.read_text().splitlines() if not l.lstrip().startswith("#")))
    return [(l.split(None, 1)[0].upper(), l.split(None, 1)[1].strip()) for l in text.splitlines() if l.strip()]


# --------------------------------------------------------------------------- compose.yaml
def test_compose_services_images_and_ports(compose):
    services = compose["services"]
    assert set(services) == {"qdrant", "postgres", "prefect-server", "mailpit", "worker"}
    for name, svc in services.items():
        if name != "worker":
            image = svc["image"]
            assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image ({image})"
    assert _container_ports(services["qdrant"]) == {6333, 6334}
    assert _container_ports(services["prefect-server"]) == {4200}
    assert _container_ports(services["mailpit"]) == {1025, 8025}
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")
    # the server image is the Prefect the flows are written against
    assert services["prefect-server"]["image"] == f"prefecthq/prefect:{version('prefect')}-python3.11"
    # mmd needs Qdrant server >= 1.16 (collection metadata, mmd/store/client.py)
    tag = re.fullmatch(r"qdrant/qdrant:v(\d+)\.(\d+)\.(\d+)", services["qdrant"]["image"])
    assert tag and (int(tag[1]), int(tag[2])) >= (1, 16)
    for name, volume in {"qdrant": "/qdrant/storage", "postgres": "/var/lib/postgresql/data"}.items():
        mounts = [v.split(":") for v in services[name]["volumes"]]
        assert any(m[0] in compose["volumes"] and m[1] == volume for m in mounts), name


def test_compose_prefect_server_on_postgres(compose):
    services = compose["services"]
    server = services["prefect-server"]
    assert server["command"][:3] == ["prefect", "server", "start"] and "0.0.0.0" in server["command"]
    env = _env(server)
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    url = env["PREFECT_API_DATABASE_CONNECTION_URL"]
    m = re.fullmatch(r"postgresql\+asyncpg://(\w+):(\$\{[^}]+\})@postgres:5432/(\w+)", url)
    assert m, url
    pg = _env(services["postgres"])
    assert (m[1], m[2], m[3]) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert "healthcheck" in server


def test_compose_worker_serves_against_the_compose_server(compose):
    worker = compose["services"]["worker"]
    assert worker["build"] == {"context": "..", "dockerfile": "infra/Dockerfile"}
    # the deployment's own project (mmd init on the first start), every stage through `dvc repro`
    assert worker["command"] == ["python", "-m", "flows.deploy", "serve", "--params", "/project/params.yaml",
                                 "--init-from", "infra/params.compose.yaml"]
    env = _env(worker)
    # set, so serve_deployments uses this server and starts none of its own
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert (env["MMD_SMTP_HOST"], env["MMD_SMTP_PORT"], env["MMD_SMTP_TLS"]) == ("mailpit", "1025", "none")
    assert env["HF_HUB_OFFLINE"] == "1"
    # the key the worker sends is the one Qdrant requires
    assert env["QDRANT_API_KEY"] == _env(compose["services"]["qdrant"])["QDRANT__SERVICE__API_KEY"]
    targets = {v.split(":")[1] for v in worker["volumes"]}
    assert {"/project", f"{APP}/inbox"} <= targets
    assert worker["depends_on"]["prefect-server"]["condition"] == "service_healthy"
    assert {"qdrant", "mailpit"} <= set(worker["depends_on"])


def test_compose_has_no_literal_secrets(compose):
    """Every secret is a ${VAR...} reference (a local default allowed), never a value in the file."""
    found = 0
    for name, svc in compose["services"].items():
        for key, value in _env(svc).items():
            if SECRET_KEY.search(key):
                found += 1
                assert REF.fullmatch(value), f"{name}: {key} must be ${{VAR:-default}}, not a value"
            for password in re.findall(r"://[^:/@\s]+:([^@\s]+)@", value):
                assert REF.fullmatch(password), f"{name}: {key} carries a literal password"
    assert found >= 3   # qdrant's key, the worker's key, postgres's password
    # the secrets are not in the other files that ship either
    for path in (PARAMS, DOCKERFILE, *POOLS.glob("*.json")):
        text = path.read_text()
        assert not re.search(r"(?i)(password|api_key)\s*[:=]\s*['\"]?\w", text), path
        assert _env(compose["services"]["qdrant"])["QDRANT__SERVICE__API_KEY"] not in text


def test_compose_references_files_that_exist(compose):
    worker = compose["services"]["worker"]
    context = (INFRA / worker["build"]["context"]).resolve()
    assert context == REPO
    assert (context / worker["build"]["dockerfile"]).is_file()
    for volume in worker["volumes"]:
        source = volume.split(":")[0]
        if source.startswith((".", "/")):
            assert (INFRA / source).resolve().is_dir(), volume
        else:
            assert source in compose["volumes"], volume
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith((".", "/")) or source in compose["volumes"], volume
    init_from = worker["command"][worker["command"].index("--init-from") + 1]
    assert (REPO / init_from).resolve() == PARAMS   # relative to the image's WORKDIR (the repository)
    params = worker["command"][worker["command"].index("--params") + 1]
    assert Path(params).parent.as_posix() in {v.split(":")[1] for v in worker["volumes"]}  # in the project volume


def test_compose_schema_shape(compose):
    """What `docker compose config` would reject first: unknown top-level keys, depends_on on
    a service that does not exist, and a ${VAR} left without a default."""
    assert set(compose) <= {"name", "services", "volumes", "networks", "secrets", "configs"}
    for name, svc in compose["services"].items():
        for dep in svc.get("depends_on", {}):
            assert dep in compose["services"], f"{name} depends on {dep}"
    for m in REF.finditer(COMPOSE.read_text()):
        assert m.group(2) is not None, f"${{{m.group(1)}}} has no default"
    yaml.safe_load(_interpolated(COMPOSE.read_text()))


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI")
def test_docker_compose_config_accepts_the_file():
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    out = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------- the image
def test_dockerfile_installs_the_pinned_set_and_serves():
    steps = _dockerfile()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert ("WORKDIR", APP) in steps
    runs = " ".join(args for op, args in steps if op == "RUN")
    assert "pip install -c constraints.txt ." in runs
    for op, args in steps:
        if op == "COPY":
            *sources, _dest = args.split()
            for source in sources:
                assert source == "." or (REPO / source).exists(), f"COPY {source}: not in the build context"
    cmd = json.loads(next(args for op, args in steps if op == "CMD"))
    assert cmd == yaml.safe_load(COMPOSE.read_text())["services"]["worker"]["command"]


def test_dockerignore_keeps_what_the_image_needs():
    ignore = INFRA / "Dockerfile.dockerignore"     # BuildKit reads <Dockerfile>.dockerignore beside it
    patterns = [l.strip() for l in ignore.read_text().splitlines() if l.strip() and not l.startswith("#")]
    for needed in ("pyproject.toml", "constraints.txt", "README.md", "mmd", "flows", "infra",
                   "infra/params.compose.yaml", "params.yaml", "inbox"):
        assert not any(fnmatch.fnmatch(needed, p) for p in patterns), f"{needed} is ignored"
    for unwanted in (".git", ".venv", "data", "reports"):
        assert any(fnmatch.fnmatch(unwanted, p) for p in patterns), f"{unwanted} is not ignored"


# --------------------------------------------------------------------------- params.compose.yaml
def test_the_workers_first_start_makes_the_project_its_cycles_run_in(tmp_path):
    """`serve --init-from infra/params.compose.yaml`: mmd init of the project volume, then its deployments."""
    from flows.deploy import build_deployments

    project = tmp_path / "project"
    from mmd.project import init_project

    init_project(project, PARAMS)
    settings = load_settings(project / "params.yaml")
    p = settings.params
    assert (p.index.backend, p.index.url, p.index.api_key_env) == ("server", "http://qdrant:6333", "QDRANT_API_KEY")
    assert p.notify.transport == "smtp" and p.cycle.commit
    assert settings.data_dir == project / "data" and settings.reports_dir == project / "reports"
    assert [s.path for s in p.ingest.sources] == [str(REPO / "inbox")]  # the repository's inbox, /app/inbox
    assert str(REPO / "inbox") in p.ingest.allowed_roots
    assert uses_dvc(settings)  # every stage through `dvc repro` in the project
    base = load_settings(REPO / "params.yaml").params
    deployments = build_deployments(settings)
    assert {d.name for d in deployments} == set(base.cycle.deployments)
    for d in deployments:  # the base's flows and schedules, reading the project's params file
        assert d.parameters["params"] == str(project / "params.yaml")
        assert [s.schedule.cron for s in d.schedules] == [base.cycle.deployments[d.name].cron]


def test_compose_params_change_only_what_they_say():
    """Everything else is the root params.yaml's, so the stack runs the same loop."""
    ours = load_settings(PARAMS).params.model_dump(by_alias=True)
    base = load_settings(REPO / "params.yaml").params.model_dump(by_alias=True)
    changed = {"paths", "index", "notify", "cycle", "ingest"}
    assert {k: v for k, v in ours.items() if k not in changed} == {k: v for k, v in base.items() if k not in changed}
    assert {k: v for k, v in ours["ingest"].items() if k not in ("sources", "allowed_roots")} == \
        {k: v for k, v in base["ingest"].items() if k not in ("sources", "allowed_roots")}
    assert {k: v for k, v in ours["index"].items() if k not in ("backend", "url")} == \
        {k: v for k, v in base["index"].items() if k not in ("backend", "url")}
    assert {k: v for k, v in ours["notify"].items() if k != "transport"} == \
        {k: v for k, v in base["notify"].items() if k != "transport"}


def test_compose_params_url_names_the_qdrant_service(compose):
    url = load_settings(PARAMS).params.index.url
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", url).groups()
    assert host in compose["services"] and int(port) in _container_ports(compose["services"][host])


# --------------------------------------------------------------------------- work pools
@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_work_pool_templates_are_valid(kind, compose):
    from prefect.server.schemas.actions import WorkPoolCreate
    from prefect.utilities.schema_tools import validate

    template = json.loads((POOLS / f"{kind}.json").read_text())
    assert set(template) == {"job_configuration", "variables"}
    # what the server checks on `prefect work-pool create`: every placeholder is a declared variable
    WorkPoolCreate(name=f"mmd-{kind}", type=kind, base_job_template=template)
    props = template["variables"]["properties"]
    defaults = {k: v["default"] for k, v in props.items() if v.get("default") is not None}
    validate(defaults, template["variables"], raise_on_error=True, preprocess=True, ignore_required=True)
    assert props["image"]["default"] == "mmd:latest"
    assert REF.fullmatch(compose["services"]["worker"]["image"])[2] == "mmd:latest"
    env = props["env"]["default"]
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["HF_HUB_OFFLINE"] == "1"
    assert not any(SECRET_KEY.search(k) for k in env), "secrets do not belong in a template"


def _render(template: dict, values: dict) -> dict:
    """The job configuration as a worker fills it in: defaults, then the given job variables."""
    from prefect.utilities.templating import apply_values

    props = template["variables"]["properties"]
    variables = {k: v["default"] for k, v in props.items() if v.get("default") is not None} | values
    return apply_values(template["job_configuration"], variables)


def test_docker_pool_joins_the_compose_stack(compose):
    template = json.loads((POOLS / "docker.json").read_text())
    job = _render(template, {})
    assert job["image"] == "mmd:latest"
    assert job["networks"] == [compose["networks"]["default"]["name"]]
    names = {v["name"] for v in compose["volumes"].values()}
    mounts = dict(v.split(":")[:2] for v in job["volumes"])
    assert set(mounts) <= names and "/project" in set(mounts.values())
    worker = _env(compose["services"]["worker"])
    for key in ("PREFECT_API_URL", "MMD_SMTP_HOST", "MMD_SMTP_PORT", "MMD_SMTP_TLS"):
        assert job["env"][key] == worker[key]


def test_kubernetes_pool_resources_gpu_and_data():
    template = json.loads((POOLS / "kubernetes.json").read_text())
    pod = _render(template, {})["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "mmd:latest"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    assert "nvidia.com/gpu" not in container["resources"]["limits"]     # no GPU unless asked for
    assert "nodeSelector" not in pod and "tolerations" not in pod
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert {m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims} == {"/project"}
    # secrets come from a Secret, by reference
    assert all("valueFrom" in e for e in container["env"])

    gpu = _render(template, {"gpu_limit": "1", "node_selector": {"nvidia.com/gpu.present": "true"}})
    gpu_pod = gpu["job_manifest"]["spec"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert gpu_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
