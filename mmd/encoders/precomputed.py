"""Vectors computed elsewhere, looked up by item id.

Two layouts (`embed.precomputed.path`):
- Parquet: one row per item; `id_column` (string), `text_column` (list<float>) and
  optionally `image_column` (list<float>, null for an item without an image).
- NumPy: `<stem>.npy` (N, text_dim) text vectors, `<stem>.ids.npy` (N,) unicode ids, and
  optionally `<stem>.image.npy` (N, image_dim) image vectors, where an all-zero or NaN
  row means "no image". Read with allow_pickle=False: ids must be a unicode array.

Vectors are L2-normalised on load. There is nothing to compute, so texts and images
without an id cannot be encoded: `encode_items` is the only way in.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from mmd.config import PrecomputedConfig
from mmd.encoders.base import EncodedItems, Encoder, EncoderUnavailable, l2_normalise


class MissingVectors(KeyError):
    """Items the precomputed table has no vectors for; `ids` names them."""

    def __init__(self, ids: list[str], source: Path):
        self.ids = ids
        shown = ", ".join(ids[:10]) + (f" … ({len(ids)} in all)" if len(ids) > 10 else "")
        super().__init__(f"{source}: no precomputed vectors for item id(s) {shown}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


def _sha256_files(paths: Sequence[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _list_column_to_matrix(column: pa.ChunkedArray, name: str, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """A list<float> column -> (N, D) float32 and a presence mask (null or empty = absent)."""
    values = column.to_pylist()
    present = np.array([v is not None and len(v) > 0 for v in values], bool)
    dims = {len(v) for v, p in zip(values, present) if p}
    if len(dims) > 1:
        raise EncoderUnavailable(f"{source}: column {name!r} mixes vector lengths {sorted(dims)}")
    dim = dims.pop() if dims else 0
    out = np.zeros((len(values), dim), np.float32)
    for k, v in enumerate(values):
        if present[k]:
            out[k] = v
    return out, present


class PrecomputedEncoder(Encoder):
    """Vectors keyed by item id, from Parquet or .npy (see the module docstring)."""

    keyed_by_id = True

    def __init__(self, cfg: PrecomputedConfig, root: Path | None = None):
        if not cfg.path:
            raise EncoderUnavailable(
                "embed.backend is precomputed but embed.precomputed.path is not set: point it at a "
                "Parquet table (id + list<float> text/image columns) or at <stem>.npy beside <stem>.ids.npy"
            )
        path = Path(cfg.path)
        if not path.is_absolute() and root is not None:
            path = (root / path).resolve()
        self.path = path
        if path.suffix == ".parquet":
            ids, text, image, has_image, files = self._read_parquet(path, cfg)
        elif path.suffix == ".npy":
            ids, text, image, has_image, files = self._read_npy(path)
        else:
            raise EncoderUnavailable(f"embed.precomputed.path {path}: expected a .parquet or .npy file")
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dupes = sorted({i for i in ids if i in seen or seen.add(i)})
            raise EncoderUnavailable(f"{path}: repeated item ids {', '.join(dupes[:10])}")
        self._row = {item_id: k for k, item_id in enumerate(ids)}
        self._text = l2_normalise(text)
        self._image = l2_normalise(image)
        self._has_image = has_image
        self.text_dim = text.shape[1]
        self.image_dim = image.shape[1]
        self.identity = f"precomputed:{path.name}:sha256-{_sha256_files(files)[:16]}"

    @staticmethod
    def _read_parquet(path: Path, cfg: PrecomputedConfig):
        if not path.is_file():
            raise EncoderUnavailable(f"embed.precomputed.path {path}: no such file")
        table = pq.read_table(path)
        for name in (cfg.id_column, cfg.text_column):
            if name not in table.column_names:
                raise EncoderUnavailable(f"{path}: no column {name!r} (has {', '.join(table.column_names)})")
        ids = [str(x) for x in table.column(cfg.id_column).to_pylist()]
        text, text_present = _list_column_to_matrix(table.column(cfg.text_column), cfg.text_column, path)
        if not text_present.all():
            missing = [i for i, p in zip(ids, text_present) if not p]
            raise EncoderUnavailable(f"{path}: null text vectors for id(s) {', '.join(missing[:10])}")
        if cfg.image_column in table.column_names:
            image, has_image = _list_column_to_matrix(table.column(cfg.image_column), cfg.image_column, path)
        else:
            image, has_image = np.zeros((len(ids), 0), np.float32), np.zeros(len(ids), bool)
        return ids, text, image, has_image, [path]

    @staticmethod
    def _read_npy(path: Path):
        stem = path.with_suffix("")
        ids_path = stem.with_name(stem.name + ".ids.npy")
        image_path = stem.with_name(stem.name + ".image.npy")
        for p in (path, ids_path):
            if not p.is_file():
                raise EncoderUnavailable(f"precomputed vectors: {p} not found (need {path.name} and {ids_path.name})")
        text = np.load(path, allow_pickle=False).astype(np.float32)
        ids_arr = np.load(ids_path, allow_pickle=False)
        if text.ndim != 2 or ids_arr.ndim != 1 or len(ids_arr) != len(text):
            raise EncoderUnavailable(
                f"{path}: expected (N, D) vectors and N ids, got {text.shape} and {ids_arr.shape}"
            )
        ids = [str(x) for x in ids_arr.tolist()]
        files = [path, ids_path]
        if image_path.is_file():
            image = np.load(image_path, allow_pickle=False).astype(np.float32)
            if image.ndim != 2 or len(image) != len(text):
                raise EncoderUnavailable(f"{image_path}: expected ({len(text)}, D) image vectors, got {image.shape}")
            has_image = np.isfinite(image).all(axis=1) & (np.abs(image).sum(axis=1) > 0)
            image = np.where(has_image[:, None], image, 0.0).astype(np.float32)
            files.append(image_path)
        else:
            image, has_image = np.zeros((len(ids), 0), np.float32), np.zeros(len(ids), bool)
        return ids, text, image, has_image, files

    def encode_ids(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(text, image, has_image) for these item ids; unknown ids raise MissingVectors naming them."""
        missing = [i for i in ids if i not in self._row]
        if missing:
            raise MissingVectors(missing, self.path)
        rows = np.array([self._row[i] for i in ids], dtype=np.int64)
        return self._text[rows], self._image[rows], self._has_image[rows]

    def encode_items(
        self, items: Sequence[dict[str, Any]], data_dir: Path | None = None, batch_size: int = 32, num_workers: int = 0
    ) -> EncodedItems:
        text, image, has_image = self.encode_ids([str(r["id"]) for r in items])
        return EncodedItems(text, image, has_image, [])

    # -- there is no model: raw texts and images cannot be encoded
    def _no_model(self, what: str):
        raise EncoderUnavailable(
            f"the precomputed backend looks vectors up by item id; it cannot encode {what}. "
            "Use encode_items / encode_ids, or another embed.backend"
        )

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        self._no_model("raw texts")

    @property
    def image_transform(self) -> Callable[[Image.Image], torch.Tensor]:
        self._no_model("images")

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        self._no_model("images")
