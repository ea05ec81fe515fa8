"""The quarantine: bad input becomes a record with a reason, never a crash or a silent drop.

Each record keeps the raw input it came from (inline when small and UTF-8 text, else whole in
a content-addressed blob beside the table) so a person can fix and re-ingest it.
"""

from __future__ import annotations

import errno
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from mmd.items import now_iso, read_table, sha256_hex, write_table

INLINE_RAW_BYTES = 16_384


class StorageError(OSError):
    """Our own data folder could not be written (disk full, a file where a folder belongs): no
    fault of the input. It names the path; ingest stops the source rather than blame a record."""


@dataclass
class QuarantineRecord:
    stage: str  # ingest | validate
    source: str
    reason_code: str  # short, stable, countable: bad_json, missing_field, image_truncated …
    reason: str  # what a person reads
    ref: str  # where it came from: file:line, URL, item id
    raw: str = ""  # the raw input as text, truncated to INLINE_RAW_BYTES
    raw_sha256: str = ""
    raw_blob: str = ""  # path (relative to the data root) of the whole raw input, when large or binary
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


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_fully(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def store_blob(blob_dir: Path, digest: str, data: bytes) -> Path:
    """Keep `data` whole as `<blob_dir>/<digest>.bin`: written to a temporary file, its digest
    checked, then renamed, so a full disk or a crash never leaves a short file under the name of
    the whole. A blob already there whose digest is wrong (left by an older version) is rewritten.
    An OSError names the path it failed on."""
    from mmd.util import atomic_path

    target = blob_dir / f"{digest}.bin"
    try:
        if target.is_file() and _file_sha256(target) == digest:
            return target
        with atomic_path(target, durable=True) as tmp:
            _write_fully(tmp, data)
            if _file_sha256(tmp) != digest:
                raise OSError(errno.EIO, "the copy does not read back as written")
        return target
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot keep raw input in {target}: {exc.strerror or exc}", str(target)) from None


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
    """Build a record. With `blob_dir`, raw input that is large or not UTF-8 (the inline copy is
    text, so it cannot hold such bytes exactly) is kept whole in a content-addressed blob."""
    raw_bytes = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    digest = sha256_hex(raw_bytes) if raw_bytes else ""
    blob = ""
    if raw_bytes and blob_dir is not None and (len(raw_bytes) > INLINE_RAW_BYTES or not _is_utf8(raw_bytes)):
        target = store_blob(blob_dir, digest, raw_bytes)
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
