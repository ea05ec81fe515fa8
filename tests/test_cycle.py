"""The cycle's own pieces, fast: the lock between processes, the stage list, the DVC switch, the
summary, and versioning outside and inside a DVC project."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mmd.results import GateReport

from mmd.cycle import (CycleRunning, cycle_lock, cycle_stages, run_stage, summary_rows, uses_dvc, version_cycle)


def _hold_lock_in_another_process(settings, seconds: float) -> subprocess.Popen:
    code = (f"import time; from mmd.config import load_settings; from mmd.cycle import cycle_lock\n"
            f"with cycle_lock(load_settings({str(settings.params_file)!r})):\n"
            f"    print('held', flush=True); time.sleep({seconds})\n"
            f"print('released', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_cycle_is_refused_naming_the_first_or_waits_for_it(make_settings):
    settings = make_settings()
    holder = _hold_lock_in_another_process(settings, 2.0)
    try:
        with pytest.raises(CycleRunning, match=rf"a cycle is already running \(pid {holder.pid} since .*refused"):
            with cycle_lock(settings):
                pass
        start = time.monotonic()
        with cycle_lock(settings, wait=True, poll_s=0.1):
            waited = time.monotonic() - start
            assert holder.stdout.readline().strip() == "released"  # only once the first cycle had ended
    finally:
        holder.kill()
    assert waited > 1.0


def test_a_killed_holder_frees_the_lock(make_settings):
    settings = make_settings()
    holder = _hold_lock_in_another_process(settings, 60.0)
    holder.kill()
    holder.wait()
    with cycle_lock(settings):  # the kernel released it with the process
        pass


def test_the_stages_of_a_cycle_follow_the_families(make_settings):
    names = [s.name for s in cycle_stages(make_settings())]
    assert names == ["ingest", "validate", "embed", "index", "synthesize", "select", "train_cmc", "train_rgcl",
                     "evaluate", "gate", "report", "review"]
    lmm = cycle_stages(make_settings(evaluate={"families": ["rgcl", "lmm"]}))
    assert [s.name for s in lmm[6:8]] == ["train_rgcl", "train_lmm"] and lmm[7].gpu and "rgcl" in lmm[7].params
    with pytest.raises(ValueError, match="unknown stage 'train_bert'"):
        run_stage(make_settings(), "train_bert")


def test_dvc_auto_means_a_dvc_project_and_on_off_override_it(make_settings, tmp_path):
    assert not uses_dvc(make_settings())  # tmp_path holds no dvc.yaml
    assert uses_dvc(make_settings(cycle={"dvc": "on"}))
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / ".dvc").mkdir()
    assert uses_dvc(make_settings()) and not uses_dvc(make_settings(cycle={"dvc": "off"}))
    assert not uses_dvc(make_settings(), override=False)


def test_bad_schedules_are_config_errors(make_settings):
    from mmd.config import ConfigError

    with pytest.raises(ConfigError, match="cycle.deployments.nightly"):
        make_settings(cycle={"deployments": {"nightly": {"flow": "retrain", "cron": "every night"}}})
    with pytest.raises(ConfigError, match="cycle.deployments.x.flow"):
        make_settings(cycle={"deployments": {"x": {"flow": "train"}}})
    with pytest.raises(ConfigError, match="unknown timezone 'Mars/Olympus'"):
        make_settings(cycle={"timezone": "Mars/Olympus"})
    ok = make_settings(cycle={"timezone": "Europe/Berlin", "deployments": {"weekly": {"flow": "retrain", "cron": "@weekly"}}})
    assert ok.params.cycle.deployments["weekly"].cron == "@weekly" and ok.params.cycle.timezone == "Europe/Berlin"


def test_summary_rows_give_each_stage_its_figures():
    from mmd.cycle import StageRun
    from mmd.results import GateReport, IngestReport, ValidateReport

    ran = {
        "ingest": StageRun("ingest", "dvc", "ran", 1.5, IngestReport.model_validate(
            {"totals": {"in": 10, "accepted": 7, "quarantined": 2, "duplicates": 1, "skipped": 0}})),
        "validate": StageRun("validate", "dvc", "skipped", 0.4, ValidateReport.model_validate(
            {"in": 7, "accepted": 6, "quarantined": 1, "pass_rate": 6 / 7, "total_items": 6})),
        "gate": StageRun("gate", "dvc", "ran", 3.0, GateReport.model_validate(
            {"families": {"cmc": {"status": "failed", "action": "hold", "champion_after": 2}}})),
        "email": {"queued": ["<x>"]},
    }
    rows = summary_rows(ran)
    assert [r["stage"] for r in rows] == ["ingest", "validate", "gate"]
    assert rows[0]["figures"] == "10 in: 7 accepted, 2 quarantined, 1 duplicates, 0 skipped"
    assert rows[1] == {"stage": "validate", "how": "dvc", "status": "skipped", "seconds": 0.4,
                       "figures": "7 in: 6 pass (85.7%), 1 quarantined; 6 validated in all"}
    assert rows[2]["figures"] == "cmc failed -> hold (champion v2)"


def test_versioning_outside_a_dvc_project_does_nothing(make_settings):
    out = version_cycle(make_settings(cycle={"commit": True, "push": "on"}), GateReport())
    assert out == {"pushed": False, "remote": None, "commit": None, "skipped": "not a DVC project"}


def test_push_on_without_a_remote_is_a_clear_error(make_settings, tmp_path):
    from .test_dvc import BIN, _run

    _run(["git", "init", "-q"], tmp_path)
    _run([str(BIN / "dvc"), "init", "-q"], tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(RuntimeError, match="cycle.push is on but DVC has no default remote"):
        version_cycle(make_settings(cycle={"push": "on"}), GateReport())
    assert version_cycle(make_settings(), {"families": {}}) == {"pushed": False, "remote": None, "commit": None}


def test_progress_off_a_terminal_prints_lines_while_it_runs(capsys):
    from mmd.util import progress

    seen = list(progress(range(5), "encoding texts", total=5, every_s=0.0))
    assert seen == list(range(5))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("encoding texts: 1/5 in") and lines[-1].startswith("encoding texts: 5/5 done in")


def test_a_dvc_stage_streams_its_output_to_the_log(tmp_path):
    from mmd.cycle import _run_streaming

    got = []
    out = _run_streaming([sys.executable, "-c", "import sys; print('one'); print('two', file=sys.stderr)"],
                         tmp_path, "a stage", got.append)
    assert got == ["one", "two"] and "one" in out
    with pytest.raises(RuntimeError, match="a stage failed \\(exit 3\\)"):
        _run_streaming([sys.executable, "-c", "raise SystemExit(3)"], tmp_path, "a stage", None)


def test_threads_default_to_the_cores_given_to_the_process(monkeypatch):
    import torch

    from mmd.encoders import base

    monkeypatch.setattr(base, "available_cores", lambda: 1)
    before = torch.get_num_threads()
    try:
        assert base.set_threads(None) == 1 and torch.get_num_threads() == 1
        assert base.set_threads(2) == 2 and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
