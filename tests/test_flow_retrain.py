"""The retrain flow runs one whole cycle for real under Prefect (a temporary local API) on a small
demo project, and a second cycle started while one runs is refused with a clear message."""

from __future__ import annotations

import json

import pytest

from .conftest import SMALL_CYCLE

pytestmark = pytest.mark.slow

SMALL = {name: values for name, values in SMALL_CYCLE.items() if name != "demo"}


def test_the_retrain_flow_runs_a_cycle_and_refuses_a_second_at_once(tmp_path, tiny_open_clip):
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow
    from mmd.cycle import CycleRunning, cycle_lock

    from .conftest import prepare_demo_project

    settings = prepare_demo_project(tmp_path, tiny_open_clip, dict(memes=24, claims=12, posts=18), **SMALL)
    with prefect_test_harness(server_startup_timeout=120):
        ran = retrain_flow(str(settings.params_file), use_dvc=False)
        # a cycle that finds another one running is refused, and says so
        with cycle_lock(settings):
            with pytest.raises(CycleRunning, match="a cycle is already running"):
                retrain_flow(str(settings.params_file), use_dvc=False)
    assert list(ran) == ["ingest", "validate", "embed", "index", "synthesize", "select", "train_cmc", "train_rgcl",
                         "evaluate", "gate", "report", "review", "email", "version"]
    assert all(ran[s].how == "direct" and ran[s].status == "ran" for s in list(ran)[:12])
    assert ran["version"]["skipped"] == "not a DVC project"
    gate = json.loads((settings.reports_dir / "gate.json").read_text())
    assert {d["action"] for d in gate["families"].values()} == {"promote"}
    # the embedded default writes the report to the outbox
    assert ran["email"]["queued"] and list((settings.data_dir / "outbox").glob("*.eml"))


def test_with_the_mail_server_down_the_cycle_completes_and_the_next_cycle_delivers_both_reports(
        tmp_path, tiny_open_clip, monkeypatch):
    import email
    import email.policy

    from aiosmtpd.controller import Controller
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow
    from mmd.demo import generate

    from .conftest import prepare_demo_project
    from .test_notify import Sink, free_port

    settings = prepare_demo_project(tmp_path, tiny_open_clip, dict(memes=24, claims=12, posts=18),
                                    notify={"transport": "smtp", "timeout_s": 5}, **SMALL)
    port = free_port()
    monkeypatch.setenv("MMD_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("MMD_SMTP_PORT", str(port))
    monkeypatch.setenv("MMD_SMTP_TLS", "none")
    outbox = settings.data_dir / "outbox"
    with prefect_test_harness(server_startup_timeout=120):
        first = retrain_flow(str(settings.params_file), use_dvc=False)  # nothing listens on the port
        assert first["email"]["queued"] and not first["email"]["sent"]
        assert "Connection refused" in " ".join(first["email"]["errors"])
        (queued,) = outbox.glob("*.eml")
        assert json.loads(queued.with_suffix(".json").read_text())["attempts"] == 1

        sink = Sink()
        controller = Controller(sink, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            generate(settings.path("inbox"), settings.params.demo, batch=1)  # something new to decide on
            second = retrain_flow(str(settings.params_file), use_dvc=False)
        finally:
            controller.stop()
    assert len(second["email"]["sent"]) == 2 and not second["email"]["queued"]
    messages = [email.message_from_bytes(e.content, policy=email.policy.default) for e in sink.envelopes]
    assert [m["Message-ID"] for m in messages] == [first["email"]["message_id"], second["email"]["message_id"]]
    for message, cycle in zip(messages, (first, second)):
        assert message["To"] == "moderators@example.org"
        assert "mmd cycle report" in message.get_body(("html",)).get_content()
        attached = {part.get_filename(): part for part in message.iter_attachments()}
        assert "gate.json" in attached
        gated = json.loads(attached["gate.json"].get_content())
        assert gated["gated_at"] == cycle["gate"].result.gated_at
    assert not list(outbox.glob("*.eml")) and len(list((outbox / "sent").glob("*.eml"))) == 2


def test_a_cycle_with_a_poisoned_file_in_its_inbox_completes_and_the_next_reads_nothing_again(tmp_path, tiny_open_clip):
    """One file no parser survives (ten thousand nested brackets) among a day's new files: it is quarantined
    whole with its reason, the files after it are read, the cycle gates and mails; with the file removed,
    the next ingest re-reads none of the others."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.retrain import retrain_flow
    from mmd.cycle import run_stage
    from mmd.demo import generate

    from .conftest import prepare_demo_project

    settings = prepare_demo_project(tmp_path, tiny_open_clip, dict(memes=24, claims=12, posts=18), **SMALL)
    inbox = settings.path("inbox")
    generate(inbox, settings.params.demo, batch=1)  # the day's new files
    poison = inbox / "0-poison.json"                # sorted before every other file
    poison.write_text("[" * 10_000 + "]" * 10_000)
    with prefect_test_harness(server_startup_timeout=120):
        ran = retrain_flow(str(settings.params_file), use_dvc=False)
    ingested = json.loads((settings.reports_dir / "ingest.json").read_text())
    (source,) = ingested["sources"]
    assert source["reconciled"] and source["quarantined"] >= 1 and source["accepted"] > 0
    assert source["quarantine_reasons"].get("json_too_deep") == 1
    gate = json.loads((settings.reports_dir / "gate.json").read_text())
    assert {d["action"] for d in gate["families"].values()} <= {"promote", "hold"} and gate["families"]
    assert ran["email"]["path"] and ran["email"]["message_id"]

    poison.unlink()
    again = run_stage(settings, "ingest", use_dvc=False).result
    (source,) = again.sources
    assert (source.in_, source.accepted, source.quarantined) == (0, 0, 0)  # nothing read twice
    assert source.counters.get("unchanged_files", 0) >= 3  # the demo's files, each known by its digest
