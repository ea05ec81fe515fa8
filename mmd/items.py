"""The one record type every source maps into, and its Parquet form."""

from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from mmd.util import read_parquet

Kind = Literal["fact_check", "meme", "post"]
KINDS: tuple[str, ...] = ("fact_check", "meme", "post")


def sha256_hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8")
    return hashlib.sha256(data).hexdigest()


def normalise_text(text: str) -> str:
    """NFC, trimmed, inner whitespace collapsed: what content identity is computed on."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def make_item_id(source_family: str, native_id: str | None, text: str, image_sha256: str | None) -> str:
    """A stable id: the source's own id where it has one, else the content itself.

    Re-ingesting the same record gives the same id, so ingestion is idempotent.
    """
    key = native_id if native_id else f"{normalise_text(text)}\x1f{image_sha256 or ''}"
    return sha256_hex(f"{source_family}\x1e{key}")[:24]


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class Item:
    id: str
    source: str  # the configured source's name
    source_family: str  # claimreview, factcheck_api, memes, mediaeval
    kind: str  # one of KINDS
    text: str
    native_id: str | None = None
    image_path: str | None = None  # relative to the data root, content-addressed
    image_sha256: str | None = None
    image_width: int | None = None
    image_height: int | None = None
    label: int | None = None  # 1 = misinformation / harmful, 0 = not, None = unknown
    label_original: str | None = None
    language: str | None = None
    url: str | None = None
    publisher: str | None = None
    published_at: str | None = None  # when the fact-check / post was published
    claim_date: str | None = None  # when the reviewed claim was made
    ingested_at: str = field(default_factory=now_iso)
    split: str | None = None
    # items that must stay on one side of a split (an event, a shared image)
    group: str | None = None
    extra: str = "{}"  # JSON: whatever else the source said that is worth keeping
    content_hash: str = ""

    def finalise(self) -> "Item":
        """Fill the content hash: what decides 'same id, different content'."""
        self.content_hash = sha256_hex(
            "\x1f".join(
                [
                    self.kind,
                    normalise_text(self.text),
                    self.image_sha256 or "",
                    "" if self.label_original is None else self.label_original,
                    self.url or "",
                ]
            )
        )
        return self

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


ITEM_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("source_family", pa.string()),
        ("kind", pa.string()),
        ("text", pa.large_string()),
        ("native_id", pa.string()),
        ("image_path", pa.string()),
        ("image_sha256", pa.string()),
        ("image_width", pa.int32()),
        ("image_height", pa.int32()),
        ("label", pa.int8()),
        ("label_original", pa.string()),
        ("language", pa.string()),
        ("url", pa.string()),
        ("publisher", pa.string()),
        ("published_at", pa.string()),
        ("claim_date", pa.string()),
        ("ingested_at", pa.string()),
        ("split", pa.string()),
        ("group", pa.string()),
        ("extra", pa.string()),
        ("content_hash", pa.string()),
    ]
)
assert [f.name for f in fields(Item)] == ITEM_SCHEMA.names


def items_to_table(items: Iterable[Item]) -> pa.Table:
    rows = [i.to_row() for i in items]
    return pa.Table.from_pylist(rows, schema=ITEM_SCHEMA)


def read_table(path: Path, schema: pa.Schema) -> pa.Table:
    if not path.exists():
        return schema.empty_table()
    table = read_parquet(path)
    if table.schema.equals(schema, check_metadata=False):
        return table.replace_schema_metadata(schema.metadata)
    return pq.read_table(path, schema=schema)  # a file of another schema: the dataset layer reconciles them


def write_table(table: pa.Table, path: Path) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    from mmd.util import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def extra_json(**values: Any) -> str:
    return json.dumps({k: v for k, v in values.items() if v not in (None, "", [], {})}, sort_keys=True, ensure_ascii=False)
