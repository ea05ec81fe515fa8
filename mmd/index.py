"""Index: the embedded items into the Qdrant-backed store, incrementally and idempotently.

Qdrant is an index, never the only copy: everything here is rebuilt from the
DVC-tracked embeddings (`mmd index --rebuild`). Upserts only new or changed items,
removes items that left the dataset, and makes sure the synthetic-pool collection
exists with the same encoder and mirrors the pool's files. Writes `reports/index.json`
and `<data>/embeddings/indexed.json` (what the store holds, for the stages that read it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from mmd.config import Settings
from mmd.embed import paths as embed_paths, read_vectors
from mmd.items import ITEM_SCHEMA, now_iso, read_table, sha256_hex
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


def open_index(settings: Settings):
    from mmd.store import open_store

    return open_store(settings.params.index, settings.data_dir)


def run_index(settings: Settings, rebuild: bool = False) -> IndexReport:
    cfg = settings.params.index
    started = time.perf_counter()
    vectors_table, mixed, encoder = read_vectors(embed_paths(settings)["vectors"])
    items = read_table(embed_paths(settings)["input"], ITEM_SCHEMA)
    payload_of = {row["id"]: row for row in items.select(["id", *PAYLOAD_FIELDS]).to_pylist()}
    ids = vectors_table.column("id").to_pylist()
    hashes = vectors_table.column("content_hash").to_pylist()

    store = open_index(settings)
    try:
        dim = int(mixed.shape[1])
        store.ensure_collection(cfg.items_collection, dim, encoder, rebuild=rebuild)
        store.ensure_collection(cfg.synthetic_collection, dim, encoder, rebuild=rebuild)
        indexed = store.hashes(cfg.items_collection)
        todo = [n for n, (i, h) in enumerate(zip(ids, hashes)) if indexed.get(i) != h]
        gone = sorted(set(indexed) - set(ids))
        if todo:
            payloads = []
            for n in todo:
                row = payload_of.get(ids[n], {})
                payloads.append({k: row.get(k) for k in PAYLOAD_FIELDS} | {"content_hash": hashes[n],
                                "text": (row.get("text") or "")[:500]})
            store.upsert(cfg.items_collection, [ids[n] for n in todo], mixed[np.array(todo)], payloads, cfg.batch_size)
        deleted = store.delete(cfg.items_collection, gone) if gone else 0
        total = store.count(cfg.items_collection)
        # the synthetic pool is mirrored from its files too, so a lost store comes back whole
        from mmd.synth.generate import sync_synthetic

        sync_synthetic(settings, store)
    finally:
        store.close()
    report = IndexReport(cfg.backend, cfg.items_collection, encoder, total, len(todo), deleted,
                         len(ids) - len(todo), rebuild, round(time.perf_counter() - started, 3))
    write_json(settings.reports_dir / "index.json", {"indexed_at": now_iso(), **report.to_dict()})
    # what the store now holds, and nothing about when: the stages that read the store
    # depend on this file, so they rerun when its contents change and only then
    digest = sha256_hex("\n".join(sorted(f"{i}\x1f{h}" for i, h in zip(ids, hashes))))
    write_json(embed_paths(settings)["indexed"], {"backend": cfg.backend, "collection": cfg.items_collection,
                                                  "encoder": encoder, "points": total, "content": digest})
    return report
