"""The quarantine: bad input becomes a record with a reason, never a crash or a silent drop.

Each record keeps the raw input it came from (inline when small, else in a
content-addressed blob beside the table) so a person can fix and re-ingest it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from mmd.items import now_iso, read_table, sha256_hex, write_table

INLINE_RAW_BYTES = 16_384


@dataclass
class QuarantineRecord:
    stage: str  # ingest | validate
    source: str
    reason_code: str  # short, stable, countable: bad_json, missing_field, image_truncated …
    reason: str  # what a person reads
    ref: str  # where it came from: file:line, URL, item id
    raw: str = ""  # the raw input, truncated to INLINE_RAW_BYTES
    raw_sha256: str = ""
    raw_blob: str = ""  # path (relative to the data root) of the full raw input, when large
    item_id: str | None = None
    quarantined_at: str = field(default_factory=now_iso)

    @property
    def key(self) -> str:
        """Same input, same reason: one record, however often it is re-read."""
        return sha256_hex(f"{self.stage}\x1f{self.source}\x1f{self.ref}\x1f{self.reason_code}\x1f{self.raw_sha256}")


QUARANTINE_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("stage", pa.string()),
        ("source", pa.string()),
        ("reason_code", pa.string()),
        ("reason", pa.string()),
        ("ref", pa.string()),
        ("raw", pa.large_string()),
        ("raw_sha256", pa.string()),
        ("raw_blob", pa.string()),
        ("item_id", pa.string()),
        ("quarantined_at", pa.string()),
    ]
)


def quarantine(
    stage: str,
    source: str,
    reason_code: str,
    reason: str,
    ref: str,
    raw: bytes | str = b"",
    item_id: str | None = None,
    blob_dir: Path | None = None,
    data_root: Path | None = None,
) -> QuarantineRecord:
    """Build a record; a raw payload too large to inline is kept whole in `blob_dir`."""
    raw_bytes = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    digest = sha256_hex(raw_bytes) if raw_bytes else ""
    blob = ""
    if len(raw_bytes) > INLINE_RAW_BYTES and blob_dir is not None:
        blob_dir.mkdir(parents=True, exist_ok=True)
        target = blob_dir / f"{digest}.bin"
        if not target.exists():
            target.write_bytes(raw_bytes)
        blob = str(target.relative_to(data_root)) if data_root else str(target)
    inline = raw_bytes[:INLINE_RAW_BYTES].decode("utf-8", "replace")
    return QuarantineRecord(stage, source, reason_code, reason, ref, inline, digest, blob, item_id)


def append_records(path: Path, records: Iterable[QuarantineRecord]) -> int:
    """Append to a quarantine table, skipping records already there; returns how many were new."""
    existing = read_table(path, QUARANTINE_SCHEMA)
    seen = set(existing.column("key").to_pylist())
    rows = []
    for r in records:
        if r.key in seen:
            continue
        seen.add(r.key)
        rows.append({"key": r.key, **asdict(r)})
    if rows:
        new = pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)
        write_table(pa.concat_tables([existing, new]), path)
    elif not path.exists():
        write_table(existing, path)
    return len(rows)
