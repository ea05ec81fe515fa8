"""The real DVC pipeline: `dvc repro` runs ingest, validate, embed, index, synthesize,
select, train_cmc and train_rgcl, reruns only what changed, rebuilds a lost vector store, and `dvc push` stores the
data in the remote."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mmd.config import load_settings
from mmd.demo import generate

from .conftest import REPO

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


def dvc_project(root: Path, params: dict, remote: Path) -> Path:
    """A deployment's project made by `mmd init` in `root` from `params` (its inbox `root/inbox`, holding the
    demo corpus), with a local DVC remote; returns `root`."""
    from mmd.project import init_project

    if shutil.which("mmd", path=str(BIN)) is None:
        pytest.skip("the mmd console script is not installed beside this Python")
    params = dict(params)
    params["ingest"] = {**params["ingest"], "sources": [{"name": "inbox", "type": "inbox", "path": str(root / "inbox")}]}
    base = root.parent / f"{root.name}-from.yaml"
    base.write_text(yaml.safe_dump(params, sort_keys=False))
    init_project(root, base, str(remote))
    settings = load_settings(root / "params.yaml")
    generate(settings.path("inbox"), settings.params.demo)
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["demo"].update(memes=12, claims=8, posts=8)
    return dvc_project(tmp_path / "project", params, tmp_path / "remote")


STAGES = ("ingest", "validate", "embed", "index", "synthesize", "select", "train_cmc", "train_rgcl", "evaluate", "gate",
          "report", "review")


def test_repro_runs_every_stage_then_only_what_changed(project: Path, tmp_path: Path):
    dvc = str(BIN / "dvc")
    out = _run([dvc, "repro"], project).stdout
    assert all(f"Running stage '{s}'" in out for s in STAGES), out
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    report = json.loads((project / "reports" / "validation.json").read_text())
    first_total = report["in"]
    assert report["reconciled"] and report["passed"] and first_total > 0

    embedded = json.loads((project / "reports" / "embed.json").read_text())
    assert embedded["embedded"] == report["accepted"] and embedded["reconciled"]
    assert json.loads((project / "reports" / "index.json").read_text())["total"] == report["accepted"]

    pool = json.loads((project / "reports" / "synthesize.json").read_text())
    assert pool["new"] > 0 and pool["reconciled"]
    selected = json.loads((project / "reports" / "select.json").read_text())
    assert selected["selected"] == min(selected["k"], pool["pool_after"])
    assert (project / "data" / "selected" / "selected.parquet").exists()
    assert "data/selected" in (project / "dvc.lock").read_text()  # a versioned output
    trained = json.loads((project / "reports" / "train_cmc.json").read_text())
    assert trained["variant"] == "text_distill" and trained["data"]["train"]["synthetic"] > 0
    assert {"model.safetensors", "config.json", "metrics.json"} <= {p.name for p in (project / "data" / "models" / "cmc").iterdir()}
    assert "data/models/cmc" in (project / "dvc.lock").read_text()
    rgcl = json.loads((project / "reports" / "train_rgcl.json").read_text())
    assert rgcl["database_points"] == rgcl["data"]["train"]["items"] and set(rgcl["val"]) == {"head", "rkc"}
    assert (project / "data" / "models" / "rgcl" / "database.parquet").exists()
    evaluated = json.loads((project / "reports" / "evaluate.json").read_text())
    assert set(evaluated["families"]) == {"cmc", "rgcl"} and evaluated["holdout"]["items"] > 0
    gated = json.loads((project / "reports" / "gate.json").read_text())
    assert {d["action"] for d in gated["families"].values()} <= {"promote", "hold"}
    assert (project / "reports" / "cycle.html").exists() and "data/registry" in (project / "dvc.lock").read_text()
    shown = _run([str(BIN / "dvc"), "metrics", "show"], project).stdout
    assert "metrics/evaluate.json" in shown and "cmc.macro_f1" in shown and "pass_rate" in shown
    assert max(len(line) for line in shown.splitlines()) < 400  # the figures a person compares, not every leaf
    assert "failed to load" not in shown

    # nothing new: every stage is skipped, and DVC says nothing is out of date
    assert "Data and pipelines are up to date" in _run([dvc, "status"], project).stdout
    out = _run([dvc, "repro"], project).stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in out

    # a new file in the inbox: exactly its records come in, validate reruns
    claim = {"@type": "ClaimReview", "claimReviewed": "[TEST] a brand new claim about a bridge",
             "url": "https://example.org/fc/1", "reviewRating": {"alternateName": "False"}}
    (project / "inbox" / "new.json").write_text(json.dumps(claim))
    out = _run([dvc, "repro"], project).stdout
    assert all(f"Running stage '{s}'" in out for s in STAGES)
    assert json.loads((project / "reports" / "ingest.json").read_text())["totals"]["accepted"] == 1
    validated = json.loads((project / "reports" / "validation.json").read_text())
    assert (validated["in"], validated["incremental"]) == (1, True)  # only the new record is validated
    assert validated["total_items"] == report["accepted"] + 1
    embedded = json.loads((project / "reports" / "embed.json").read_text())
    assert (embedded["encoded_texts"], embedded["encoded_images"]) == (1, 0)  # only the new claim
    assert json.loads((project / "reports" / "index.json").read_text())["upserted"] == 1
    assert json.loads((project / "reports" / "synthesize.json").read_text())["pool_after"] >= pool["pool_after"]

    # the vector store is only an index: lost, it is rebuilt from the versioned embeddings by whatever reads it
    shutil.rmtree(project / "data" / "qdrant")
    assert "up to date" in _run([dvc, "status"], project).stdout  # DVC does not watch the store
    found = _run([str(BIN / "mmd"), "search", "a brand new claim about a bridge", "-k", "1"], project).stdout
    assert "[TEST] a brand new claim" in found
    from mmd.store import open_store

    settings = load_settings(project / "params.yaml")
    with open_store(settings.params.index, settings.data_dir) as store:  # the pool came back with the items
        pool_now = json.loads((project / "reports" / "synthesize.json").read_text())["pool_after"]
        assert store.count(settings.params.index.synthetic_collection) == pool_now
        assert store.count(settings.params.index.items_collection) == report["accepted"] + 1

    # a params change to one section reruns the stage that reads it
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["validate"]["min_pass_rate"] = 0.4
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run([dvc, "status"], project).stdout
    assert "validate" in status and "params.yaml" in status

    _run([dvc, "push"], project)
    pushed = [p for p in (tmp_path / "remote").rglob("*") if p.is_file()]
    assert len(pushed) > 10  # items, quarantine, images, state all in the remote
