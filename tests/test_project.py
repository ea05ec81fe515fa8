"""`mmd init`: a deployment's own git + DVC project, whose every stage runs through `dvc repro`."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from mmd.cli import app
from mmd.config import load_settings

from .conftest import small_cycle_params
from .test_cycle_resume import kill_a_cycle
from .test_dvc import BIN, _run


def test_init_writes_a_complete_project_with_its_pipeline_remote_and_first_commit(tmp_path):
    root = tmp_path / "team"
    result = CliRunner().invoke(app, ["init", str(root)])
    assert result.exit_code == 0, result.output
    settings = load_settings(root / "params.yaml")  # complete, loads on its own (no extends)
    assert "extends" not in yaml.safe_load((root / "params.yaml").read_text())
    assert settings.params.cycle.commit and settings.layout.data == root / "data"
    assert settings.params.ingest.ratings["pants on fire"] == 1  # the built-in verdict table
    assert "# Sources: fill in yours" in (root / "params.yaml").read_text()
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert dvc_yaml["ingest"]["cmd"] == "mmd stage ingest" and "train_cmc" in dvc_yaml
    assert not any(str(d).startswith("mmd/") for s in dvc_yaml.values() for d in s.get("deps", []))  # the installed mmd
    assert not (root / "gpu").exists()  # no family of the cycle needs a GPU: no stage that never runs here
    assert (root / ".dvc").is_dir() and (root / "inbox").is_dir()
    assert _run([str(BIN / "dvc"), "remote", "default"], root).stdout.strip() == "storage"
    assert _run(["git", "log", "--format=%s"], root).stdout.strip() == "mmd init"
    assert not _run(["git", "status", "--porcelain"], root).stdout.strip()
    again = CliRunner().invoke(app, ["init", str(root)])
    assert again.exit_code == 2 and "already holds" in again.output


def test_init_from_a_params_file_follows_extends_and_moves_its_paths(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "base.yaml").write_text(yaml.safe_dump({"select": {"k": 7}}))
    (conf / "mine.yaml").write_text(yaml.safe_dump({
        "extends": "base.yaml",
        "ingest": {"sources": [
            {"name": "memes", "type": "memes", "files": ["../sets/train.jsonl"], "images_dir": "../sets/images"},
            {"name": "feed", "type": "claimreview", "location": "https://example.org/feed.json"},
            {"name": "drop", "type": "inbox", "path": "../team/inbox"}]}}))
    root = tmp_path / "team"
    assert CliRunner().invoke(app, ["init", str(root), "--from", str(conf / "mine.yaml")]).exit_code == 0
    params = load_settings(root / "params.yaml").params
    memes, feed, drop = params.ingest.sources
    assert params.select.k == 7  # from the file it extends
    assert memes.files == (str(tmp_path / "sets" / "train.jsonl"),) and memes.images_dir == str(tmp_path / "sets" / "images")
    assert feed.location == "https://example.org/feed.json" and drop.path == "inbox"  # inside the project: relative
    # a URL source: DVC cannot see what is new there, so ingest always runs
    assert yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["ingest"]["always_changed"] is True


def test_a_bad_params_file_makes_no_project(tmp_path):
    (tmp_path / "bad.yaml").write_text("select: {kay: 3}\n")
    result = CliRunner().invoke(app, ["init", str(tmp_path / "team"), "--from", str(tmp_path / "bad.yaml")])
    assert result.exit_code == 2 and "select.kay: unknown key" in result.output
    assert not (tmp_path / "team").exists()


@pytest.mark.slow
@pytest.mark.realdata
def test_a_project_on_real_data_runs_its_cycle_through_dvc_and_resumes_after_a_kill(shared, tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow

    params = small_cycle_params()
    params["ingest"]["sources"] = [
        {"name": "harmeme", "type": "memes", "preset": "harmeme", "files": [str(shared / "harmeme" / "val.jsonl")],
         "images_dir": str(shared / "harmeme" / "images")},
        {"name": "datacommons", "type": "claimreview", "location": str(shared / "claimreview")}]
    params["ingest"]["allowed_roots"] = [str(shared)]  # sources outside the project are refused unless allowed
    params["train"] = {**params["train"], "holdout_fraction": 0.3}
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    root = tmp_path / "real"
    assert CliRunner().invoke(app, ["init", str(root), "--from", str(tmp_path / "real.yaml")]).exit_code == 0
    ingest = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["ingest"]
    assert str(shared / "harmeme" / "val.jsonl") in ingest["deps"] and "always_changed" not in ingest

    with prefect_test_harness(server_startup_timeout=120):
        kill_a_cycle(root / "params.yaml", root / "reports" / "train_cmc.json", tmp_path, tmp_path / "killed.log")
        ran = retrain_flow(str(root / "params.yaml"))
    status = {name: run.status for name, run in ran.items() if hasattr(run, "status")}
    assert {s: status[s] for s in ("ingest", "validate", "embed", "synthesize", "select")} == dict.fromkeys(
        ("ingest", "validate", "embed", "synthesize", "select"), "skipped")
    assert status["gate"] == "ran" and ran["version"]["pushed"] and ran["version"]["commit"]
    ingested = json.loads((root / "reports" / "ingest.json").read_text())
    assert ingested["reconciled"] and {s["name"] for s in ingested["sources"]} == {"harmeme", "datacommons"}
    assert (root / "dvc.lock").is_file() and "dvc.lock" not in _run(["git", "status", "--porcelain"], root).stdout
    assert "Data and pipelines are up to date" in _run([str(BIN / "dvc"), "status"], root).stdout
    assert list((root / ".dvc-storage").rglob("*"))  # pushed
