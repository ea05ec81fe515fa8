"""Ingest: pull every enabled source, dedupe, and append to the items snapshot.

Writes under `<data>/ingested/`: `items.parquet` (every accepted item so far),
`quarantine.parquet` (bad input with reasons), `duplicates.parquet` (what was seen
again, pointing at the item it repeats), and `<data>/state/watermarks.json`. Each run
reconciles per source: in = accepted + quarantined + duplicates + skipped.

One bad record is one quarantine record and one bad file is one (the source reads on); every
item is checked against the table's schema before it may be written. A repeat of an item of
another split is reported per split pair, and kept when its split is in
`ingest.keep_splits_whole`. When every file or page of a source failed for a transient reason,
the run writes everything else and then raises SourceUnavailable, so a retry means something.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mmd.config import Settings
from mmd.images import ImageStore
from mmd.items import ITEM_SCHEMA, Item, items_to_table, normalise_text, now_iso, read_table, sha256_hex, write_table
from mmd.quarantine import QuarantineRecord, append_records, quarantine
from mmd.results import IngestReport
from mmd.sources import SourceContext, Skipped, reader
from mmd.sources.base import SourceUnavailable, schema_problem
from mmd.util import progress, write_json


@dataclass
class SourceReport:
    name: str
    type: str
    seen: int = 0
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    skipped: int = 0
    reasons: Counter = field(default_factory=Counter)
    unknown_ratings: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)
    # repeats of an item of another split, "new split<-split of the item it repeats": dropped
    # or, for a split kept whole, accepted (and counted in cross_split_kept too)
    cross_split_duplicates: Counter = field(default_factory=Counter)
    cross_split_kept: Counter = field(default_factory=Counter)
    error: str | None = None
    unavailable: str | None = None  # why every file or page failed transiently (the run raised SourceUnavailable)

    @property
    def reconciled(self) -> bool:
        return self.seen == self.accepted + self.quarantined + self.duplicates + self.skipped

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "in": self.seen,
            "accepted": self.accepted,
            "quarantined": self.quarantined,
            "duplicates": self.duplicates,
            "skipped": self.skipped,
            "reconciled": self.reconciled,
            "quarantine_reasons": dict(self.reasons),
            "unknown_ratings": dict(self.unknown_ratings),
            "counters": dict(self.counters),
            "cross_split_duplicates": dict(self.cross_split_duplicates),
            "cross_split_kept": dict(self.cross_split_kept),
            "error": self.error,
            "unavailable": self.unavailable,
        }


@dataclass
class IngestResult:
    sources: list[SourceReport]
    items_path: Path
    quarantine_path: Path
    duplicates_path: Path
    total_items: int
    started_at: str
    finished_at: str

    @property
    def accepted(self) -> int:
        return sum(s.accepted for s in self.sources)

    def to_dict(self) -> dict:
        keys = ("seen", "accepted", "quarantined", "duplicates", "skipped")
        return {
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "totals": {("in" if k == "seen" else k): sum(getattr(s, k) for s in self.sources) for k in keys},
            "reconciled": all(s.reconciled for s in self.sources),
            "total_items": self.total_items,
            "sources": [s.to_dict() for s in self.sources],
        }


def image_key(kind: str, image_sha256: str | None, text: str, label: int | None) -> str | None:
    """Same image bytes, same text, same label: the same meme dropped in twice."""
    if not image_sha256:
        return None
    return sha256_hex(f"{kind}\x1f{image_sha256}\x1f{normalise_text(text)}\x1f{label}")


def _item_image_key(item: Item) -> str | None:
    return image_key(item.kind, item.image_sha256, item.text, item.label)


def split_pair(new: str | None, old: str | None) -> str:
    return f"{new or 'none'}<-{old or 'none'}"


class _Deduper:
    """Knows every accepted item by id and by image key (with its split), across runs."""

    def __init__(self, existing: pa.Table, by_image: bool):
        self.by_image = by_image
        cols = existing.select(["id", "content_hash", "split"]).to_pydict()
        self.content = {i: (h, sp) for i, h, sp in zip(cols["id"], cols["content_hash"], cols["split"])}
        self.images: dict[str, tuple[str, str | None]] = {}
        if by_image and existing.num_rows:
            for row in existing.select(["id", "kind", "image_sha256", "text", "label", "split"]).to_pylist():
                key = image_key(row["kind"], row["image_sha256"], row["text"], row["label"])
                if key:
                    self.images.setdefault(key, (row["id"], row["split"]))

    def check(self, item: Item) -> tuple[str, str | None, str | None]:
        """('new' | 'duplicate_id' | 'duplicate_image' | 'id_conflict', the item it repeats, that item's split)."""
        known = self.content.get(item.id)
        if known is not None:
            return ("duplicate_id" if known[0] == item.content_hash else "id_conflict"), item.id, known[1]
        key = _item_image_key(item) if self.by_image else None
        if key and key in self.images:
            other, split = self.images[key]
            return "duplicate_image", other, split
        return "new", None, None

    def add(self, item: Item) -> None:
        self.content[item.id] = (item.content_hash, item.split)
        key = _item_image_key(item) if self.by_image else None
        if key:
            self.images.setdefault(key, (item.id, item.split))


def _flag_leak(item: Item, other: str, other_split: str | None) -> None:
    """Say in the kept item which item of which split it repeats (extra is not in its content hash)."""
    extra = json.loads(item.extra or "{}")
    extra.update(repeats_item=other, repeats_split=other_split)
    item.extra = json.dumps(extra, sort_keys=True, ensure_ascii=False)


def run_ingest(settings: Settings, only: list[str] | None = None, show_progress: bool = True) -> IngestResult:
    """Pull new records from every enabled source (or those named in `only`).

    Raises SourceUnavailable (after writing every output) when every file or page of a source
    failed for a transient reason; the result is on the exception as `.result`."""
    cfg = settings.params.ingest
    at = settings.layout
    started = now_iso()
    existing = read_table(at.items_ingested, ITEM_SCHEMA)
    dedupe = _Deduper(existing, cfg.dedupe_by_image)
    watermarks = json.loads(at.watermarks.read_text()) if at.watermarks.exists() else {}
    images = ImageStore(settings.data_dir, cfg.images)
    keep_whole = set(cfg.keep_splits_whole)

    names = {s.name for s in cfg.sources}
    unknown = sorted(set(only or []) - names)
    if unknown:
        raise ValueError(f"no source named {', '.join(unknown)} in the params (have: {', '.join(sorted(names)) or 'none'})")

    new_items: list[Item] = []
    bad: list[QuarantineRecord] = []
    dupes: list[QuarantineRecord] = []
    reports: list[SourceReport] = []
    unavailable: dict[str, str] = {}
    for source in cfg.sources:
        if not source.enabled or (only and source.name not in only):
            continue
        report = SourceReport(source.name, source.type)
        state = json.loads(json.dumps(watermarks.get(source.name, {})))  # a copy: kept only on success
        ctx = SourceContext(settings, cfg, source.name, source.type, images, state)
        try:
            for result in progress(reader(source.type)(ctx, source), f"ingest {source.name}", show_progress):
                report.seen += 1
                if isinstance(result, Item) and (problem := schema_problem(result)):
                    # the last door before the Parquet write: nothing that does not fit gets through
                    result = ctx.quarantine("bad_field", problem, result.native_id or str(result.id),
                                            json.dumps(result.to_row(), ensure_ascii=False, default=repr))
                if isinstance(result, QuarantineRecord):
                    report.quarantined += 1
                    report.reasons[result.reason_code] += 1
                    bad.append(result)
                elif isinstance(result, Skipped):
                    report.skipped += 1
                    report.counters[f"skipped_{result.reason_code}"] += 1
                else:
                    verdict, other, other_split = dedupe.check(result)
                    crosses = verdict in ("duplicate_id", "duplicate_image") and other_split != result.split
                    if crosses:
                        report.cross_split_duplicates[split_pair(result.split, other_split)] += 1
                    if crosses and verdict == "duplicate_image" and result.split in keep_whole:
                        # a split kept whole (a benchmark's test set) keeps its repeat, and says so
                        _flag_leak(result, other, other_split)
                        report.cross_split_kept[split_pair(result.split, other_split)] += 1
                        verdict = "new"
                    if verdict == "new":
                        dedupe.add(result)
                        new_items.append(result)
                        report.accepted += 1
                    elif verdict == "id_conflict":
                        report.quarantined += 1
                        report.reasons["id_conflict"] += 1
                        bad.append(ctx.quarantine(
                            "id_conflict",
                            f"another record already has id {result.id} with different content; the first is kept",
                            result.native_id or result.id, json.dumps(result.to_row(), ensure_ascii=False), result.id,
                        ))
                    else:
                        report.duplicates += 1
                        report.counters[verdict] += 1
                        where = f" (split {other_split or 'none'}; this one: {result.split or 'none'})" if crosses else ""
                        dupes.append(quarantine("ingest", source.name, verdict, f"repeats item {other}{where}",
                                                result.native_id or result.id, result.content_hash, other))
        except Exception as exc:  # a broken source must not take the others down with it
            report.error = f"{type(exc).__name__}: {exc}"
            report.seen += 1
            report.quarantined += 1
            report.reasons["source_error"] += 1
            bad.append(ctx.quarantine("source_error", f"the source stopped: {report.error}", source.name))
        else:
            if ctx.unavailable:
                unavailable[source.name] = ctx.unavailable
                report.unavailable = ctx.unavailable
            else:
                watermarks[source.name] = {**state, "last_run": started}
        report.unknown_ratings = ctx.unknown_ratings
        report.counters.update(ctx.counters)
        reports.append(report)

    # the tables first, the watermark last: a crash in between re-reads, and dedupe absorbs it
    if new_items:
        write_table(pa.concat_tables([existing, items_to_table(new_items)]), at.items_ingested)
    elif not at.items_ingested.exists():
        write_table(existing, at.items_ingested)
    append_records(at.ingest_quarantine, bad)
    append_records(at.duplicates, dupes)
    try:  # a DVC output even when no picture came (every source refused)
        at.images.mkdir(parents=True, exist_ok=True)
    except OSError:  # not a folder, or not writable: each source that needed it has said so
        pass
    write_json(at.watermarks, watermarks)
    result = IngestResult(reports, at.items_ingested, at.ingest_quarantine, at.duplicates,
                          existing.num_rows + len(new_items), started, now_iso())
    IngestReport.model_validate(result.to_dict()).write(at)
    if unavailable:
        raise SourceUnavailable(unavailable, result)
    return result


def item_counts(table: pa.Table) -> dict[str, dict[str, int]]:
    """Items per source, kind and label: what `mmd status` shows."""
    out: dict[str, dict[str, int]] = {}
    for col in ("source", "kind", "label"):
        if table.num_rows:
            vc = pc.value_counts(table.column(col)).to_pylist()
            out[col] = {str(v["values"]): v["counts"] for v in vc}
        else:
            out[col] = {}
    return out
