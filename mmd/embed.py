"""Embed: validated items -> image, text and mixed-modal vectors, never encoding content twice.

Reads `<data>/validated/items.parquet`; writes `<data>/embeddings/items.parquet`
(id, content hash, has_image, the mixed vector), keeps the per-encoder cache under
`<data>/embeddings/cache/`, and `reports/embed.json`. An item whose image vanished since
validation is quarantined (`<data>/embeddings/quarantine.parquet`), not embedded, and
the stage reconciles: in = embedded + quarantined.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmd.config import Settings
from mmd.items import ITEM_SCHEMA, now_iso, read_table, write_table
from mmd.quarantine import append_records, quarantine
from mmd.util import write_json


def paths(settings: Settings) -> dict[str, Path]:
    d = settings.data_dir
    return {
        "input": d / "validated" / "items.parquet",
        "vectors": d / "embeddings" / "items.parquet",
        "cache": d / "embeddings" / "cache",
        "quarantine": d / "embeddings" / "quarantine.parquet",
        "indexed": d / "embeddings" / "indexed.json",  # written by the index stage
        "report": settings.reports_dir / "embed.json",
    }


def vectors_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("content_hash", pa.string()),
            ("has_image", pa.bool_()),
            ("mixed", pa.list_(pa.float32(), dim)),
        ],
        metadata=None,
    )


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


def write_vectors(path: Path, ids: list[str], hashes: list[str], has_image: np.ndarray, mixed: np.ndarray, encoder: str) -> None:
    dim = mixed.shape[1]
    flat = pa.array(mixed.astype(np.float32, copy=False).reshape(-1), type=pa.float32())
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.string()), pa.array(hashes, pa.string()), pa.array(has_image, pa.bool_()),
         pa.FixedSizeListArray.from_arrays(flat, dim)],
        schema=vectors_schema(dim).with_metadata({"encoder": encoder, "dim": str(dim)}),
    )
    write_table(table, path)


def read_vectors(path: Path) -> tuple[pa.Table, np.ndarray, str]:
    """The embeddings table, its mixed vectors as an (N, dim) array, and the encoder identity."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `mmd embed` first")
    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    dim = int(meta.get(b"dim", b"0"))
    col = table.column("mixed").combine_chunks()
    mixed = col.values.to_numpy(zero_copy_only=False).reshape(-1, dim) if len(col) else np.zeros((0, dim), np.float32)
    return table, mixed, meta.get(b"encoder", b"").decode()


def run_embed(settings: Settings, show_progress: bool = True) -> EmbedReport:
    from mmd.encoders import EmbeddingCache, build_encoder, embed_items, mix

    cfg = settings.params.embed
    p = paths(settings)
    started = time.perf_counter()
    items = read_table(p["input"], ITEM_SCHEMA).select(["id", "text", "image_path", "image_sha256", "content_hash", "source"]).to_pylist()
    encoder = build_encoder(cfg, settings.root)
    cache = EmbeddingCache.for_encoder(p["cache"], encoder)
    result = embed_items(items, encoder, cache, settings.data_dir, cfg.batch_size, cfg.num_workers, show_progress)
    cache.flush()

    # an image that vanished since validation: the item is not embedded half-blind
    missing = {m.id for m in result.missing_images}
    by_id = {it["id"]: it for it in items}
    records = [
        quarantine("embed", by_id[m.id]["source"], "image_missing",
                   f"the image {m.image_path} could not be read after validation: {m.reason}", m.id, m.image_path or "", m.id)
        for m in result.missing_images
    ]
    append_records(p["quarantine"], records)
    keep = np.array([i not in missing for i in result.ids], dtype=bool)
    mixed = mix(result.text, result.image, result.has_image, cfg.text_weight)[keep]
    ids = [i for i, k in zip(result.ids, keep) if k]
    write_vectors(p["vectors"], ids, [by_id[i]["content_hash"] for i in ids], result.has_image[keep], mixed, encoder.identity)

    report = EmbedReport(
        encoder=encoder.identity, items=len(items), embedded=len(ids), quarantined=len(records),
        encoded_texts=result.encoded_texts, encoded_images=result.encoded_images,
        cached_texts=result.cached_texts, cached_images=result.cached_images,
        seconds=round(time.perf_counter() - started, 3), dim=int(mixed.shape[1]), vectors_path=p["vectors"],
    )
    write_json(p["report"], {"embedded_at": now_iso(), **report.to_dict()})
    return report
