"""The validated items as the app shows them: by id, with the label moderators agreed on (their latest
votes, under `review.require_agreement`) in place of the source's. Re-read when a file changes."""

from __future__ import annotations

import threading

from mmd.config import Settings
from mmd.items import ITEM_SCHEMA, read_table

_lock = threading.Lock()
_cache: dict[str, tuple[tuple, dict]] = {}


def _stamp(settings: Settings) -> tuple:
    at = settings.layout
    return tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None for p in (at.items, at.votes))


def item_catalog(settings: Settings) -> dict[str, dict]:
    """id -> the item's row, with `label` (agreed moderators' label, else the source's) and `label_by`."""
    from mmd.review.votes import read_votes, tally

    key = str(settings.layout.items)
    stamp = _stamp(settings)
    with _lock:
        cached = _cache.get(key)
        if cached and cached[0] == stamp:
            return cached[1]
        agreed = {i: t.label for i, t in tally(read_votes(settings.layout.votes),
                                                settings.params.review.require_agreement).items() if t.agreed}
        rows = {}
        for r in read_table(settings.layout.items, ITEM_SCHEMA).to_pylist():
            if r["id"] in agreed:
                r["label"], r["label_by"] = agreed[r["id"]], "moderators"
            else:
                r["label_by"] = "source" if r["label"] is not None else None
            rows[r["id"]] = r
        _cache[key] = (stamp, rows)
        return rows
