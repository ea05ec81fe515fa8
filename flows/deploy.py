"""The deployments: the flows on their schedules, declared once in `params.yaml` (`cycle.deployments`).

    python -m flows.deploy serve  [--params params.yaml] [--port 4200] [--app-port 8080 | --no-app]   # `make serve`
    python -m flows.deploy deploy --pool NAME [--image IMAGE]             # a work pool (process, Docker, Kubernetes)
    python -m flows.deploy show                                           # what would be registered

`serve` starts a local Prefect server (its UI at http://127.0.0.1:4200) unless PREFECT_API_URL
already names one, and the moderators' app beside it (`mmd app`, on `app.base_url`'s port), registers
every deployment and runs their flow runs in this process's children until Ctrl-C (or SIGTERM); then it
stops serving first, then the app, and the server last. `deploy`
registers the same deployments on a work pool, for workers on other machines (infra/README.md).

Each deployment allows one run at a time (further runs wait in line), and a retrain cycle takes
the cycle lock as well, so a run started by hand beside a scheduled one waits or is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron

from flows.ingest import ingest_flow
from flows.retrain import retrain_flow
from mmd.config import Settings, load_settings

FLOWS = {"ingest": ingest_flow, "retrain": retrain_flow}


def build_deployments(settings: Settings, entrypoint_type: EntrypointType = EntrypointType.FILE_PATH,
                      ) -> list[RunnerDeployment]:
    """One RunnerDeployment per `cycle.deployments` entry: its cron in `cycle.timezone`, its parameters
    (the params file this was read from, unless the entry names another), one run at a time."""
    cfg = settings.params.cycle
    out = []
    for name, d in cfg.deployments.items():
        parameters = {"params": str(settings.params_file or settings.root / "params.yaml"), **d.parameters}
        out.append(FLOWS[d.flow].to_deployment(
            name=name,
            schedules=[Cron(d.cron, timezone=cfg.timezone)] if d.cron else None,
            paused=d.paused,
            parameters=parameters,
            concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            description=d.description or (FLOWS[d.flow].description or "").split("\n")[0],
            tags=["mmd", d.flow],
            entrypoint_type=entrypoint_type,
        ))
    return out


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def local_server(host: str, port: int, home: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """A Prefect server in a child process (SQLite under `home`) for the block; its API URL.
    Stopped when the block ends, after whatever used it. Port 0: a free one."""
    if port == 0:
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    url = f"http://{host}:{port}/api"
    if _healthy(url):
        raise RuntimeError(f"something already answers on {url}: set PREFECT_API_URL={url} to use it, or pick --port")
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("ab")
    prefect = Path(sys.executable).with_name("prefect")
    proc = subprocess.Popen([str(prefect), "server", "start", "--host", host, "--port", str(port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(url):
            if proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited ({proc.returncode}); see {home / 'server.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer on {url} within {timeout_s:.0f}s; "
                                   f"see {home / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@contextlib.contextmanager
def app_server(settings: Settings, host: str, port: int, home: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """The moderators' app (`mmd app`) in a child process for the block; its URL. Stopped (SIGTERM to its
    process group) when the block ends."""
    url = f"http://{host}:{port}"
    if _healthy(f"{url}/api"):
        raise RuntimeError(f"something already answers on {url}: pick another --app-port, or --no-app")
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "app.log").open("ab")
    mmd = Path(sys.executable).with_name("mmd")
    params = str(settings.params_file or settings.root / "params.yaml")
    proc = subprocess.Popen([str(mmd), "app", "--params", params, "--host", host, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(f"{url}/api"):
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited ({proc.returncode}); see {home / 'app.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not answer on {url} within {timeout_s:.0f}s; see {home / 'app.log'}")
            time.sleep(0.5)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def serve_deployments(settings: Settings, host: str = "127.0.0.1", port: int = 4200,
                      app_port: int | None = None) -> None:
    """`make serve`: a local server (unless PREFECT_API_URL is set) and the moderators' app (on `app_port`,
    `app.base_url`'s port by default; 0: none), then serve every deployment."""
    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with contextlib.ExitStack() as stack:
        url = os.environ.get("PREFECT_API_URL")
        if not url:
            url = stack.enter_context(local_server(host, port, settings.root / ".prefect"))
            print(f"Prefect server and UI: {url.removesuffix('/api')}  (its database: {settings.root / '.prefect'})")
        app_port = settings.params.app.port if app_port is None else app_port
        if app_port:
            app = stack.enter_context(app_server(settings, host, app_port, settings.root / ".prefect"))
            print(f"moderators' app: {app}/  (accounts from ${settings.params.app.users_env}; log: "
                  f"{settings.root / '.prefect' / 'app.log'})")
        stack.enter_context(temporary_settings(updates={PREFECT_API_URL: url}))
        deployments = build_deployments(settings)
        print("trigger a run: PREFECT_API_URL=" + url + " .venv/bin/prefect deployment run 'mmd-retrain/"
              + next((d.name for d in deployments if d.flow_name == "mmd-retrain"), "retrain-nightly") + "'")
        try:
            serve(*deployments)
        except (KeyboardInterrupt, SystemExit):  # Ctrl-C; SIGTERM (Prefect's runner exits on it): serving stops first
            pass
    print("stopped serving, then the app and the server")


def deploy_to_pool(settings: Settings, pool: str, image: str | None = None) -> list:
    """Register the deployments on a work pool; a worker that has this repository (installed) runs them."""
    from prefect import deploy

    return deploy(*build_deployments(settings, EntrypointType.MODULE_PATH), work_pool_name=pool, image=image,
                  build=False, push=False, print_next_steps_message=False, ignore_warnings=True)


def main(argv: list[str] | None = None) -> None:
    cli = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = cli.add_subparsers(dest="command", required=True)
    for name in ("serve", "deploy", "show"):
        p = sub.add_parser(name)
        p.add_argument("--params", default="params.yaml")
        if name == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=4200)
            p.add_argument("--app-port", type=int, default=None, help="the moderators' app's port (default: "
                                                                      "app.base_url's)")
            p.add_argument("--no-app", dest="app_port", action="store_const", const=0, help="no moderators' app")
            p.add_argument("--init-from", help="when --params does not exist yet: make its project first "
                                               "(mmd init FOLDER --from INIT_FROM)")
        if name == "deploy":
            p.add_argument("--pool", required=True, help="the work pool (prefect work-pool create … first)")
            p.add_argument("--image", help="the image a Docker or Kubernetes pool runs (infra/Dockerfile)")
    args = cli.parse_args(argv)
    if getattr(args, "init_from", None) and not Path(args.params).exists():
        from mmd.project import init_project

        init_project(Path(args.params).parent, Path(args.init_from))
    settings = load_settings(args.params)
    if args.command == "serve":
        serve_deployments(settings, args.host, args.port, args.app_port)
    elif args.command == "deploy":
        ids = deploy_to_pool(settings, args.pool, args.image)
        print(f"{len(ids)} deployments on work pool {args.pool!r}")
    else:
        for d in build_deployments(settings):
            crons = ", ".join(f"{s.schedule.cron} ({s.schedule.timezone})" for s in d.schedules or []) or "by hand"
            print(f"{d.flow_name}/{d.name}: {crons}; parameters {d.parameters}")


if __name__ == "__main__":
    main()
