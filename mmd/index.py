"""Index: the embedded items into the Qdrant-backed store, incrementally and idempotently.

Qdrant is an index, never the only copy: everything here is rebuilt from the
DVC-tracked embeddings (`mmd index --rebuild`). Upserts only new or changed items,
removes items that left the dataset, and makes sure the synthetic-pool collection
exists with the same encoder and mirrors the pool's files. Writes `reports/index.json`
and `<data>/embeddings/indexed.json` (what the store holds, for the stages that read it).
The stages that read the store call `ensure_indexed` first, so a store lost since this
stage ran (DVC does not see it) is rebuilt where it is needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mmd.config import Settings
from mmd.formats.vectors import read_vectors
from mmd.items import ITEM_SCHEMA, now_iso, read_table, sha256_hex
from mmd.results import IndexReport as IndexResult
from mmd.util import write_json

# the payload fields retrieval filters on (indexed in the store) and shows to people
PAYLOAD_FIELDS = ("kind", "source", "label", "split", "ingested_at", "group", "content_hash", "image_path", "text")


@dataclass
class IndexReport:
    backend: str
    collection: str
    encoder: str
    total: int
    upserted: int
    deleted: int
    unchanged: int
    rebuilt: bool
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def sync_items(settings: Settings, store, rebuild: bool = False) -> tuple[int, int, int, int, str, list]:
    """Make the items collection mirror the embeddings (and the synthetic one the pool): upsert what is new or
    changed, delete what left. Returns (points, upserted, deleted, unchanged, encoder, (ids, hashes))."""
    from mmd.formats.pool import sync_synthetic

    cfg = settings.params.index
    at = settings.layout
    vectors_table, mixed, encoder = read_vectors(at.vectors)
    ids = vectors_table.column("id").to_pylist()
    hashes = vectors_table.column("content_hash").to_pylist()
    dim = int(mixed.shape[1])
    store.ensure_collection(cfg.items_collection, dim, encoder, rebuild=rebuild)
    store.ensure_collection(cfg.synthetic_collection, dim, encoder, rebuild=rebuild)
    indexed = store.hashes(cfg.items_collection)
    todo = [n for n, (i, h) in enumerate(zip(ids, hashes)) if indexed.get(i) != h]
    gone = sorted(set(indexed) - set(ids))
    if todo:
        payload_of = {row["id"]: row for row in read_table(at.items, ITEM_SCHEMA).select(["id", *PAYLOAD_FIELDS]).to_pylist()}
        payloads = []
        for n in todo:
            row = payload_of.get(ids[n], {})
            payloads.append({k: row.get(k) for k in PAYLOAD_FIELDS} | {"content_hash": hashes[n],
                            "text": (row.get("text") or "")[:500]})
        store.upsert(cfg.items_collection, [ids[n] for n in todo], mixed[np.array(todo)], payloads, cfg.batch_size)
    deleted = store.delete(cfg.items_collection, gone) if gone else 0
    sync_synthetic(settings, store)  # the pool is mirrored from its files too, so a lost store comes back whole
    return store.count(cfg.items_collection), len(todo), deleted, len(ids) - len(todo), encoder, [ids, hashes]


def ensure_indexed(settings: Settings, store) -> None:
    """Before a stage reads the items collection: a store that was wiped or moved since the index stage (DVC
    cannot see it, the store is not a DVC output) is rebuilt from the files; one that holds what indexed.json
    says is left alone (a count, no scan)."""
    import json

    at = settings.layout
    try:
        expected = json.loads(at.indexed.read_text())["points"]
    except (OSError, ValueError, KeyError):
        expected = None
    name = settings.params.index.items_collection
    if expected is None or store.info(name) is None or store.count(name) != expected:
        sync_items(settings, store)


def run_index(settings: Settings, rebuild: bool = False) -> IndexReport:
    from mmd.store import open_store

    cfg = settings.params.index
    started = time.perf_counter()
    at = settings.layout
    with open_store(settings) as store:
        total, upserted, deleted, unchanged, encoder, (ids, hashes) = sync_items(settings, store, rebuild)
    report = IndexReport(cfg.backend, cfg.items_collection, encoder, total, upserted, deleted, unchanged, rebuild,
                         round(time.perf_counter() - started, 3))
    IndexResult.model_validate({"indexed_at": now_iso(), **report.to_dict()}).write(at)
    # what the store now holds, and nothing about when: the stages that read the store
    # depend on this file, so they rerun when its contents change and only then
    digest = sha256_hex("\n".join(sorted(f"{i}\x1f{h}" for i, h in zip(ids, hashes))))
    write_json(at.indexed, {"backend": cfg.backend, "collection": cfg.items_collection,
                            "encoder": encoder, "points": total, "content": digest})
    return report
