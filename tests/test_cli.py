"""The `mmd` command line and `make demo` (flows.demo): the demo cycle, status --json, and clear exits on
bad params or sources."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import mmd.tables
from mmd.cli import app

REPO = Path(__file__).resolve().parents[1]


def row(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is `first` (box characters dropped)."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`make demo` in a fresh folder: python -m flows.demo (the inbox, one whole cycle under Prefect)."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.demo import main

    root = tmp_path_factory.mktemp("cli")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    with pytest.MonkeyPatch.context() as mp, prefect_test_harness(server_startup_timeout=120):
        mp.setattr(mmd.tables.console, "width", 250)  # a wide "terminal": paths never fold
        with mmd.tables.console.capture() as printed:
            ran = main(["--params", str(root / "params.yaml")])
    return root, ran, printed.get()


@pytest.mark.slow
def test_demo_runs_one_cycle_and_prints_the_summary_and_outputs(demo_run):
    root, ran, out = demo_run
    assert f"demo inbox: 60 memes, 40 claims, 40 posts (+6 broken on purpose) in {root / 'inbox' / 'demo'}" in out
    # one row per stage (stage, how, status, seconds, figures); not a DVC project, so the stages run directly
    stages = ["ingest", "validate", "embed", "index", "synthesize", "select", "train_cmc", "train_rgcl", "evaluate", "gate",
              "report", "review"]
    assert list(ran) == stages + ["email", "version"]
    for stage in stages:
        assert row(out, stage)[1:3] == ["direct", "ran"]
    # the demo folder's README is counted as skipped (`readme`): every file is accounted for
    assert row(out, "ingest")[4] == "147 in: 134 accepted, 5 quarantined, 7 duplicates, 1 skipped"
    assert row(out, "validate")[4] == "134 in: 133 pass (99.3%), 1 quarantined; 133 validated in all"
    assert row(out, "embed")[4].startswith("133 embedded;")
    assert row(out, "index")[4] == "133 points: 133 upserted, 0 deleted, 0 unchanged"
    assert row(out, "version")[-1] == "not a DVC project"
    # the stages' own reports say the same
    assert json.loads((root / "reports" / "ingest.json").read_text())["reconciled"]
    embed_report = json.loads((root / "reports" / "embed.json").read_text())
    assert embed_report["reconciled"] and embed_report["embedded"] == 133
    pool = json.loads((root / "reports" / "synthesize.json").read_text())
    assert pool["reconciled"] and pool["new"] == pool["pool_after"] > 100
    selected = json.loads((root / "reports" / "select.json").read_text())
    assert selected["selected"] == 100 and selected["ranked_by"].startswith("proxy:")
    trained = json.loads((root / "reports" / "train_cmc.json").read_text())
    assert trained["data"]["train"]["synthetic"] + trained["data"]["synthetic_dropped_leak"] == 100
    assert {"history.png", "evaluation-val.png"} <= {p.name for p in (root / "reports" / "cmc").iterdir()}
    rgcl = json.loads((root / "reports" / "train_rgcl.json").read_text())
    assert rgcl["database_points"] == rgcl["data"]["train"]["items"]
    # the gate: a decision per family, in its table and its report
    gated = json.loads((root / "reports" / "gate.json").read_text())
    for family in ("cmc", "rgcl"):
        d = gated["families"][family]
        assert d["status"] in ("passed", "failed", "could_not_run") and d["reasons"]
        assert row(out, family)[:3] == [family, d["status"], d["action"]]
    # the outputs, ending with the report and the e-mail (the embedded default: the outbox)
    (eml,) = (root / "data" / "outbox").glob("*.eml")
    assert row(out, "e-mail to moderators") == ["e-mail to moderators", str(eml)]
    assert row(out, "email")[1] == "queued"
    for what, path in (("moderators' report", root / "reports" / "cycle.html"),
                       ("model registry", root / "data" / "registry"),
                       ("validation report", root / "reports" / "validation.html"),
                       ("embeddings", root / "data" / "embeddings" / "items.parquet"),
                       ("vector store (embedded)", root / "data" / "qdrant")):
        assert row(out, what) == [what, str(path)] and path.exists()


def test_mmd_demo_writes_the_inbox_and_a_later_batch(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    p = str(tmp_path / "params.yaml")
    result = CliRunner().invoke(app, ["demo", "--params", p])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "inbox" / "demo" / "memes" / "train.jsonl").is_file()
    again = CliRunner().invoke(app, ["demo", "--params", p])
    assert again.exit_code == 0 and "demo inbox" not in again.output  # kept: it is there already
    batch = CliRunner().invoke(app, ["demo", "--params", p, "--batch", "1"])
    assert batch.exit_code == 0 and "demo-batch1" in batch.output.replace("\n", "")
    assert not (tmp_path / "data").exists()  # it only writes the inbox


@pytest.mark.slow
def test_select_and_synthesize_from_the_command_line(demo_run):
    root, *_ = demo_run
    result = CliRunner().invoke(app, ["select", "--params", str(root / "params.yaml"), "--method", "semsim", "-k", "7"])
    assert result.exit_code == 0, result.output
    assert json.loads((root / "reports" / "select.json").read_text())["selected"] == 7
    result = CliRunner().invoke(app, ["select", "--params", str(root / "params.yaml"), "--method", "bogus"])
    assert result.exit_code == 1 and "unknown selection method" in result.output
    result = CliRunner().invoke(app, ["synthesize", "--params", str(root / "params.yaml")])
    assert result.exit_code == 0 and "pool" in result.output
    assert json.loads((root / "reports" / "synthesize.json").read_text())["new"] == 0  # nothing new since the demo


@pytest.mark.slow
def test_status_json_gives_counts_watermark_and_reasons(demo_run):
    root, *_ = demo_run
    result = CliRunner().invoke(app, ["status", "--json", "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["items"] == 134
    assert info["data_dir"] == str(root / "data")
    assert info["counts"]["kind"] == {"fact_check": 40, "meme": 61, "post": 33}
    (src,) = info["sources"]
    assert (src["name"], src["type"], src["enabled"], src["items"]) == ("inbox", "inbox", True, 134)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", src["last_run"])
    # 2 meme jsonl, 4 ClaimReview files, 1 tsv (the README is ignored)
    assert src["watermark"] == "8 files read"
    assert src["watermark_state"]["files"] == 8
    # ingest quarantine (5 broken on purpose) plus the one row validation turned away
    assert src["quarantine_reasons"] == {
        "bad_columns": 1, "bad_json": 1, "image_truncated": 1, "missing_field": 1, "unknown_label": 1,
        "expect_column_value_lengths_to_be_between": 1,
    }
    assert src["quarantined"] == 6
    assert info["validation"]["passed"] is True
    assert (info["validation"]["in"], info["validation"]["accepted"]) == (134, 133)


@pytest.mark.slow
def test_status_table(demo_run):
    root, *_ = demo_run
    result = CliRunner().invoke(app, ["status", "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "validation: passed, 133/134 accepted" in result.stdout
    assert row(result.stdout, "inbox")[:4] == ["inbox", "inbox", "yes", "134"]


def test_ingest_with_an_unknown_key_exits_2_naming_it(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ingest"]["http"]["timeout"] = 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["ingest", "--params", str(bad)])
    assert result.exit_code == 2
    assert "ingest.http.timeout: unknown key" in result.stderr
    assert "bad.yaml" in result.stderr
    assert not (tmp_path / "data").exists()  # nothing ran


def test_ingest_with_an_unknown_source_exits_2(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    result = CliRunner().invoke(app, ["ingest", "--params", str(tmp_path / "params.yaml"), "--source", "nope"])
    assert result.exit_code == 2
    assert "no source named nope in the params (have: inbox)" in result.stderr
    assert not (tmp_path / "data").exists()


def test_missing_params_file_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["status", "--params", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "no such params file" in result.stderr


def test_ingest_then_validate_on_an_empty_inbox(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "inbox").mkdir()
    p = str(tmp_path / "params.yaml")
    result = CliRunner().invoke(app, ["ingest", "-q", "--params", p, "--source", "inbox"])
    assert result.exit_code == 0, result.output
    assert row(result.stdout, "inbox")[:7] == ["inbox", "0", "0", "0", "0", "0", "yes"]
    assert "0 new items; 0 in" in result.stdout
    result = CliRunner().invoke(app, ["validate", "--params", p])
    assert result.exit_code == 1
    assert "fewer than validate.min_items=1" in result.stderr
    assert str(tmp_path / "reports" / "validation.html") in result.stderr.replace("\n", "")


@pytest.mark.slow
def test_search_prints_the_top_hits(demo_run):
    root, *_ = demo_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mmd.tables.console, "width", 250)
        result = CliRunner().invoke(app, ["search", "they want you to believe the vaccine story", "-k", "3",
                                          "--kind", "meme", "--params", str(root / "params.yaml")])
    assert result.exit_code == 0, result.output
    ranks = [row(result.stdout, str(n)) for n in (1, 2, 3)]
    assert all(r[2] == "meme" for r in ranks)  # rank, score, kind, …
    scores = [float(r[1]) for r in ranks]
    assert scores == sorted(scores, reverse=True)
    assert "they want you to believe" in ranks[0][6]


def test_search_without_a_query_exits_2(tmp_path):
    result = CliRunner().invoke(app, ["search", "--params", str(REPO / "params.yaml")])
    assert result.exit_code == 2 and "query" in result.output


def test_commands_that_need_no_model_import_no_torch():
    """`mmd --help`, a config error, status, ingest, validate and index start without torch (seconds, not ten)."""
    import subprocess
    import sys

    code = ("import sys; import mmd.cli, mmd.stages.ingest, mmd.ingest, mmd.status, mmd.stages.validate, "
            "mmd.validate, mmd.stages.index, mmd.index, mmd.store.edge; "
            "bad = [m for m in ('torch', 'transformers', 'great_expectations', 'prefect') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_stage_process_imports_the_classes_of_failures_only_when_one_happens(tmp_path):
    """`mmd stage NAME` (every DVC stage's process) is ready to report the encoders', the store's, training's
    and validation's errors without importing their modules (torch, Great Expectations) until one is raised;
    `mmd --help` loads no config models."""
    import subprocess
    import sys

    code = ("import sys; from mmd.cli.app import exits_on; from mmd.cli.data import _stage_errors; from mmd import stages; "
            "stages.get('index', ('cmc', 'rgcl')); ctx = exits_on(_stage_errors); ctx.__enter__(); ctx.__exit__(None, None, None); "
            "bad = [m for m in ('torch', 'great_expectations', 'mmd.encoders', 'mmd.validate') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
    code = ("import sys; sys.argv = ['mmd', '--help']; from mmd.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('torch', 'pydantic', 'mmd.config') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    # and an expected failure is still reported as one (a message and exit 1, not a traceback)
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    result = CliRunner().invoke(app, ["stage", "index", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 1 and "run `mmd embed` first" in result.output
