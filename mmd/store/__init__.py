"""The Qdrant-backed vector store: one interface, three ways to run it.

    from mmd.store import open_store
    with open_store(settings) as store:            # or open_store(cfg.index, data_dir)
        store.ensure_collection("items", dim=512, encoder="open_clip:ViT-B-32/laion2b")
        store.upsert("items", ids, vectors, payloads)
        hits = store.search("items", query, k=10, filter={"label": 1, "split": ["train", "dev"]})

`index.backend` picks the engine: `embedded` (default) runs Qdrant's engine in-process
through qdrant-edge, `local` is qdrant-client's local mode, `server` a Qdrant server at
`index.url` with the API key from `$<index.api_key_env>`. The two on-disk backends keep
to their own sub-folder of `<data>/<index.path>`, so switching between them never mixes
files. Qdrant is an index, never the only copy: every collection can be rebuilt from the
embeddings (`mmd index --rebuild`).
"""

from __future__ import annotations

import os
from pathlib import Path

from mmd.config import IndexConfig, Settings
from mmd.store.base import PAYLOAD_INDEXES, Hit, StoreError, VectorStore, point_id

__all__ = ["Hit", "PAYLOAD_INDEXES", "StoreError", "VectorStore", "open_store", "point_id", "store_path"]


def store_path(cfg: IndexConfig, data_dir: Path) -> Path:
    """The folder an on-disk backend keeps its collections in."""
    return Path(data_dir) / cfg.path / cfg.backend


def open_store(cfg: IndexConfig | Settings, data_dir: Path | None = None) -> VectorStore:
    """The store `cfg.backend` names; `open_store(settings)` reads the index section and data dir."""
    if isinstance(cfg, Settings):
        settings, cfg = cfg, cfg.params.index
        data_dir = settings.data_dir if data_dir is None else data_dir
    if cfg.backend == "server":
        from mmd.store.client import ClientStore

        if not cfg.url:
            raise StoreError("index.backend = server needs index.url")
        api_key = os.environ.get(cfg.api_key_env) or None
        return ClientStore.server(cfg.url, api_key, batch_size=cfg.batch_size, api_key_env=cfg.api_key_env)
    if data_dir is None:
        raise StoreError(f"index.backend = {cfg.backend} keeps its files under a data folder; pass data_dir")
    path = store_path(cfg, data_dir)
    if cfg.backend == "local":
        from mmd.store.client import ClientStore

        return ClientStore.local(path, batch_size=cfg.batch_size)
    from mmd.store.edge import EdgeStore

    return EdgeStore(path, batch_size=cfg.batch_size)
