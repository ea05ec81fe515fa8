"""The deployments for real: `python -m flows.deploy serve` (what `make serve` runs) starts a local
Prefect server and registers the deployments with their cron schedules; a run triggered through
the API completes; stopping serve stops the server after it. The same deployments sent to a work
pool run on a process worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, small_cycle_params
from .test_notify import free_port

pytestmark = pytest.mark.slow


def _project(root: Path, deployments: dict | None = None) -> Path:
    from mmd.config import load_settings
    from mmd.demo import generate

    # a small cycle on the real offline encoder (the served runs are other processes: no tiny test models there)
    params = small_cycle_params()
    if deployments is not None:
        params["cycle"]["deployments"] = deployments
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(root / "params.yaml")
    if not (settings.path("inbox") / "demo").exists():
        generate(settings.path("inbox"), settings.params.demo)
    return root / "params.yaml"


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    env.pop("PREFECT_API_URL", None)
    return env


def _wait(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited ({proc.returncode}):\n{log.read_text()[-4000:] if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-4000:] if log else ''}")
        time.sleep(1)


def test_serve_registers_the_scheduled_deployments_and_a_triggered_run_completes(tmp_path):
    from prefect import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import _healthy

    params = _project(tmp_path / "project")
    port, app_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/api"
    app_url = f"http://127.0.0.1:{app_port}/api"
    log = tmp_path / "serve.log"
    serve = subprocess.Popen([sys.executable, "-m", "flows.deploy", "serve", "--params", str(params), "--port", str(port),
                              "--app-port", str(app_port)],
                             cwd=REPO, env=_env(tmp_path / "prefect-home"), stdout=log.open("wb"),
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            def served():
                if not _healthy(url):
                    return None
                with get_client(sync_client=True) as client:
                    found = client.read_deployments()
                return found if len(found) == 2 else None

            deployments = {d.name: d for d in _wait(served, 180, "the server and the two deployments", serve, log)}
            assert set(deployments) == {"ingest-hourly", "retrain-nightly"}
            assert _healthy(app_url)  # the moderators' app beside the Prefect UI
            crons = {n: [(s.schedule.cron, s.schedule.timezone, s.active) for s in d.schedules] for n, d in deployments.items()}
            assert crons == {"ingest-hourly": [("0 * * * *", "UTC", True)], "retrain-nightly": [("30 2 * * *", "UTC", True)]}
            assert all(d.parameters == {"params": str(params)} for d in deployments.values())
            # one run at a time per deployment; a second waits in line
            assert all(d.global_concurrency_limit.limit == 1 for d in deployments.values())
            assert all(d.concurrency_options.collision_strategy == "ENQUEUE" for d in deployments.values())

            ingested = run_deployment("mmd-ingest/ingest-hourly", timeout=300, poll_interval=1, as_subflow=False)
            assert ingested.state.type == StateType.COMPLETED, ingested.state
            cycle = run_deployment("mmd-retrain/retrain-nightly", timeout=600, poll_interval=2, as_subflow=False)
            assert cycle.state.type == StateType.COMPLETED, (cycle.state, log.read_text()[-4000:])
            assert cycle.name.startswith("retrain project/params.yaml ")
            with get_client(sync_client=True) as client:
                artifacts = {a.key for a in client.read_artifacts() if a.flow_run_id == cycle.id}
            assert {"mmd-gate", "mmd-cycle"} <= artifacts
        gate = json.loads((params.parent / "reports" / "gate.json").read_text())
        assert {d["action"] for d in gate["families"].values()} == {"promote"}
        assert len(list((params.parent / "data" / "outbox").glob("*.eml"))) == 1

        # the app serves the cycle's champions
        import requests

        assert requests.get(f"{app_url}/health", timeout=10).json()["champions"] == {"cmc": 1, "rgcl": 1}
        # stopping serve stops the app and the server after it
        os.kill(serve.pid, signal.SIGTERM)
        serve.wait(timeout=60)
        assert not _healthy(url) and not _healthy(app_url)
        assert "stopped serving, then the app and the server" in log.read_text()
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-f", "--", f"--port {port}"], check=False)
        subprocess.run(["pkill", "-f", "--", f"--port {app_port}"], check=False)


def test_the_deployments_run_on_a_work_pool_worker(tmp_path):
    """`python -m flows.deploy deploy --pool P` registers the same deployments on a pool; a process worker runs them."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import local_server

    params = _project(tmp_path / "project", deployments={"ingest-on-a-pool": {"flow": "ingest", "cron": "15 * * * *"}})
    env = _env(tmp_path / "prefect-home")
    with local_server("127.0.0.1", 0, tmp_path / "prefect-home") as url, \
            temporary_settings(updates={PREFECT_API_URL: url}):
        env["PREFECT_API_URL"] = url
        with get_client(sync_client=True) as client:
            client.create_work_pool(WorkPoolCreate(name="mmd-local", type="process"))
        deployed = subprocess.run([sys.executable, "-m", "flows.deploy", "deploy", "--pool", "mmd-local", "--params",
                                   str(params)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        assert "1 deployments on work pool 'mmd-local'" in deployed.stdout
        with get_client(sync_client=True) as client:
            (d,) = client.read_deployments()
            assert (d.name, d.work_pool_name, d.entrypoint) == ("ingest-on-a-pool", "mmd-local", "flows.ingest.ingest_flow")
            run = client.create_flow_run_from_deployment(d.id)
        worker = subprocess.run([str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", "mmd-local",
                                 "--type", "process", "--run-once"], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=300)
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run.id).state
        assert state.type == StateType.COMPLETED, (state, worker.stdout[-6000:] + worker.stderr[-6000:])
    assert json.loads((params.parent / "reports" / "ingest.json").read_text())["totals"]["accepted"] > 0
