"""The moderators' votes: an append-only log of what each moderator did to an item (label it 0 or 1, or
skip it), the agreement rule that turns votes into a training label, and the snapshot ingest takes.

- `<data>/moderation/votes.jsonl` is the log, one JSON object a line (`item_id`, `action` label | skip,
  `label`, `by`, `at`). The app appends to it, rewriting the file atomically under a lock (so a copy DVC
  cached is never changed in place); it is an output of ingest, so DVC sees a new vote, reruns ingest and
  versions the log with the cycle.
- A moderator's latest action on an item is the one that counts (people change their minds). A label
  trains when `review.require_agreement` moderators gave it and more gave it than the other label.
- Ingest writes the agreed labels to `<data>/moderation/labels.parquet`; training, evaluation and the gate
  read them from there (`moderated_labels`): a moderator's agreed label overrides a source's label.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from mmd.items import now_iso, read_table, write_table
from mmd.layout import Layout
from mmd.util import atomic_write_text, file_lock

ACTIONS = ("label", "skip")
MODERATED_SCHEMA = pa.schema([("id", pa.string()), ("label", pa.int8()), ("votes", pa.int32()),
                              ("by", pa.string()), ("at", pa.string())])


def read_votes(path: Path) -> list[dict]:
    """Every vote in the log, oldest first; a torn or foreign line is passed over."""
    if not path.is_file():
        return []
    votes = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            v = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(v, dict) and v.get("action") in ACTIONS and v.get("item_id") and v.get("by"):
            votes.append(v)
    return votes


def record_vote(layout: Layout, item_id: str, action: str, by: str, label: int | None = None) -> dict:
    """Append one moderator's action to the log (atomically: the whole file is rewritten under a lock)."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    if action == "label" and label not in (0, 1):
        raise ValueError(f"a label is 0 or 1, got {label!r}")
    if not by:
        raise ValueError("a vote needs the moderator's name")
    vote = {"item_id": str(item_id), "action": action, "label": int(label) if action == "label" else None,
            "by": by, "at": now_iso()}
    path = layout.votes
    with file_lock(path.with_name(".votes.lock")):
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        if old and not old.endswith("\n"):
            old += "\n"
        atomic_write_text(path, old + json.dumps(vote, sort_keys=True) + "\n")
    return vote


@dataclass
class Tally:
    """Where an item stands with the moderators."""

    state: str = "open"                 # open | labelled (an agreed label) | skipped (skipped, never labelled)
    label: int | None = None            # the agreed label; else the latest label given, if any
    agreed: bool = False
    by: str = ""                        # who gave the agreed label (or the latest actor)
    at: str | None = None               # the latest vote
    votes: int = 0                      # moderators who gave the agreed (or latest) label
    labels: dict[str, int] = field(default_factory=dict)   # each moderator's latest label
    acted: set[str] = field(default_factory=set)            # everyone who labelled or skipped it


def tally(votes: list[dict], require: int = 1) -> dict[str, Tally]:
    """Per item id, its state under the agreement rule (see the module docstring)."""
    latest: dict[str, dict[str, dict]] = {}
    for n, v in enumerate(votes):  # the log's order is the order things happened (times are to the second)
        latest.setdefault(v["item_id"], {})[v["by"]] = {**v, "_n": n}
    out = {}
    for item_id, by_user in latest.items():
        labels = {u: int(v["label"]) for u, v in by_user.items() if v["action"] == "label" and v.get("label") in (0, 1)}
        counts = Counter(labels.values())
        agreed = next((lab for lab in (1, 0) if counts[lab] >= require and counts[lab] > counts[1 - lab]), None)
        newest = max(by_user.values(), key=lambda v: v["_n"])
        t = Tally(at=newest["at"], labels=labels, acted=set(by_user))
        if agreed is not None:
            t.state, t.label, t.agreed, t.votes = "labelled", agreed, True, counts[agreed]
            t.by = ", ".join(sorted(u for u, lab in labels.items() if lab == agreed))
        elif labels:
            last = max((v for v in by_user.values() if v["action"] == "label"), key=lambda v: v["_n"])
            t.label, t.by, t.votes = int(last["label"]), last["by"], counts[int(last["label"])]
        else:
            t.state, t.by = "skipped", newest["by"]
        out[item_id] = t
    return out


def snapshot(layout: Layout, require: int) -> dict:
    """Ingest's step: the agreed labels of the log into `moderation/labels.parquet` (both files always exist
    afterwards: DVC expects its outputs). Returns what it found."""
    if not layout.votes.exists():
        layout.votes.parent.mkdir(parents=True, exist_ok=True)
        layout.votes.touch()
    votes = read_votes(layout.votes)
    tallies = tally(votes, require)
    rows = [{"id": i, "label": t.label, "votes": t.votes, "by": t.by, "at": t.at}
            for i, t in sorted(tallies.items()) if t.agreed]
    table = pa.Table.from_pylist(rows, schema=MODERATED_SCHEMA)
    if not layout.moderated.exists() or not read_table(layout.moderated, MODERATED_SCHEMA).equals(table):
        write_table(table, layout.moderated)  # unchanged labels leave the file (and DVC's hash) alone
    return {"votes": len(votes), "items": len(tallies), "agreed": len(rows),
            "awaiting_agreement": sum(1 for t in tallies.values() if t.labels and not t.agreed),
            "require_agreement": require}


def moderated_labels(layout: Layout) -> dict[str, int]:
    """The labels moderators agreed on as of the last ingest: item id -> 0 or 1."""
    table = read_table(layout.moderated, MODERATED_SCHEMA)
    return dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist()))
