"""The synthetic pool on disk, and its mirror in the store.

`<data>/synthetic/`: pool.parquet (items + provenance: generator, parent ids, seed), vectors.parquet
(their mixed vectors), attempts.parquet (which parent each generator tried), images/ (rendered memes).
The `synthetic` collection of the store mirrors the files (`sync_synthetic`): Qdrant is an index, never
the copy. The selected set (`<data>/selected/selected.parquet`) has the pool's columns plus its rank.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mmd.config import Settings
from mmd.formats.vectors import read_vectors
from mmd.items import ITEM_SCHEMA, read_table
from mmd.util import read_parquet

SYNTH_SCHEMA = ITEM_SCHEMA.append(pa.field("generator", pa.string())) \
    .append(pa.field("parent_ids", pa.list_(pa.string()))) \
    .append(pa.field("seed", pa.int64()))
ATTEMPT_SCHEMA = pa.schema([("generator", pa.string()), ("parent_id", pa.string()), ("produced", pa.int32()),
                            ("reason", pa.string()), ("attempted_at", pa.string())])

# what the synthetic collection carries beside the vector: filters and provenance
PAYLOAD_FIELDS = ("kind", "source", "label", "split", "group", "generator", "content_hash", "image_path", "text")



def read_pool(settings: Settings) -> pa.Table:
    return read_table(settings.layout.pool, SYNTH_SCHEMA)


def read_selected(settings: Settings) -> list[dict[str, Any]]:
    """The selected synthetic rows (empty when nothing was selected)."""
    path = settings.layout.selected
    return read_parquet(path).to_pylist() if path.exists() else []


def read_pool_vectors(path: Path, encoder: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    if not path.exists():
        return [], [], np.zeros(0, bool), np.zeros((0, 0), np.float32)
    table, mixed, made_by = read_vectors(path)
    if made_by != encoder:
        raise ValueError(f"the synthetic pool's vectors were made by {made_by}, but embed is configured for {encoder}: "
                         f"move {path.parent} aside to start a new pool for the new encoder")
    return (table.column("id").to_pylist(), table.column("content_hash").to_pylist(),
            table.column("has_image").to_numpy(zero_copy_only=False), mixed)


def sync_synthetic(settings: Settings, store) -> int:
    """Make the synthetic collection mirror the pool files (Qdrant is an index, never the copy); returns upserts."""
    path = settings.layout.pool_vectors
    if not path.exists():
        return 0
    table, mixed, encoder = read_vectors(path)
    name = settings.params.index.synthetic_collection
    store.ensure_collection(name, int(mixed.shape[1]), encoder)
    indexed = store.hashes(name)
    ids = table.column("id").to_pylist()
    hashes = table.column("content_hash").to_pylist()
    todo = [n for n, (i, h) in enumerate(zip(ids, hashes)) if indexed.get(i) != h]
    if todo:
        pool = read_pool(settings).select(["id", *[f for f in PAYLOAD_FIELDS if f != "generator"], "generator",
                                           "parent_ids"])
        rows = {r["id"]: r for r in pool.to_pylist()}
        payloads = [{k: rows[ids[n]].get(k) for k in PAYLOAD_FIELDS} | {"text": (rows[ids[n]]["text"] or "")[:500],
                    "parent_ids": rows[ids[n]]["parent_ids"]} for n in todo]
        store.upsert(name, [ids[n] for n in todo], mixed[np.array(todo)], payloads,
                     settings.params.index.batch_size)
    gone = sorted(set(indexed) - set(ids))
    if gone:
        store.delete(name, gone)
    return len(todo)


def pool_rows(settings: Settings, ids: list[str]) -> list[dict[str, Any]]:
    """The pool's rows for these synthetic ids, in that order."""
    by_id = {r["id"]: r for r in read_pool(settings).to_pylist()}
    return [by_id[i] for i in ids]
