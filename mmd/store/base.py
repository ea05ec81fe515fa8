"""The vector store's interface, and the checks every backend shares.

A backend implements a handful of primitives (describe, create, drop, write, query,
scroll, remove, count); everything a caller can get wrong (a dimension, a NaN, a filter
on a field that is not a scalar, a collection built by another encoder) is caught here,
before a backend writes anything, so every backend refuses the same things with the same
words.

Identity: a point's id is uuid5(POINT_NAMESPACE, item_id), so re-indexing the same items
overwrites the same points; the item id rides along in the payload as `item_id`.
"""

from __future__ import annotations

import contextlib

import re
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from mmd.store.payload import Condition, StoreError, _list_ids, check_payload, check_vectors, parse_filter

# Fixed forever: changing it would give every indexed item a new point id.
POINT_NAMESPACE = uuid.UUID("5d1c2b0e-8f3a-5b7e-9c41-6a2f0d8e4b13")

# The payload fields filters are expected on, and the index type each gets.
PAYLOAD_INDEXES: dict[str, str] = {
    "label": "integer",
    "kind": "keyword",
    "source": "keyword",
    "split": "keyword",
    "generator": "keyword",
    "group": "keyword",
    "ingested_at": "datetime",
}

# What a collection records about itself; bumped if the point layout ever changes.
STORE_SCHEMA = 1
DISTANCE = "cosine"

REBUILD_HINT = "run `mmd index --rebuild` to drop it and rebuild it from the embeddings"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")


@dataclass(frozen=True)
class Hit:
    """One search result: the item id, its cosine similarity, and its payload."""

    id: str
    score: float
    payload: dict




@dataclass(frozen=True)
class CollectionMeta:
    """What a backend knows of an existing collection; encoder is None when unrecorded."""

    dim: int | None
    encoder: str | None
    distance: str | None = DISTANCE


def point_id(item_id: str) -> str:
    """The Qdrant point id of an item: stable across runs, machines and backends."""
    return str(uuid.uuid5(POINT_NAMESPACE, item_id))


def meta_record(dim: int, encoder: str) -> dict[str, Any]:
    """The identity a collection is created with, stored in the store beside its points."""
    return {"mmd_store": STORE_SCHEMA, "dim": int(dim), "encoder": encoder, "distance": DISTANCE}












