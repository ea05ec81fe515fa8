"""The review stage and the queue it keeps (`<data>/review/queue.parquet`).

Each cycle, after the gate, every champion (the models in service) scores the validated items no review
stage scored before (the first time: all of them; `review/scored.parquet` remembers). Of those,
`review.size` join the queue: a `review.likely_share` of them with the highest score (the most likely
harmful or false), the rest by uncertainty, max(1 - 2|mean - 0.5|, max - min): a mean score near 0.5, or
champions that disagree, is where a label teaches the models most. The queue keeps every item once,
across cycles (by item id), with the picture, text, source, URL, a fact-check's verdict and publisher,
the champions' scores and the item's state from the moderators' votes (open, labelled, skipped; the
label, by whom, when). The app shows the queue with the votes cast since (`queue_view`).
"""

from __future__ import annotations

import json
from typing import Iterable

import pyarrow as pa

from mmd.config import Settings
from mmd.items import ITEM_SCHEMA, now_iso, read_table, write_table
from mmd.results import ReviewReport
from mmd.review.votes import Tally, read_votes, tally

QUEUE_SCHEMA = pa.schema([
    ("id", pa.string()), ("kind", pa.string()), ("source", pa.string()), ("text", pa.large_string()),
    ("image_path", pa.string()), ("url", pa.string()), ("label_original", pa.string()), ("publisher", pa.string()),
    ("source_label", pa.int8()), ("role", pa.string()),
    ("reason", pa.string()), ("priority", pa.float32()), ("score", pa.float32()), ("mean", pa.float32()),
    ("spread", pa.float32()), ("scores", pa.string()), ("queued_at", pa.string()),
    ("state", pa.string()), ("label", pa.int8()), ("by", pa.string()), ("at", pa.string()), ("votes", pa.int32()),
])
SCORED_SCHEMA = pa.schema([("id", pa.string()), ("scored_at", pa.string()), ("scores", pa.string())])
STATES = ("open", "labelled", "skipped")
DISAGREEMENT = 0.5   # champions this far apart are shown as disagreeing (their mean may well be near 0.5)


def uncertainty(scores: dict[str, float]) -> tuple[float, float, float]:
    """(mean, spread, uncertainty) of the champions' scores of one item."""
    values = list(scores.values())
    mean = sum(values) / len(values)
    spread = max(values) - min(values)
    return mean, spread, max(1.0 - 2.0 * abs(mean - 0.5), spread)


def rank(candidates: list[dict], size: int, likely_share: float) -> list[tuple[dict, str, float]]:
    """The candidates ({"row", "scores": {family: P(label 1)}}) that join the queue, as (candidate, reason,
    priority): the `likely_share` with the highest score first, then the most uncertain."""
    size = min(size, len(candidates))
    if size <= 0:
        return []
    n_likely = min(size, round(size * likely_share))
    by_score = sorted(candidates, key=lambda c: (-max(c["scores"].values()), c["row"]["id"]))
    picked = [(c, "likely", max(c["scores"].values())) for c in by_score[:n_likely]]
    taken = {c["row"]["id"] for c, _, _ in picked}
    rest = sorted((c for c in candidates if c["row"]["id"] not in taken),
                  key=lambda c: (-uncertainty(c["scores"])[2], c["row"]["id"]))
    for c in rest[:size - n_likely]:
        _, spread, u = uncertainty(c["scores"])
        picked.append((c, "disagreement" if spread >= DISAGREEMENT else "uncertain", u))
    return picked


def _queue_row(candidate: dict, reason: str, priority: float, versions: dict[str, int], at: str, role: str) -> dict:
    row, scores = candidate["row"], candidate["scores"]
    mean, spread, _ = uncertainty(scores)
    return {
        "id": row["id"], "kind": row["kind"], "source": row["source"], "text": row["text"],
        "image_path": row.get("image_path"), "url": row.get("url"), "label_original": row.get("label_original"),
        "publisher": row.get("publisher"), "source_label": row.get("label"), "role": role,
        "reason": reason, "priority": float(priority), "score": max(scores.values()), "mean": mean, "spread": spread,
        "scores": json.dumps({f: {"version": versions[f], "score": round(float(s), 6)} for f, s in scores.items()},
                             sort_keys=True),
        "queued_at": at, "state": "open", "label": None, "by": None, "at": None, "votes": 0,
    }


