"""Mixed-modal vectors on disk: one row per item (id, content hash, has_image, the vector), the encoder in the
file's metadata. The embed stage writes them for the real items, synthesize for the pool, select for the
selected set's features; every reader comes through here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from mmd.items import write_table
from mmd.util import read_parquet


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
    table = read_parquet(path)
    meta = table.schema.metadata or {}
    dim = int(meta.get(b"dim", b"0"))
    col = table.column("mixed").combine_chunks()
    mixed = col.values.to_numpy(zero_copy_only=False).reshape(-1, dim) if len(col) else np.zeros((0, dim), np.float32)
    return table, mixed, meta.get(b"encoder", b"").decode()