class VectorStore(ABC):
    """Named collections of item vectors with payloads, searched by cosine similarity."""

    backend: str = "?"
    default_batch_size: int = 512

    def __init__(self) -> None:
        self._meta: dict[str, CollectionMeta] = {}
        self._closed = False

    @contextlib.contextmanager
    def _guarded(self, op: str, name: str) -> Iterator[None]:
        """Backend errors become StoreErrors that say what was being done, and where."""
        if self._closed:
            raise StoreError(f"{self.where()} is closed")
        try:
            yield
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - each backend translates its own in _translate
            raise self._translate(op, name, exc) from exc

    def _translate(self, op: str, name: str, exc: Exception) -> StoreError:
        return StoreError(f"{op} on collection {name!r} in {self.where()} failed: {exc}")

    # ------------------------------------------------------------------ primitives
    @abstractmethod
    def _describe(self, name: str) -> CollectionMeta | None:
        """The collection's recorded identity, or None when it does not exist."""

    @abstractmethod
    def _create(self, name: str, dim: int, encoder: str) -> None:
        """Create with cosine distance, the payload indexes and the identity record."""

    @abstractmethod
    def _drop(self, name: str) -> None: ...

    @abstractmethod
    def _write(self, name: str, pids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None: ...

    @abstractmethod
    def _query(
        self, name: str, vectors: np.ndarray, k: int, conditions: list[Condition], exclude: list[list[str]], exact: bool
    ) -> list[list[Hit]]:
        """One list of hits per row of vectors; exclude[i] are point ids to leave out of row i."""

    @abstractmethod
    def _scroll(
        self, name: str, fields: list[str], conditions: list[Condition] | None = None, with_vectors: bool = False
    ) -> Iterator[list[tuple[str, dict, list[float] | None]]]:
        """Pages of (item id, payload restricted to `fields`, vector or None) for the matching points."""

    @abstractmethod
    def _existing(self, name: str, pids: list[str]) -> list[str]:
        """Those of the point ids that are in the collection."""

    @abstractmethod
    def _remove(self, name: str, pids: list[str]) -> None: ...

    @abstractmethod
    def _count(self, name: str) -> int: ...

    @abstractmethod
    def close(self) -> None:
        """Release the store (files, locks, connections); the object is unusable after."""

    def _repair(self, name: str) -> None:
        """Recreate whatever an interrupted create left out (payload indexes)."""

    def _commit(self, name: str) -> None:
        """Called once after every upsert() and delete() call, after its last batch."""

    def optimize(self, name: str) -> None:
        """Build the search index now where the backend needs telling (a no-op elsewhere)."""
        self._require(name)

    def where(self) -> str:
        """Where this store lives, for messages."""
        return self.backend

    # ------------------------------------------------------------------ collections
    def ensure_collection(self, name: str, dim: int, encoder: str, rebuild: bool = False) -> None:
        """Create the collection, or check that the one there was built by `encoder` at `dim`.

        A collection built by another encoder or at another dimension is refused with a
        StoreError (mixing embedding spaces would make every search meaningless) unless
        `rebuild`, which drops it and creates it empty.
        """
        self._check_name(name)
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise StoreError(f"collection {name!r}: dim must be a positive integer, got {dim!r}")
        if not isinstance(encoder, str) or not encoder.strip():
            raise StoreError(f"collection {name!r}: encoder must name the encoder that made the vectors, got {encoder!r}")
        dim = int(dim)
        self._meta.pop(name, None)
        found = self._describe(name)
        if found is not None and rebuild:
            self._drop(name)
            found = None
        if found is None:
            self._create(name, dim, encoder)
        elif found.encoder is None:
            raise StoreError(
                f"collection {name!r} in {self.where()} has no record of the encoder that built it "
                f"(made by something other than mmd, or an interrupted rebuild); {REBUILD_HINT}"
            )
        elif found.encoder != encoder or found.dim != dim or (found.distance or DISTANCE) != DISTANCE:
            raise StoreError(
                f"collection {name!r} in {self.where()} was built with encoder {found.encoder!r} (dim {found.dim}), "
                f"but this run embeds with encoder {encoder!r} (dim {dim}); vectors from another encoder or "
                f"dimension cannot be compared with them, so {REBUILD_HINT}"
            )
        else:
            self._repair(name)
        self._meta[name] = CollectionMeta(dim=dim, encoder=encoder)

    def info(self, name: str) -> dict | None:
        """{"dim", "encoder", "count"} of a collection, or None when there is none."""
        self._check_name(name)
        found = self._describe(name)
        if found is None:
            return None
        return {"dim": found.dim, "encoder": found.encoder, "count": self._count(name)}

    def count(self, name: str) -> int:
        """Number of points in the collection."""
        self._require(name)
        return self._count(name)

    def ids(self, name: str) -> set[str]:
        """Every item id in the collection."""
        return set(self.ordered_ids(name))

    def ordered_ids(self, name: str, filter: Mapping[str, Any] | None = None) -> list[str]:
        """The item ids of the points matching `filter`, in the order `vectors()` pages them."""
        self._require(name)
        conditions = parse_filter(filter)
        return [item for page in self._scroll(name, [], conditions) for item, _, _ in page]

    def hashes(self, name: str, field: str = "content_hash") -> dict[str, Any]:
        """item id -> the payload's `field` (None where absent), to re-index only what changed."""
        self._require(name)
        return {item: payload.get(field) for page in self._scroll(name, [field]) for item, payload, _ in page}

    def vectors(
        self, name: str, filter: Mapping[str, Any] | None = None, fields: Sequence[str] = ()
    ) -> Iterator[tuple[list[str], np.ndarray, list[dict]]]:
        """The stored vectors of the points matching `filter`, a page at a time: (item ids, vectors, payloads).

        Pages keep memory bounded however large the collection is; vectors come back as
        float32 rows as the store holds them (unit length under cosine distance).
        """
        meta = self._require(name)
        conditions = parse_filter(filter)
        for page in self._scroll(name, list(fields), conditions, with_vectors=True):
            if not page:
                continue
            ids = [item for item, _, _ in page]
            matrix = np.asarray([vec for _, _, vec in page], dtype=np.float32).reshape(len(page), meta.dim or -1)
            yield ids, matrix, [payload for _, payload, _ in page]

    # ------------------------------------------------------------------ writes
    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[Mapping[str, Any]] | None = None,
        batch_size: int | None = None,
    ) -> int:
        """Insert or overwrite items (point id = uuid5 of the item id); returns how many were sent.

        Everything is checked before the first batch is written: a bad dimension, a NaN, a
        zero vector or a payload that is not JSON raises StoreError naming the item ids and
        leaves the collection as it was. Re-upserting the same ids leaves the count unchanged.
        """
        meta = self._require(name)
        ids = list(ids)
        if not all(isinstance(i, str) and i for i in ids):
            raise StoreError(f"{name}: item ids must be non-empty strings")
        ids = [str(i) for i in ids]  # numpy str_ -> str
        dupes = sorted(i for i, n in Counter(ids).items() if n > 1)
        if dupes:
            raise StoreError(f"{name}: item ids repeated within one upsert: {_list_ids(dupes)}")
        matrix = check_vectors(name, vectors, meta.dim, ids, REBUILD_HINT)
        if payloads is None:
            payloads = [{} for _ in ids]
        payloads = list(payloads)
        if len(payloads) != len(ids):
            raise StoreError(f"{name}: {len(ids)} ids but {len(payloads)} payloads")
        clean = [check_payload(name, item, payload) for item, payload in zip(ids, payloads)]
        if not ids:
            return 0
        size = batch_size or self.default_batch_size
        if size < 1:
            raise StoreError(f"batch_size must be positive, got {size}")
        pids = [point_id(i) for i in ids]
        for start in range(0, len(ids), size):
            stop = start + size
            self._write(name, pids[start:stop], matrix[start:stop], clean[start:stop])
        self._commit(name)
        return len(ids)

    def delete(self, name: str, ids: Sequence[str]) -> int:
        """Remove items (those that left the dataset); returns how many were there."""
        self._require(name)
        pids = [point_id(i) for i in dict.fromkeys(ids)]
        if not pids:
            return 0
        removed = 0
        size = self.default_batch_size
        for start in range(0, len(pids), size):
            present = self._existing(name, pids[start : start + size])
            if present:
                self._remove(name, present)
                removed += len(present)
        if removed:
            self._commit(name)
        return removed

    # ------------------------------------------------------------------ reads
    def search(
        self,
        name: str,
        vector: np.ndarray,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        exclude_ids: Sequence[str] | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """The k items nearest to `vector` whose payload matches every filter entry.

        `filter` is {field: value or [values]}: every field must equal its value (or one
        of its values). Once an index is optimized search is approximate (HNSW);
        `exact=True` scans every vector instead.
        """
        matrix = np.asarray(vector)
        if matrix.ndim == 2 and matrix.shape[0] == 1:
            matrix = matrix[0]
        if matrix.ndim != 1:
            raise StoreError(f"{name}: search takes one vector (1-D), got shape {matrix.shape}; use search_batch")
        exclude = [[point_id(i) for i in exclude_ids]] if exclude_ids else [[]]
        return self._search(name, matrix[None, :], k, filter, exclude, exact)[0]

    def search_batch(
        self,
        name: str,
        vectors: np.ndarray,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        exclude_ids: Sequence[Sequence[str]] | None = None,
        exact: bool = False,
    ) -> list[list[Hit]]:
        """search() for many queries at once; exclude_ids, when given, is one list per query."""
        matrix = np.asarray(vectors)
        if matrix.ndim != 2:
            raise StoreError(f"{name}: search_batch takes a 2-D array of query vectors, got shape {matrix.shape}")
        if exclude_ids is not None and len(exclude_ids) != len(matrix):
            raise StoreError(f"{name}: {len(matrix)} queries but {len(exclude_ids)} exclude lists")
        exclude = [[point_id(i) for i in ex] for ex in exclude_ids] if exclude_ids is not None else [[] for _ in matrix]
        return self._search(name, matrix, k, filter, exclude, exact)

    def _search(
        self, name: str, matrix: np.ndarray, k: int, filter, exclude: list[list[str]], exact: bool
    ) -> list[list[Hit]]:
        meta = self._require(name)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise StoreError(f"{name}: k must be a positive integer, got {k!r}")
        conditions = parse_filter(filter)
        if len(matrix) == 0:
            return []
        matrix = check_vectors(name, matrix, meta.dim, [f"query #{i}" for i in range(len(matrix))], REBUILD_HINT)
        return self._query(name, matrix, int(k), conditions, exclude, bool(exact))

    # ------------------------------------------------------------------ checks
    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise StoreError(f"collection names are 1-64 letters, digits, '_' or '-' (starting with a letter or digit), got {name!r}")

    def _require(self, name: str) -> CollectionMeta:
        self._check_name(name)
        meta = self._meta.get(name)
        if meta is None:
            meta = self._describe(name)
            if meta is None:
                raise StoreError(f"no collection {name!r} in {self.where()}; run `mmd index` to build it")
            self._meta[name] = meta
        return meta

    # ------------------------------------------------------------------ context manager
    def __enter__(self) -> "VectorStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
