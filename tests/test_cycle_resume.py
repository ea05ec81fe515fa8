"""A cycle in a DVC project, for real: killed mid-way (SIGKILL to the flow, DVC and the stage) and
started again, it resumes (DVC skips what was done), ends with no duplicate points in Qdrant, a
consistent registry and one e-mail; a second cycle at the same time is refused; a clean clone
with `dvc pull` reproduces the promoted models' metrics; `dvc exp run --set-param` gives a
what-if run that leaves the champion alone."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from mmd.cycle import StageRun
import pytest

from .conftest import REPO, small_cycle_params
from .test_dvc import BIN, _run, dvc_project

pytestmark = pytest.mark.slow
FAMILIES = ("cmc", "rgcl")


def _git(root: Path, *args: str) -> str:
    return _run(["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args], root).stdout


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A deployment repository: code, params and dvc.yaml committed, a DVC remote, the demo inbox as its source."""
    root = dvc_project(tmp_path / "project", small_cycle_params(cycle={"commit": True}), tmp_path / "remote")
    (root / ".gitignore").write_text("/inbox/\n.prefect/\n__pycache__/\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "the deployment")
    return root


def _gone(group: int, timeout: float = 30) -> None:
    """Wait until no process of the process group is left (the kernel tears SIGKILLed ones down in its time)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        assert time.monotonic() < deadline, f"process group {group} still alive after SIGKILL"
        time.sleep(0.1)


def kill_a_cycle(params: Path, marker: Path, cwd: Path, log: Path, while_running=None, timeout: float = 900) -> None:
    """Start a cycle in its own process group (against the harness's Prefect server), SIGKILL it with its DVC
    and stage processes once `marker` exists (after `while_running()`, if given), and wait until all are gone."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), PYTHONUNBUFFERED="1")
    killed = subprocess.Popen([sys.executable, "-m", "flows.retrain", "--params", str(params)], cwd=cwd, env=env,
                              stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            assert killed.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(0.2)
        if while_running is not None:
            while_running()
        time.sleep(1.0)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
        _gone(killed.pid)  # DVC and the stage too: a restart is not racing their last moments
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)


def _points(settings) -> dict[str, list[str]]:
    """The item ids in every collection the cycle writes that exists now."""
    from mmd.models.rgcl.predictor import candidate_collection
    from mmd.store import open_store

    index, rgcl = settings.params.index, settings.params.rgcl
    names = (index.items_collection, index.synthetic_collection, rgcl.collection, candidate_collection(rgcl))
    with open_store(index, settings.data_dir) as store:
        return {name: store.ordered_ids(name) for name in names if store.info(name) is not None}


def test_a_killed_cycle_resumes_and_a_clean_clone_reproduces_the_promoted_models(project: Path, tmp_path: Path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow
    from mmd.config import load_settings
    from mmd.cycle import CycleRunning, cycle_lock
    from mmd.registry import Registry

    settings = load_settings(project / "params.yaml")
    reports = project / "reports"
    # a real local Prefect server for both cycles (the harness drains this process's log and event
    # workers before it stops the server; the killed cycle is another process, pointed at it)
    with prefect_test_harness(server_startup_timeout=120):
        def refused() -> None:  # meanwhile a second cycle is refused, naming the running one
            with pytest.raises(CycleRunning, match=r"a cycle is already running \(pid \d+ since"):
                with cycle_lock(settings):
                    pass

        # killed while the second detector trains: after train_cmc left its report
        kill_a_cycle(project / "params.yaml", reports / "train_cmc.json", REPO, tmp_path / "killed.log", refused)
        assert not (reports / "gate.json").exists()  # it never got that far

        ran = retrain_flow(str(project / "params.yaml"))  # started again
    status = {name: run.status for name, run in ran.items() if isinstance(run, StageRun)}
    assert {ran[s].how for s in status} == {"dvc"}
    # what was done before the kill is not redone (the inbox did not change: DVC knows)
    for name in ("ingest", "validate", "embed", "index", "synthesize", "select"):
        assert status[name] == "skipped", (name, status)
    assert status["train_rgcl"] == status["evaluate"] == status["gate"] == "ran"
    gate = ran["gate"].result
    assert {(f, d.action, d.champion_after) for f, d in gate.families.items()} == {("cmc", "promote", 1),
                                                                                           ("rgcl", "promote", 1)}

    # no duplicate points: one per embedded item, per synthetic item, per RKC database row
    points = _points(settings)
    assert all(len(ids) == len(set(ids)) for ids in points.values()), {n: len(ids) for n, ids in points.items()}
    items = pq.read_table(project / "data" / "embeddings" / "items.parquet").column("id").to_pylist()
    assert sorted(points["items"]) == sorted(items)
    assert len(points["synthetic"]) == pq.read_table(project / "data" / "synthetic" / "pool.parquet").num_rows
    database = pq.read_table(project / "data" / "models" / "rgcl" / "database.parquet").num_rows
    assert len(points["rgcl_candidate"]) == database
    # a consistent registry: one version per family, the champion, its files intact, one event of each kind
    registry = Registry(project / "data" / "registry")
    champions = {}
    for family in FAMILIES:
        (version,) = registry.versions(family)
        champion = registry.champion(family)
        assert champion.number == version.number == 1 and champion.verify()
        assert [e["event"] for e in registry.history(family)] == ["registered", "promoted"]
        champions[family] = champion
    # one e-mail for the one decision
    assert len(list((project / "data" / "outbox").glob("*.eml"))) == 1
    # versioned: dvc.lock committed by the cycle, data and models in the remote
    assert ran["version"]["pushed"] and ran["version"]["commit"]
    assert _git(project, "log", "-1", "--format=%s").startswith("mmd cycle ")
    assert "dvc.lock" not in _git(project, "status", "--porcelain")
    committed = _git(project, "show", "--name-only", "--format=", "HEAD").split()
    assert {"dvc.lock", "reports/evaluate.json", "reports/gate.json", "reports/cycle.html"} <= set(committed)

    # a clean clone: dvc pull, the models and their evaluation removed, dvc repro rebuilds them
    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(project), str(clone)], tmp_path)
    shutil.copytree(project / "inbox", clone / "inbox")  # the same sources are reachable there
    _run([str(BIN / "dvc"), "pull", "-q"], clone)
    for out in ("data/models", "data/evaluation"):
        shutil.rmtree(clone / out)
    out = _run([str(BIN / "dvc"), "repro"], clone, timeout=600).stdout
    for stage in ("train_cmc", "train_rgcl", "evaluate"):
        assert f"Running stage '{stage}'" in out, out
    for stage in ("validate", "embed", "synthesize", "select"):
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    original = json.loads((reports / "evaluate.json").read_text())
    reproduced = json.loads((clone / "reports" / "evaluate.json").read_text())
    for family in FAMILIES:
        a, b = original["families"][family]["holdout"], reproduced["families"][family]["holdout"]
        for metric in ("accuracy", "macro_f1", "auroc", "n"):
            assert a[metric] == b[metric], (family, metric, a[metric], b[metric])
        assert champions[family].metrics["holdout"]["macro_f1"] == b["macro_f1"]
    # against the committed cycle: every family's holdout macro-F1 is there on both sides, and unchanged
    diff = json.loads(_run([str(BIN / "dvc"), "metrics", "diff", "--all", "--json"], clone).stdout)
    diff = diff["reports/metrics/evaluate.json"]
    for family in FAMILIES:
        assert diff[f"{family}.macro_f1"]["diff"] == 0, diff[f"{family}.macro_f1"]

    # a what-if run: another setting for one detector, decided and reported, the champion left in place
    _run([str(BIN / "dvc"), "exp", "run", "-S", "cmc.hidden=16", "-S", "gate.promote=false", "--name", "smaller-cmc"],
         clone, timeout=600)
    shown = json.loads(_run([str(BIN / "dvc"), "exp", "show", "--json"], clone).stdout)
    names = [e.get("name") for row in shown for e in (row.get("experiments") or []) for e in (e.get("revs") or [e])]
    assert "smaller-cmc" in names, shown
    assert Registry(clone / "data" / "registry").champion("cmc").number == 1
