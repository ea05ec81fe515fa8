"""Embed: validated items -> image, text and mixed-modal vectors, never encoding content twice.

Reads `<data>/validated/items.parquet`; writes `<data>/embeddings/items.parquet`
(id, content hash, has_image, the mixed vector), keeps the per-encoder cache under
`<data>/embeddings/cache/`, and `reports/embed.json`. An item whose image vanished since
validation is quarantined (`<data>/embeddings/quarantine.parquet`), not embedded, and
the stage reconciles: in = embedded + quarantined. With `scale.engine: dask` the cache
misses are encoded on Dask workers, sharded by content hash (`mmd.scale.embed`); what
the stage writes is the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mmd.config import Settings
from mmd.formats.vectors import write_vectors
from mmd.items import ITEM_SCHEMA, now_iso, read_table
from mmd.quarantine import append_records, quarantine
from mmd.results import EmbedReport as EmbedResult


@dataclass
class EmbedReport:
    encoder: str
    items: int
    embedded: int
    quarantined: int
    encoded_texts: int
    encoded_images: int
    cached_texts: int
    cached_images: int
    seconds: float
    dim: int
    vectors_path: Path

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "vectors_path"}
        d["reconciled"] = self.items == self.embedded + self.quarantined
        d["vectors_path"] = str(self.vectors_path)
        return d


def run_embed(settings: Settings, show_progress: bool = True) -> EmbedReport:
    from mmd.encoders import EmbeddingCache, build_encoder, embed_items, mix
    from mmd.scale.engine import open_engine

    cfg = settings.params.embed
    at = settings.layout
    started = time.perf_counter()
    items = read_table(at.items, ITEM_SCHEMA).select(["id", "text", "image_path", "image_sha256", "content_hash", "source"]).to_pylist()
    encoder = build_encoder(cfg, settings.root)
    cache = EmbeddingCache.for_encoder(at.embed_cache, encoder)
    with open_engine(settings.params.scale) as engine:
        if engine is None:
            result = embed_items(items, encoder, cache, settings.data_dir, cfg.batch_size, cfg.num_workers, show_progress)
        else:
            from mmd.scale.embed import embed_sharded

            result = embed_sharded(settings, items, encoder, cache, settings.data_dir, engine, show_progress)
    cache.flush()

    # an image that vanished since validation: the item is not embedded half-blind
    missing = {m.id for m in result.missing_images}
    by_id = {it["id"]: it for it in items}
    records = [
        quarantine("embed", by_id[m.id]["source"], "image_missing",
                   f"the image {m.image_path} could not be read after validation: {m.reason}", m.id, m.image_path or "", m.id)
        for m in result.missing_images
    ]
    append_records(at.embed_quarantine, records)
    keep = np.array([i not in missing for i in result.ids], dtype=bool)
    mixed = mix(result.text, result.image, result.has_image, cfg.text_weight)[keep]
    ids = [i for i, k in zip(result.ids, keep) if k]
    write_vectors(at.vectors, ids, [by_id[i]["content_hash"] for i in ids], result.has_image[keep], mixed, encoder.identity)

    report = EmbedReport(
        encoder=encoder.identity, items=len(items), embedded=len(ids), quarantined=len(records),
        encoded_texts=result.encoded_texts, encoded_images=result.encoded_images,
        cached_texts=result.cached_texts, cached_images=result.cached_images,
        seconds=round(time.perf_counter() - started, 3), dim=int(mixed.shape[1]), vectors_path=at.vectors,
    )
    EmbedResult.model_validate({"embedded_at": now_iso(), **report.to_dict()}).write(at)
    return report
