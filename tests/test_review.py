"""The review queue: which fresh items join it (the likeliest, the most uncertain, where champions disagree),
that it keeps every item once across cycles with its state from the moderators' votes, the agreement rule,
and that agreed labels reach the detectors' training data through ingest's snapshot."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pyarrow as pa
import pytest

from mmd.items import ITEM_SCHEMA, read_table, write_table
from mmd.review.queue import QUEUE_SCHEMA, SCORED_SCHEMA, rank, uncertainty
from mmd.review.votes import read_votes, record_vote, snapshot, tally


def _cand(i: str, **scores: float) -> dict:
    return {"row": {"id": i}, "scores": scores}


def test_rank_takes_the_likeliest_then_the_most_uncertain_or_disputed():
    cands = [_cand("sure-bad", cmc=0.97, rgcl=0.95), _cand("bad", cmc=0.8, rgcl=0.85),
             _cand("sure-fine", cmc=0.02, rgcl=0.05), _cand("unsure", cmc=0.52, rgcl=0.47),
             _cand("disputed", cmc=0.95, rgcl=0.05), _cand("fine", cmc=0.2, rgcl=0.1)]
    picked = rank(cands, size=4, likely_share=0.5)
    assert [(c["row"]["id"], reason) for c, reason, _ in picked] == [
        ("sure-bad", "likely"), ("disputed", "likely"), ("unsure", "uncertain"), ("bad", "uncertain")]
    # without the likely share, a high score that both champions share is not uncertain at all
    picked = rank(cands, size=3, likely_share=0.0)
    assert [(c["row"]["id"], reason) for c, reason, _ in picked] == [
        ("disputed", "disagreement"), ("unsure", "uncertain"), ("bad", "uncertain")]
    assert uncertainty({"a": 0.95, "b": 0.05}) == pytest.approx((0.5, 0.9, 1.0))
    assert uncertainty({"a": 0.9, "b": 0.2}) == pytest.approx((0.55, 0.7, 0.9))
    assert rank(cands, size=0, likely_share=0.5) == [] and len(rank(cands, size=99, likely_share=0.5)) == len(cands)
    one = rank([_cand("x", cmc=0.5)], size=1, likely_share=0.0)
    assert one[0][1:] == ("uncertain", 1.0)  # one champion: uncertainty is closeness to 0.5


def test_the_latest_vote_of_each_moderator_counts_and_agreement_decides(tmp_path):
    def v(item, by, action="label", label=None):
        return {"item_id": item, "by": by, "action": action, "label": label, "at": "2026-01-01T00:00:00+00:00"}

    votes = [v("a", "alice", label=1), v("a", "alice", label=0),            # alice changed her mind
             v("b", "alice", label=1), v("b", "bob", label=1),
             v("c", "alice", label=1), v("c", "bob", label=0),              # a tie: no label
             v("d", "alice", "skip"),
             v("e", "alice", "skip"), v("e", "bob", label=1)]
    one = tally(votes, require=1)
    assert (one["a"].state, one["a"].label, one["a"].by) == ("labelled", 0, "alice")
    assert (one["b"].state, one["b"].label, one["b"].votes, one["b"].by) == ("labelled", 1, 2, "alice, bob")
    assert (one["c"].state, one["c"].agreed) == ("open", False) and one["c"].labels == {"alice": 1, "bob": 0}
    assert (one["d"].state, one["d"].by) == ("skipped", "alice")
    assert one["e"].state == "labelled" and one["e"].acted == {"alice", "bob"}
    two = tally(votes, require=2)
    assert two["b"].agreed and two["b"].label == 1
    assert {i for i, t in two.items() if t.agreed} == {"b"}
    assert (two["a"].state, two["a"].label, two["a"].votes) == ("open", 0, 1)  # awaiting a second moderator


def test_votes_are_appended_checked_and_a_torn_line_is_passed_over(make_settings):
    at = make_settings().layout
    record_vote(at, "x", "label", "alice", 1)
    record_vote(at, "x", "skip", "bob")
    with open(at.votes, "a") as f:
        f.write('{"item_id": "y", "act')  # a crash mid-write of someone else's editor
    record_vote(at, "y", "label", "bob", 0)
    votes = read_votes(at.votes)
    assert [(x["item_id"], x["action"], x["label"], x["by"]) for x in votes] == [
        ("x", "label", 1, "alice"), ("x", "skip", None, "bob"), ("y", "label", 0, "bob")]
    with pytest.raises(ValueError, match="a label is 0 or 1"):
        record_vote(at, "x", "label", "alice", 2)
    with pytest.raises(ValueError, match="action must be one of"):
        record_vote(at, "x", "delete", "alice")
    with pytest.raises(ValueError, match="moderator's name"):
        record_vote(at, "x", "skip", "")


def _items(n: int, start: int = 0, at: str = "2026-01-01T00:00:00+00:00") -> list[dict]:
    rows = []
    for k in range(start, start + n):
        rows.append({f.name: None for f in ITEM_SCHEMA} | {
            "id": f"item{k:02d}", "source": "inbox", "source_family": "inbox", "kind": "fact_check" if k % 2 else "meme",
            "text": f"item number {k}", "label": k % 2, "label_original": "False" if k % 2 else None,
            "publisher": "Desk" if k % 2 else None, "url": f"https://example.org/{k}", "ingested_at": at,
            "extra": "{}", "content_hash": str(k)})
    return rows


@pytest.fixture
def reviewing(make_settings, monkeypatch):
    """Settings over a validated items table, and two fake champions whose scores a dict holds."""
    import mmd.models.serving
    import mmd.review.queue

    settings = make_settings(review={"size": 4, "likely_share": 0.5})
    scores = {"cmc": {}, "rgcl": {}}

    class Fake:
        def __init__(self, family):
            self.family = family

        def score(self, rows, data_dir):
            import numpy as np

            return np.array([scores[self.family][r["id"]] for r in rows]), np.zeros(len(rows), bool)

    versions = {"cmc": SimpleNamespace(number=1, path="cmc"), "rgcl": SimpleNamespace(number=3, path="rgcl")}
    monkeypatch.setattr(mmd.review.queue, "champions", lambda s: versions)
    monkeypatch.setattr(mmd.models.serving, "load_predictor", lambda s, family, folder=None: Fake(family))
    return settings, scores


def _write_items(settings, rows):
    write_table(pa.Table.from_pylist(rows, schema=ITEM_SCHEMA), settings.layout.items)


def test_the_queue_keeps_each_item_once_across_cycles_with_its_state(reviewing):
    from mmd.review.queue import queue_view, run_review

    settings, scores = reviewing
    first = _items(10)
    for r in first:
        scores["cmc"][r["id"]] = scores["rgcl"][r["id"]] = 0.1   # both sure it is fine
    for item, cmc, rgcl in (("item09", 0.95, 0.95), ("item08", 0.9, 0.9), ("item05", 0.5, 0.5),
                            ("item00", 0.0, 0.85)):      # the likeliest two, one unsure, one disputed
        scores["cmc"][item], scores["rgcl"][item] = cmc, rgcl
    _write_items(settings, first)
    report = run_review(settings)
    queue = {r["id"]: r for r in read_table(settings.layout.review_queue, QUEUE_SCHEMA).to_pylist()}
    assert (report.fresh, report.scored, report.added, report.queue) == (10, 10, 4, 4)
    assert report.champions == {"cmc": 1, "rgcl": 3} and report.reasons == {"likely": 2, "uncertain": 1,
                                                                             "disagreement": 1}
    assert set(queue) == {"item09", "item00", "item08", "item05"}
    assert queue["item00"]["reason"] == "disagreement" and queue["item05"]["reason"] == "uncertain"
    assert queue["item09"]["reason"] == queue["item08"]["reason"] == "likely"
    row = queue["item09"]
    assert (row["kind"], row["label_original"], row["publisher"], row["url"], row["state"]) == (
        "fact_check", "False", "Desk", "https://example.org/9", "open")
    assert json.loads(row["scores"]) == {"cmc": {"score": 0.95, "version": 1}, "rgcl": {"score": 0.95, "version": 3}}

    record_vote(settings.layout, "item09", "label", "alice", 1)
    record_vote(settings.layout, "item05", "skip", "alice")
    # the next cycle: two new items, and item09 (already queued) scored again by nobody
    second = first + _items(2, start=10, at="2026-01-02T00:00:00+00:00")
    for r in second[10:]:
        scores["cmc"][r["id"]] = scores["rgcl"][r["id"]] = 0.99
    _write_items(settings, second)
    report = run_review(settings)
    assert (report.fresh, report.scored, report.added, report.queue) == (2, 2, 2, 6)
    assert report.states == {"open": 4, "labelled": 1, "skipped": 1}
    queue = read_table(settings.layout.review_queue, QUEUE_SCHEMA).to_pylist()
    assert len({r["id"] for r in queue}) == len(queue) == 6
    labelled = next(r for r in queue if r["id"] == "item09")
    assert (labelled["state"], labelled["label"], labelled["by"]) == ("labelled", 1, "alice")
    assert read_table(settings.layout.review_scored, SCORED_SCHEMA).num_rows == 12
    # a third cycle with nothing new adds nothing and scores nothing
    report = run_review(settings)
    assert (report.fresh, report.added, report.queue) == (0, 0, 6)

    # the app's view: votes since the stage count at once; what alice acted on leaves her open queue
    record_vote(settings.layout, "item10", "label", "bob", 0)
    open_for_alice = [r["id"] for r in queue_view(settings, "open", "alice")]
    assert "item09" not in open_for_alice and "item05" not in open_for_alice and "item10" not in open_for_alice
    assert [r["id"] for r in queue_view(settings, "labelled")] == ["item10", "item09"]  # by priority
    assert [r["id"] for r in queue_view(settings, "skipped")] == ["item05"]
    assert len(queue_view(settings, "all")) == 6


def test_no_champion_scores_nothing_and_keeps_the_items_fresh(reviewing, monkeypatch):
    import mmd.review.queue
    from mmd.review.queue import run_review

    settings, _ = reviewing
    monkeypatch.setattr(mmd.review.queue, "champions", lambda s: {})
    _write_items(settings, _items(3))
    report = run_review(settings)
    assert (report.fresh, report.scored, report.queue) == (3, 0, 0) and "no champion" in report.note
    assert "no champion" in report.figures()


def test_agreed_labels_reach_training_through_ingests_snapshot(make_settings):
    from mmd.models.data import read_items, training_rows

    settings = make_settings(train={"holdout_fraction": 0.0, "val_fraction": 0.3})
    rows = _items(12)
    rows[3]["label"] = None                                     # unlabelled: a moderator labels it
    _write_items(settings, rows)
    at = settings.layout
    record_vote(at, "item03", "label", "alice", 1)
    record_vote(at, "item04", "label", "alice", 1)              # overrides the source's 0
    record_vote(at, "item06", "label", "alice", 1)              # ... but needs a second moderator at 2
    record_vote(at, "item06", "label", "bob", 0)
    assert snapshot(at, require=1) == {"votes": 4, "items": 3, "agreed": 2, "awaiting_agreement": 1,
                                       "require_agreement": 1}
    items, applied = read_items(settings)
    by_id = {r["id"]: r for r in items}
    assert applied == {"moderated_labels": 2, "moderated_changed": 1}
    assert (by_id["item03"]["label"], by_id["item04"]["label"], by_id["item06"]["label"]) == (1, 1, 0)
    roles, report = training_rows(settings, synthetic=False)
    trained = {r["id"]: r["label"] for role in ("train", "val") for r in roles[role]}
    assert trained["item03"] == 1 and trained["item04"] == 1 and report["moderated_labels"] == 2

    record_vote(at, "item06", "label", "carol", 0)              # two agree on 0 now
    assert snapshot(at, require=2)["agreed"] == 1
    items, _ = read_items(settings)
    assert {r["id"]: r["label"] for r in items}["item03"] is None  # one vote is not enough at 2


def test_ingest_writes_the_snapshot_even_with_no_votes(make_settings):
    from mmd import stages

    settings = make_settings(sources=[])
    result = stages.get("ingest").run(settings)
    assert settings.layout.votes.is_file() and settings.layout.moderated.is_file()
    assert result.moderation["votes"] == 0 and json.loads(settings.layout.ingest_report.read_text())["moderation"]
