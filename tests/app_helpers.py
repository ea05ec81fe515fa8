"""Running the app for real in a test: uvicorn in a thread of the test process (which has the tiny test
encoder registered), on a free port, over a copy of a project."""

from __future__ import annotations

import contextlib
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import yaml

from mmd.app.auth import hash_password
from mmd.config import Settings, load_settings

TOKEN = "test-token-0123456789abcdef"
USERS = {"alice": "alice-password", "bob": "bob-password"}


def env() -> dict[str, str]:
    return {"MMD_APP_USERS": ",".join(f"{u}:{hash_password(p, iterations=1000)}" for u, p in USERS.items()),
            "MMD_APP_TOKENS": f"ci:{TOKEN}", "MMD_APP_SECRET": "the test's signing key"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_project(src: Path, dst: Path, port: int, **app: object) -> Settings:
    shutil.copytree(src, dst)
    params = yaml.safe_load((dst / "params.yaml").read_text())
    params["app"] = {**params.get("app", {}), "base_url": f"http://127.0.0.1:{port}", **app}
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return load_settings(dst / "params.yaml")


@contextlib.contextmanager
def running_app(settings: Settings, port: int) -> Iterator[str]:
    """The app served on `port` for the block; its base URL."""
    import uvicorn

    from mmd.app.server import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings, env()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def new_champion(settings: Settings, family: str = "cmc", temperature_factor: float = 3.0):
    """A second version of the champion, re-calibrated (its temperature scaled), registered and promoted:
    a different model whose scores differ, made in a second."""
    import json

    from mmd.registry import Registry

    reg = Registry(settings.layout.registry)
    champion = reg.champion(family)
    folder = settings.root / f"recalibrated-{family}"
    shutil.copytree(champion.path, folder, ignore=shutil.ignore_patterns("version.json", "card.*", "*.parquet",
                                                                         "evaluation.json"))
    config = json.loads((folder / "config.json").read_text())
    config["temperature"] = float(config.get("temperature") or 1.0) * temperature_factor
    (folder / "config.json").write_text(json.dumps(config))
    version, created = reg.register(family, folder, champion.lineage, champion.metrics, reason="recalibrated")
    assert created
    reg.promote(family, version.number, "a recalibrated champion", by="test")
    return version
