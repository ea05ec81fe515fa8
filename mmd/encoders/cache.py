"""The embedding cache, and `embed_items`: encode only what the cache has not seen.

Vectors are keyed by (encoder identity, content hash): a text by the sha256 of its exact
string, an image by its `image_sha256`. So an unchanged item costs nothing to re-embed,
an edited caption re-encodes that caption only, and a new image shared by many items is
encoded once.

On disk: one folder per encoder identity under the cache root, named
`<slug>-<hash of identity>`, holding `meta.json` (the identity and dimensions, checked on
open: two encoders never share a folder) and Parquet parts `text-*.parquet` /
`image-*.parquet` with columns `key` (string) and `vec` (fixed-size list of float32).
A flush writes a new part (tmp file + rename, so a crash leaves whole parts only); many
small parts are merged into one now and then.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmd.util import atomic_path, read_parquet, write_json
from mmd.encoders.base import (
    Encoder,
    MissingImage,
    iter_image_batches,
    loader_workers,
    mix,
    resolve_image_path,
)
from mmd.util import progress

CACHE_FORMAT = 1
# merge a modality's parts into one when a flush would leave more than this many
MAX_PARTS = 32


class CacheIdentityError(ValueError):
    """A cache folder that belongs to another encoder (or other dimensions)."""


def text_key(text: str | None) -> str:
    """The cache key of a text: sha256 of its exact UTF-8 bytes (no normalisation)."""
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def cache_folder(root: Path, encoder_identity: str) -> Path:
    """`<root>/<readable slug>-<12 hex of sha256(identity)>`: readable, and collision-safe."""
    slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", encoder_identity).strip("-")[:64] or "encoder"
    return Path(root) / f"{slug}-{hashlib.sha256(encoder_identity.encode()).hexdigest()[:12]}"


class _Modality:
    """The parts of one modality (text or image): keys indexed at open, vectors read lazily."""

    def __init__(self, folder: Path, prefix: str, dim: int):
        self.folder, self.prefix, self.dim = folder, prefix, dim
        self.parts: list[Path] = sorted(folder.glob(f"{prefix}-*.parquet"))
        self.index: dict[str, tuple[int, int]] = {}  # key -> (part number, row)
        for p, part in enumerate(self.parts):
            for row, key in enumerate(read_parquet(part, ["key"]).column("key").to_pylist()):
                self.index[key] = (p, row)
        self.loaded: dict[int, np.ndarray] = {}
        self.pending: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.index.keys() | self.pending.keys())

    def _vectors(self, p: int) -> np.ndarray:
        if p not in self.loaded:
            column = read_parquet(self.parts[p], ["vec"]).column("vec").combine_chunks()
            flat = column.values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            self.loaded[p] = flat.reshape(len(column), self.dim)
        return self.loaded[p]

    def get(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for key in keys:
            if key in self.pending:
                out[key] = self.pending[key]
            elif key in self.index:
                p, row = self.index[key]
                out[key] = self._vectors(p)[row]
        return out

    def missing(self, keys: Iterable[str]) -> list[str]:
        return [key for key in keys if key not in self.pending and key not in self.index]

    def put(self, keys: Sequence[str], vecs: np.ndarray) -> None:
        vecs = np.asarray(vecs, dtype=np.float32)
        if vecs.shape != (len(keys), self.dim):
            raise ValueError(f"put {self.prefix}: expected ({len(keys)}, {self.dim}) vectors, got {vecs.shape}")
        for key, vec in zip(keys, vecs):
            if key not in self.index:
                self.pending[key] = vec

    def flush(self) -> int:
        """Write pending vectors as a new part; merge parts when there are too many."""
        if not self.pending:
            return 0
        keys = list(self.pending)
        vecs = np.stack([self.pending[k] for k in keys])
        if len(self.parts) + 1 > MAX_PARTS:
            old = list(self.parts)
            existing = self.get(self.index)
            keys = list(existing) + keys
            vecs = np.concatenate([np.stack(list(existing.values())), vecs]) if existing else vecs
            path = self._write(keys, vecs)
            for part in old:  # the merged part is in place first: a crash here only leaves duplicates
                part.unlink(missing_ok=True)
            self.parts, self.loaded = [path], {0: vecs}
            self.index = {k: (0, row) for row, k in enumerate(keys)}
        else:
            path = self._write(keys, vecs)
            p = len(self.parts)
            self.parts.append(path)
            self.loaded[p] = vecs
            self.index.update({k: (p, row) for row, k in enumerate(keys)})
        written = len(self.pending)
        self.pending = {}
        return written

    def _write(self, keys: list[str], vecs: np.ndarray) -> Path:
        # time-ordered names keep parts sorted oldest first; the random tail keeps writers apart
        name = f"{self.prefix}-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        path = self.folder / name
        flat = pa.array(np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1), type=pa.float32())
        table = pa.table({"key": pa.array(keys, pa.string()), "vec": pa.FixedSizeListArray.from_arrays(flat, self.dim)})
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path


class EmbeddingCache:
    """Vectors of one encoder, keyed by content hash; see the module docstring."""

    def __init__(self, root: Path, encoder_identity: str, text_dim: int, image_dim: int, read_only: bool = False):
        """`read_only`: serve what is cached, keep new vectors in memory for this run only, write
        nothing (for readers such as training and prediction, which must not change the
        embed stage's versioned output)."""
        self.encoder_identity = encoder_identity
        self.text_dim, self.image_dim = int(text_dim), int(image_dim)
        self.read_only = read_only
        self.folder = cache_folder(root, encoder_identity)
        if not read_only:
            self.folder.mkdir(parents=True, exist_ok=True)
        meta_path = self.folder / "meta.json"
        meta = {"identity": encoder_identity, "text_dim": self.text_dim, "image_dim": self.image_dim, "format": CACHE_FORMAT}
        if meta_path.exists():
            found = json.loads(meta_path.read_text(encoding="utf-8"))
            if found.get("identity") != encoder_identity:
                raise CacheIdentityError(
                    f"{self.folder} holds vectors of encoder {found.get('identity')!r}, not {encoder_identity!r}; "
                    "vectors of different encoders are never mixed"
                )
            if (found.get("text_dim"), found.get("image_dim")) != (self.text_dim, self.image_dim):
                raise CacheIdentityError(
                    f"{self.folder}: cached dims text={found.get('text_dim')} image={found.get('image_dim')}, "
                    f"encoder says text={self.text_dim} image={self.image_dim}"
                )
            if found.get("format") != CACHE_FORMAT:
                raise CacheIdentityError(f"{self.folder}: cache format {found.get('format')}, expected {CACHE_FORMAT}")
        elif not read_only:
            write_json(meta_path, meta)
        self._text = _Modality(self.folder, "text", self.text_dim)
        self._image = _Modality(self.folder, "image", self.image_dim)

    @classmethod
    def for_encoder(cls, root: Path, encoder: Encoder, read_only: bool = False) -> "EmbeddingCache":
        return cls(root, encoder.identity, encoder.text_dim, encoder.image_dim, read_only)

    def get_texts(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        return self._text.get(keys)

    def put_texts(self, keys: Sequence[str], vecs: np.ndarray) -> None:
        self._text.put(keys, vecs)

    def get_images(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        return self._image.get(keys)

    def missing_texts(self, keys: Iterable[str]) -> list[str]:
        """The keys this cache holds no text vector for (nothing is read but the key index)."""
        return self._text.missing(keys)

    def missing_images(self, keys: Iterable[str]) -> list[str]:
        return self._image.missing(keys)

    def put_images(self, keys: Sequence[str], vecs: np.ndarray) -> None:
        self._image.put(keys, vecs)

    def flush(self) -> int:
        """Persist what was put since the last flush; returns how many vectors were written."""
        if self.read_only:
            return 0
        return self._text.flush() + self._image.flush()

    def counts(self) -> dict[str, int]:
        return {"texts": len(self._text), "images": len(self._image)}


# --------------------------------------------------------------------------- embed_items
@dataclass
class EmbedResult:
    """Per-item vectors in item order, and what it took. For a precomputed (keyed-by-id)
    encoder, `encoded_*` count the vectors looked up and nothing is cached."""

    ids: list[str]
    text: np.ndarray  # (N, text_dim)
    image: np.ndarray  # (N, image_dim); zeros where has_image is False
    has_image: np.ndarray  # (N,) bool
    encoded_texts: int  # distinct texts computed by the model in this run
    encoded_images: int
    cached_texts: int  # distinct texts served from the cache
    cached_images: int
    missing_images: list[MissingImage] = field(default_factory=list)
    loader_workers: int = 0  # DataLoader workers actually used for images

    def mixed(self, text_weight: float) -> np.ndarray:
        return mix(self.text, self.image, self.has_image, text_weight)

    def summary(self) -> dict[str, int]:
        return {
            "items": len(self.ids),
            "with_image": int(self.has_image.sum()),
            "encoded_texts": self.encoded_texts,
            "cached_texts": self.cached_texts,
            "encoded_images": self.encoded_images,
            "cached_images": self.cached_images,
            "missing_images": len(self.missing_images),
        }


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_content_keys(items: Sequence[dict[str, Any]], data_dir: Path) -> tuple[list[str | None], list[MissingImage]]:
    """Each item's image cache key (its `image_sha256`, else the sha256 of the file's bytes), None for an item
    without an image; an image whose bytes cannot be read is None too, and listed as missing."""
    missing: list[MissingImage] = []
    image_keys: list[str | None] = [None] * len(items)
    for k, r in enumerate(items):
        ref = r.get("image_path")
        if not ref:
            continue
        key = r.get("image_sha256")
        if not key:  # rows from outside ingest may lack the hash: take it from the bytes
            path = resolve_image_path(Path(data_dir), ref)
            try:
                key = _file_sha256(path) if isinstance(path, Path) else None
            except OSError as exc:
                key = None
                path = f"image file not readable: {exc}"
            if key is None:
                missing.append(MissingImage(str(r["id"]), ref, str(path)))
                continue
        image_keys[k] = key
    return image_keys, missing


def embed_items(
    items: Sequence[dict[str, Any]],
    encoder: Encoder,
    cache: EmbeddingCache | None,
    data_dir: Path,
    batch_size: int = 32,
    num_workers: int = 1,
    show_progress: bool = False,
    flush_every: int = 50,
    share_cores: bool = False,
) -> EmbedResult:
    """Text and image vectors for item rows (`id`, `text`, `image_path`, `image_sha256`).

    Only content the cache lacks is encoded, each distinct text and image once. Images
    are decoded and preprocessed by up to `num_workers` DataLoader workers while the
    model computes; on CPU only as many as have a core free of torch's threads (see
    `loader_workers`; `share_cores=True` uses num_workers as given, for measuring).
    An image that cannot be read (deleted since validation, corrupt) does not stop the
    run: its items come back in `missing_images` and are embedded text-only. The cache
    is flushed after the texts and every `flush_every` image batches.
    """
    if cache is not None and cache.encoder_identity != encoder.identity:
        raise CacheIdentityError(
            f"cache is for encoder {cache.encoder_identity!r}, this encoder is {encoder.identity!r}"
        )
    ids = [str(r["id"]) for r in items]
    n = len(items)
    if encoder.keyed_by_id:
        enc = encoder.encode_items(items, data_dir, batch_size, num_workers)
        return EmbedResult(ids, enc.text, enc.image, enc.has_image, n, int(enc.has_image.sum()), 0, 0, enc.missing_images)

    data_dir = Path(data_dir)
    image_keys, missing = image_content_keys(items, data_dir)
    unique_images = list(dict.fromkeys(k for k in image_keys if k is not None))
    image_vecs: dict[str, np.ndarray] = cache.get_images(unique_images) if cache else {}
    cached_images = len(image_vecs)
    first_ref: dict[str, str] = {}
    for k, key in enumerate(image_keys):
        if key is not None and key not in image_vecs:
            first_ref.setdefault(key, items[k]["image_path"])
    todo_images = list(first_ref)
    paths = [resolve_image_path(data_dir, first_ref[key]) for key in todo_images]
    # started before the text work so the workers are already decoding when it ends
    workers = num_workers if share_cores else loader_workers(encoder, num_workers)
    batches = iter_image_batches(encoder, paths, batch_size, workers)

    # ---- texts: distinct, longest first so each batch pads little
    t_keys = [text_key(r.get("text")) for r in items]
    text_of = {key: (r.get("text") or "") for key, r in zip(t_keys, items)}
    unique_texts = list(dict.fromkeys(t_keys))
    text_vecs: dict[str, np.ndarray] = cache.get_texts(unique_texts) if cache else {}
    cached_texts = len(text_vecs)
    todo_texts = sorted((key for key in unique_texts if key not in text_vecs), key=lambda key: -len(text_of[key]))
    starts = range(0, len(todo_texts), batch_size)
    for start in progress(starts, "encoding texts", enabled=show_progress, total=len(starts)):
        keys = todo_texts[start : start + batch_size]
        vecs = encoder.encode_texts([text_of[key] for key in keys])
        text_vecs.update(zip(keys, vecs))
        if cache is not None:
            cache.put_texts(keys, vecs)
    if cache is not None:
        cache.flush()

    # ---- images: the forward pass, as batches arrive
    failed_keys: dict[str, str] = {}
    encoded_images = 0
    n_batches = -(-len(todo_images) // batch_size)
    for b, batch in enumerate(progress(batches, "encoding images", enabled=show_progress, total=n_batches)):
        if batch.indices:
            keys = [todo_images[j] for j in batch.indices]
            vecs = encoder.encode_image_tensors(batch.tensors)
            image_vecs.update(zip(keys, vecs))
            encoded_images += len(keys)
            if cache is not None:
                cache.put_images(keys, vecs)
        for j, reason in batch.failed:
            failed_keys[todo_images[j]] = reason
        if cache is not None and (b + 1) % flush_every == 0:
            cache.flush()
    if cache is not None:
        cache.flush()

    # ---- assemble, item by item
    text = np.stack([text_vecs[key] for key in t_keys]) if n else np.zeros((0, encoder.text_dim), np.float32)
    image = np.zeros((n, encoder.image_dim), np.float32)
    has_image = np.zeros(n, bool)
    for k, key in enumerate(image_keys):
        if key is None:
            continue
        if key in image_vecs:
            image[k] = image_vecs[key]
            has_image[k] = True
        else:
            missing.append(MissingImage(ids[k], items[k].get("image_path"), failed_keys.get(key, "image not encoded")))
    return EmbedResult(
        ids=ids,
        text=text.astype(np.float32, copy=False),
        image=image,
        has_image=has_image,
        encoded_texts=len(todo_texts),
        encoded_images=encoded_images,
        cached_texts=cached_texts,
        cached_images=cached_images,
        missing_images=missing,
        loader_workers=workers if todo_images else 0,
    )
