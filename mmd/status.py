"""What `mmd status` reports: per source counts, watermark and quarantine reasons."""

from __future__ import annotations

import json
from collections import Counter

from mmd.config import Settings
from mmd.ingest import item_counts
from mmd.items import ITEM_SCHEMA, read_table
from mmd.quarantine import QUARANTINE_SCHEMA


def _watermark(state: dict) -> str | None:
    if state.get("max_review_date"):
        return f"reviews since {state['max_review_date']}"
    if state.get("files"):
        return f"{len(state['files'])} files read"
    if state.get("url_digest"):
        return f"url digest {state['url_digest'][:12]}"
    return None


def collect_status(settings: Settings) -> dict:
    at = settings.layout
    items = read_table(at.items_ingested, ITEM_SCHEMA)
    quarantine = read_table(at.ingest_quarantine, QUARANTINE_SCHEMA)
    validated_q = read_table(at.validate_quarantine, QUARANTINE_SCHEMA)
    marks = json.loads(at.watermarks.read_text()) if at.watermarks.exists() else {}
    per_source = Counter(items.column("source").to_pylist())
    reasons: dict[str, Counter] = {}
    for table in (quarantine, validated_q):
        for src, code in zip(table.column("source").to_pylist(), table.column("reason_code").to_pylist()):
            reasons.setdefault(src, Counter())[code] += 1
    sources = []
    for s in settings.params.ingest.sources:
        state = marks.get(s.name, {})
        r = reasons.get(s.name, Counter())
        sources.append({
            "name": s.name,
            "type": s.type,
            "enabled": s.enabled,
            "items": per_source.get(s.name, 0),
            "last_run": state.get("last_run"),
            "watermark": _watermark(state),
            "watermark_state": {k: v for k, v in state.items() if k != "files"} | {"files": len(state.get("files", {}))},
            "quarantined": sum(r.values()),
            "quarantine_reasons": dict(r.most_common()),
        })
    vreport = at.validation_report
    return {
        "data_dir": str(settings.data_dir),
        "items": items.num_rows,
        "counts": item_counts(items),
        "sources": sources,
        "validation": json.loads(vreport.read_text()) if vreport.exists() else None,
    }
