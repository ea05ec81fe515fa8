"""Evaluate and gate on a small demo project (tiny open_clip), for real: the first model is promoted,
a later batch brings drift checks and a comparison with the champion, a worse challenger is held,
a crash between registering and promoting leaves a consistent registry, and a rollback restores the
previous champion's predictions exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from mmd.cli import app
from mmd.config import load_settings

FAMILIES = ("cmc", "rgcl")
SMALL = dict(
    cmc=dict(epochs=4, fusion_epochs=4, hidden=32, nce={"feat_dim": 16, "k": 16}, block={"mm_dim": 32, "chunks": 4, "rank": 3}),
    rgcl=dict(map_dim=32, epochs=4, lr=2e-3, rkc={"k": 5}),
    # random tiny encoder: the floors are the test's to set, the mechanics are what is tested
    gate=dict(min_holdout=10, floors={"accuracy": 0.0, "macro_f1": 0.0, "auroc": 0.0, "class_f1": 0.0},
              drift={"min_rows": 10}),
    evaluate=dict(bootstrap=100),
)


def _train(settings) -> None:
    from mmd.models.cmc.stage import train_stage as train_cmc
    from mmd.models.rgcl.stage import train_stage as train_rgcl

    train_cmc(settings)
    train_rgcl(settings)


def _cycle(settings) -> dict:
    from mmd.evaluate.evaluate import run_evaluate
    from mmd.gate import run_gate
    from mmd.report import run_report

    run_evaluate(settings)
    report = run_gate(settings)
    run_report(settings)
    return report


@pytest.fixture(scope="module")
def _first_cycle(tmp_path_factory, tiny_open_clip):
    """The demo through select, both detectors trained, one evaluate + gate."""
    from mmd.synth.generate import run_synthesize
    from mmd.synth.select import run_select

    from .conftest import prepare_demo_project

    root = tmp_path_factory.mktemp("gate")
    settings = prepare_demo_project(root, tiny_open_clip, dict(memes=40, claims=24, posts=36), select={"k": 30}, **SMALL)
    run_synthesize(settings)
    run_select(settings)
    _train(settings)
    return root, _cycle(settings)


@pytest.fixture
def project(_first_cycle, tmp_path):
    root = tmp_path / "p"
    shutil.copytree(_first_cycle[0], root)
    return root


def _set(root: Path, **sections) -> object:
    params = yaml.safe_load((root / "params.yaml").read_text())
    for name, values in sections.items():
        params[name].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return load_settings(root / "params.yaml")


def _new_batch(settings, batch: int = 1) -> None:
    """A later batch arrives and runs through the data stages; the detectors are retrained on it."""
    from mmd.demo import generate
    from mmd.embed import run_embed
    from mmd.index import run_index
    from mmd.ingest import run_ingest
    from mmd.synth.generate import run_synthesize
    from mmd.synth.select import run_select
    from mmd.validate import run_validate

    generate(settings.path("inbox"), settings.params.demo, batch=batch)
    run_ingest(settings, show_progress=False)
    run_validate(settings)
    run_embed(settings, show_progress=False)
    run_index(settings)
    run_synthesize(settings)
    run_select(settings)
    _train(settings)


def _scores(settings, family: str, ids: list[str] | None = None) -> np.ndarray:
    """What the model in service gives the validated items (those of `ids`, in that order)."""
    from mmd.models.predict import run_predict

    out = settings.data_dir / "predictions" / f"check-{family}.parquet"
    run_predict(settings, family, output=out)
    table = pq.read_table(out)
    by_id = dict(zip(table.column("id").to_pylist(), table.column("score").to_numpy()))
    return np.array([by_id[i] for i in (ids or by_id)], np.float32)


def test_the_first_model_of_each_family_is_promoted(_first_cycle):
    root, report = _first_cycle
    from mmd.registry import Registry

    reg = Registry(root / "data" / "registry")
    for family in FAMILIES:
        d = report["families"][family]
        assert (d["status"], d["action"], d["champion_after"]) == ("passed", "promote", 1), d["reasons"]
        checks = {c["name"]: c for c in d["checks"]}
        assert checks["champion"]["status"] == "skipped" and "first model" in checks["champion"]["reasons"][0]
        assert {checks[n]["status"] for n in ("data_drift", "embedding_drift", "prediction_drift")} == {"skipped"}
        # the checks that need no champion ran, with their figures
        assert checks["validation"]["status"] == "passed" and checks["floors"]["status"] == "passed"
        synth = checks["synthetic_vs_real"]
        assert synth["status"] in ("passed", "failed") and synth["figures"]["reference_synthetic"] > 0
        assert Path(synth["html"]).is_file()
        v = reg.champion(family)
        assert v.number == 1 and (v.path / "reference.parquet").is_file() and v.lineage["data_cutoff"]
        card = (v.path / "card.md").read_text()
        assert "passed" in card and "every enforced check passed" in card
        # the card carries the holdout figures (ROC, reliability, ...), inlined in its page
        assert (v.path / "holdout-evaluation.png").is_file() and "](holdout-evaluation.png)" in card
        assert "data:image/png;base64," in (v.path / "card.html").read_text()
    evaluation = json.loads((root / "reports" / "evaluate.json").read_text())
    for family in FAMILIES:
        m = evaluation["families"][family]["holdout"]
        assert m["n"] == evaluation["holdout"]["items"] >= 10 and len(m["ci"]["macro_f1"]) == 2
        roc = (root / "reports" / "evaluate" / "roc" / f"{family}.csv").read_text().splitlines()
        assert roc[0] == "fpr,tpr,threshold" and len(roc) > 2
    html = (root / "reports" / "cycle.html").read_text()
    assert "What came in" in html and "quarantined" in html and "CMC" in html and "data:image/png;base64" in html


def test_a_new_batch_is_gated_against_the_champion_and_a_worse_challenger_is_held(project):
    settings = _set(project, gate={"min_delta": 1.0})  # nothing beats the champion by a whole point
    _new_batch(settings)
    report = _cycle(settings)
    for family in FAMILIES:
        d = report["families"][family]
        assert (d["status"], d["action"], d["champion_after"]) == ("failed", "hold", 1)
        checks = {c["name"]: c for c in d["checks"]}
        assert checks["champion"]["status"] == "failed"
        assert "is not at least the champion's" in checks["champion"]["reasons"][0]
        assert d["reasons"][0].startswith("champion:")
        # the fresh batch is the new items only, and the drift checks ran on it
        assert 0 < d["fresh_batch"]["items"] < len(pq.read_table(settings.data_dir / "validated" / "items.parquet"))
        for name in ("data_drift", "embedding_drift", "prediction_drift"):
            assert checks[name]["status"] in ("passed", "failed", "could_not_run") and checks[name]["status"] != "skipped"
            assert checks[name]["reasons"]
        assert checks["data_drift"]["status"] != "could_not_run", checks["data_drift"]["reasons"]
        assert d["delta"]["delta"] is not None and d["metrics"]["champion"]["holdout"]["n"] > 0
    history = CliRunner().invoke(app, ["models", "--json", "--params", str(project / "params.yaml")])
    events = [(e["family"], e["event"], e["version"]) for e in json.loads(history.output)["history"]]
    assert ("cmc", "promoted", 1) in events and ("cmc", "held", 2) in events


def test_a_crash_between_registering_and_promoting_leaves_a_consistent_registry_and_rollback_restores_predictions(
        project, monkeypatch):
    from mmd.registry import Registry

    settings = _set(project, gate={"min_delta": -1.0, "max_class_f1_drop": 1.0})  # any challenger is better
    before = {f: _scores(settings, f) for f in FAMILIES}
    ids = pq.read_table(settings.data_dir / "validated" / "items.parquet").column("id").to_pylist()
    _new_batch(settings)

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt("the machine went down")

    monkeypatch.setattr(Registry, "promote", crash)
    with pytest.raises(KeyboardInterrupt):
        _cycle(settings)
    monkeypatch.undo()
    reg = Registry(settings.data_dir / "registry")
    assert reg.champion("cmc").number == 1 and [v.number for v in reg.versions("cmc")] == [1, 2]
    assert np.array_equal(_scores(settings, "cmc", ids), before["cmc"])  # still served by v1

    report = _cycle(settings)  # started again: the registered challenger is found, not copied twice
    for family in FAMILIES:
        d = report["families"][family]
        assert (d["action"], d["champion_after"]) == ("promote", 2), d["reasons"]
    assert report["families"]["cmc"]["version"]["created"] is False  # the crash came after cmc's registration
    after = {f: _scores(settings, f, ids) for f in FAMILIES}
    assert any(not np.array_equal(after[f], before[f]) for f in FAMILIES)

    for family in FAMILIES:
        result = CliRunner().invoke(app, ["rollback", family, "--reason", "moderators saw false alarms",
                                          "--params", str(project / "params.yaml")])
        assert result.exit_code == 0 and "back to v1" in result.output, result.output
        now = _scores(settings, family, ids)
        diff = np.nonzero(now != before[family])[0]
        assert np.array_equal(now, before[family]), (family, diff, now[diff], before[family][diff])  # exactly what v1 served
    events = Registry(settings.data_dir / "registry").history("cmc")
    assert events[-1]["event"] == "rolled_back" and events[-1]["reason"] == "moderators saw false alarms"


def test_the_e_mail_opens_in_the_app_names_its_sides_and_links_what_it_cannot_attach(project, monkeypatch):
    """Links absolute to app.base_url, a plain-text part that is the report, every drift page attached or
    linked (Evidently's are ~4 MB: linked), drift pages that say which side is which, `mmd models` naming
    the holdout each version was measured on."""
    import email
    import email.policy
    import html
    import re

    from mmd.report import send_cycle_report
    from mmd.results import GateReport

    settings = _set(project, app={"base_url": "https://mmd.example.org/"}, notify={"transport": "outbox"})
    _new_batch(settings)
    _cycle(settings)
    gate = GateReport.read(settings.layout)
    delivery = send_cycle_report(settings, gate)
    msg = email.message_from_bytes(Path(delivery.path).read_bytes(), policy=email.policy.default)
    page = msg.get_body(("html",)).get_content()
    hrefs = re.findall(r'href="([^"]+)"', page)
    assert hrefs and all(h.startswith("https://mmd.example.org/") for h in hrefs), hrefs
    assert "https://mmd.example.org/queue" in hrefs and "https://mmd.example.org/models/cmc/v2/card" in hrefs
    text = msg.get_body(("plain",)).get_content()
    for family, d in gate.families.items():
        assert f"{family.upper()}: {d.status} -> {d.action}" in text and d.reasons[0] in text
    assert "The whole report: https://mmd.example.org/reports/cycle" in text
    # every check's page went: attached when small, else linked to the app
    attached = {a.get_filename(): a for a in msg.iter_attachments()}
    assert "gate.json" in attached and all(len(a.get_content()) <= 2_000_000 for a in attached.values())
    pages = {Path(c.html).name for d in gate.families.values() for c in d.checks if c.html}
    assert {"cmc-data.html", "cmc-embeddings.html", "cmc-synthetic.html"} <= pages
    for name in pages - set(attached):
        assert re.search(rf"{re.escape(name)}: .*open it at https://mmd\.example\.org/reports/file/drift/{re.escape(name)}",
                         text), name
    assert "cmc-data.html" not in attached  # Evidently's page: over the cap, linked
    assert len(Path(delivery.path).read_bytes()) <= settings.params.notify.max_message_bytes
    # every link of both parts answers from the app, for a signed-in moderator
    from fastapi.testclient import TestClient

    from mmd.app.server import create_app
    from tests.app_helpers import USERS, env

    links = set(hrefs) | set(re.findall(r"https://mmd\.example\.org/\S*", text))
    client = TestClient(create_app(settings, env()), base_url="https://mmd.example.org", follow_redirects=False)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
    assert client.post("/login", data={"user": "alice", "password": USERS["alice"], "csrf": csrf,
                                       "next": "/"}).status_code == 303
    for link in sorted(links):
        answer = client.get(link.rstrip(".,;)"))
        assert answer.status_code == 200 and answer.content, (link, answer.status_code)
    # the drift pages name their sides
    def shown(name: str) -> str:
        return html.unescape((settings.layout.drift / name).read_text())

    assert "Reference</b>: the champion's (v1) real training items" in shown("cmc-data.html")
    assert "Current</b>: the fresh batch:" in shown("cmc-embeddings.html")
    assert "real + " in shown("cmc-synthetic.html") and "SYNTHETIC" in shown("cmc-synthetic.html")
    # versions say which holdout their figures are on; the gate's same-holdout comparison is beside them
    out = CliRunner().invoke(app, ["models", "--params", str(project / "params.yaml"), "cmc"], terminal_width=250)
    assert out.exit_code == 0, out.output
    assert "holdout (items, id)" in out.output and "v1: " in out.output