def apply_votes(rows: Iterable[dict], tallies: dict[str, Tally]) -> list[dict]:
    """The queue rows with their state from the votes (rows nobody acted on are open)."""
    out = []
    for row in rows:
        t = tallies.get(row["id"])
        if t is None:
            out.append({**row, "state": "open", "label": None, "by": None, "at": None, "votes": 0})
        else:
            out.append({**row, "state": t.state, "label": t.label, "by": t.by or None, "at": t.at, "votes": t.votes})
    return out


def champions(settings: Settings) -> dict:
    """The champion of every family this cycle trains that has one: family -> registry Version."""
    from mmd.registry import Registry

    at = settings.layout
    if not at.registry.exists():
        return {}
    reg = Registry(at.registry)
    return {f: v for f in settings.params.evaluate.families if (v := reg.champion(f)) is not None}


def _role(row: dict, train_cfg) -> str:
    from mmd.models.data import in_holdout

    if in_holdout(row, train_cfg):
        return "holdout"  # a label here sharpens the evaluation; no detector trains on it
    return "val" if (row.get("split") or "") in train_cfg.splits.val else "train"


def run_review(settings: Settings, log=None) -> ReviewReport:
    """The review stage (see the module docstring)."""
    from mmd.models.serving import load_predictor
    from mmd.scale.engine import open_engine
    from mmd.scale.score import score_rows

    cfg, at = settings.params.review, settings.layout
    now = now_iso()
    rows = read_table(at.items, ITEM_SCHEMA).to_pylist()
    scored = read_table(at.review_scored, SCORED_SCHEMA).to_pylist()
    seen = {r["id"] for r in scored}
    fresh = [r for r in rows if r["id"] not in seen]
    champs = champions(settings)
    queue = read_table(at.review_queue, QUEUE_SCHEMA).to_pylist()
    report = ReviewReport(reviewed_at=now, items=len(rows), fresh=len(fresh),
                          champions={f: v.number for f, v in champs.items()})
    if fresh and champs:
        if log:
            log(f"review: scoring {len(fresh)} fresh items with {', '.join(f'{f} v{v.number}' for f, v in champs.items())}")
        with open_engine(settings.params.scale) as engine:  # sharded over Dask workers with `scale.engine: dask`
            per_family = {f: score_rows(settings, f, v.path, load_predictor(settings, f, v.path), fresh, engine)
                          for f, v in champs.items()}
        candidates = [{"row": r, "scores": {f: float(s[n]) for f, s in per_family.items()}} for n, r in enumerate(fresh)]
        scored += [{"id": c["row"]["id"], "scored_at": now, "scores": json.dumps(c["scores"], sort_keys=True)}
                   for c in candidates]
        if cfg.skip_labelled:
            candidates = [c for c in candidates if c["row"].get("label") is None]
        queued = {q["id"] for q in queue}
        versions = {f: v.number for f, v in champs.items()}
        added = [_queue_row(c, reason, p, versions, now, _role(c["row"], settings.params.train))
                 for c, reason, p in rank(candidates, cfg.size, cfg.likely_share) if c["row"]["id"] not in queued]
        queue += added
        report.scored, report.added = len(fresh), len(added)
        report.reasons = {r: sum(1 for a in added if a["reason"] == r) for r in ("likely", "uncertain", "disagreement")}
    elif fresh:
        report.note = "no champion in service: nothing was scored; these items wait for the first promotion"
    queue = apply_votes(queue, tally(read_votes(at.votes), cfg.require_agreement))
    write_table(pa.Table.from_pylist(queue, schema=QUEUE_SCHEMA), at.review_queue)
    write_table(pa.Table.from_pylist(scored, schema=SCORED_SCHEMA), at.review_scored)
    report.queue = len(queue)
    report.states = {s: sum(1 for q in queue if q["state"] == s) for s in STATES}
    report.write(at)
    return report


def queue_view(settings: Settings, state: str = "open", user: str | None = None) -> list[dict]:
    """The queue as moderators see it now: the stage's rows with every vote cast since, highest priority
    first. `state`: open, labelled, skipped or all; with `user`, open items that user already acted on
    are left out (they wait for someone else's vote). Each row carries its `tally` and decoded `scores`."""
    at = settings.layout
    tallies = tally(read_votes(at.votes), settings.params.review.require_agreement)
    rows = apply_votes(read_table(at.review_queue, QUEUE_SCHEMA).to_pylist(), tallies)
    out = []
    for row in rows:
        t = tallies.get(row["id"]) or Tally()
        if state != "all" and row["state"] != state:
            continue
        if state == "open" and user and user in t.acted:
            continue
        out.append({**row, "tally": t, "scores": json.loads(row["scores"] or "{}")})
    return sorted(out, key=lambda r: (-(r["priority"] or 0.0), r["id"]))
