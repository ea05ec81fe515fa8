"""The embedded backend: Qdrant's own engine in-process (qdrant-edge), nothing to start.

An edge shard is one collection, so a store is a folder of them:

    <root>/<collection>/shard/            the EdgeShard (segments, WAL, edge_config.json)
    <root>/<collection>/collection.json   the identity it was built with (dim, encoder)

The identity is written after the shard is complete and removed before a shard is
dropped, so an interrupted create or rebuild leaves a shard with no identity, which
ensure_collection refuses rather than trusts. A shard holds a lock on its WAL: one open
store per folder at a time, across processes.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import qdrant_edge as qe

from mmd.util import write_json
from mmd.store.base import (
    PAYLOAD_INDEXES,
    REBUILD_HINT,
    CollectionMeta,
    Condition,
    Hit,
    StoreError,
    VectorStore,
    meta_record,
)

_SCHEMA_TYPES = {
    "integer": qe.PayloadSchemaType.Integer,
    "keyword": qe.PayloadSchemaType.Keyword,
    "datetime": qe.PayloadSchemaType.Datetime,
}
_SCROLL_PAGE = 2048
META_FILE = "collection.json"


class _Busy(StoreError):
    """The shard's lock is held by another EdgeShard (another process or store object)."""


def _filter(conditions: list[Condition], exclude: list[str]) -> qe.Filter | None:
    def cond(field, value):
        return qe.FieldCondition(key=field, match=qe.MatchAny(value) if isinstance(value, list) else qe.MatchValue(value))

    must = [cond(field, value) for field, value, negated in conditions if not negated]
    must_not = [cond(field, value) for field, value, negated in conditions if negated]
    must_not += [qe.HasIdCondition(set(exclude))] if exclude else []
    if not must and not must_not:
        return None
    return qe.Filter(must=must or None, must_not=must_not or None)


def _vector(record) -> list[float]:
    vec = record.vector
    return vec.get("") if isinstance(vec, dict) else vec  # the collection has one unnamed vector


def _hit(point) -> Hit:
    payload = dict(point.payload or {})
    return Hit(id=str(payload.get("item_id", point.id)), score=float(point.score), payload=payload)


class EdgeStore(VectorStore):
    """Collections as qdrant-edge shards under one folder."""

    backend = "embedded"

    def __init__(self, root: Path, batch_size: int = 512):
        super().__init__()
        self.root = Path(root)
        self.default_batch_size = batch_size
        self._shards: dict[str, qe.EdgeShard] = {}
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the embedded store folder {self.root}: {exc}") from None

    def where(self) -> str:
        return f"the embedded store at {self.root}"

    # ------------------------------------------------------------------ files and shards
    def _dir(self, name: str) -> Path:
        return self.root / name

    def _translate(self, op: str, name: str, exc: Exception) -> StoreError:
        # qdrant-edge raises bare Exceptions: the operation and the place are all we can add
        return StoreError(f"qdrant-edge {op} on collection {name!r} in {self.where()} failed: {exc}")

    def _shard(self, name: str) -> qe.EdgeShard:
        shard = self._shards.get(name)
        if shard is not None:
            return shard
        path = self._dir(name) / "shard"
        if self._closed:
            raise StoreError(f"{self.where()} is closed")
        try:
            shard = qe.EdgeShard.load(str(path))
        except Exception as exc:  # noqa: BLE001
            if "WouldBlock" in str(exc) or "lock" in str(exc).lower():
                raise _Busy(
                    f"collection {name!r} in {self.where()} is open elsewhere (another process, or another "
                    f"store object in this one); close that first: {exc}"
                ) from exc
            raise StoreError(f"cannot open collection {name!r} in {self.where()}: {exc}; {REBUILD_HINT}") from exc
        self._shards[name] = shard
        return shard

    def _close_shard(self, name: str) -> None:
        shard = self._shards.pop(name, None)
        if shard is not None:
            with contextlib.suppress(Exception):
                shard.flush()
            shard.close()

    # ------------------------------------------------------------------ primitives
    def _describe(self, name: str) -> CollectionMeta | None:
        folder = self._dir(name)
        if not (folder / "shard").is_dir():
            return None
        try:
            record = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
            return CollectionMeta(dim=int(record["dim"]), encoder=str(record["encoder"]), distance=record.get("distance"))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        # a shard without a readable identity: still say what dim it holds
        try:
            vectors = json.loads((folder / "shard" / "edge_config.json").read_text(encoding="utf-8"))["vectors"]
            dim = int(vectors[""]["size"])
        except (OSError, ValueError, KeyError, TypeError):
            dim = None
        return CollectionMeta(dim=dim, encoder=None, distance=None)

    def _create(self, name: str, dim: int, encoder: str) -> None:
        folder = self._dir(name)
        self._close_shard(name)
        # leftovers of an interrupted create (a shard dir with no identity) go first
        (folder / META_FILE).unlink(missing_ok=True)
        shutil.rmtree(folder / "shard", ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine))
        with self._guarded("create", name):
            shard = qe.EdgeShard.create(str(folder / "shard"), config)
            self._shards[name] = shard
            for field, kind in PAYLOAD_INDEXES.items():
                shard.update(qe.UpdateOperation.create_field_index(field, _SCHEMA_TYPES[kind]))
            shard.flush()
        write_json(folder / META_FILE, meta_record(dim, encoder))

    def _repair(self, name: str) -> None:
        shard = self._shard(name)
        with self._guarded("index", name):
            have = set(shard.info().payload_schema)
            for field, kind in PAYLOAD_INDEXES.items():
                if field not in have:
                    shard.update(qe.UpdateOperation.create_field_index(field, _SCHEMA_TYPES[kind]))

    def _drop(self, name: str) -> None:
        folder = self._dir(name)
        if name not in self._shards and (folder / "shard").is_dir():
            # take the shard's lock first so a store that has it open elsewhere is not pulled
            # from under it; a shard too broken to open is dropped all the same
            try:
                self._shard(name)
            except _Busy:
                raise
            except StoreError:
                pass
        self._close_shard(name)
        try:
            (folder / META_FILE).unlink(missing_ok=True)  # identity first: a half-drop is refused, not trusted
            shutil.rmtree(folder)
        except OSError as exc:
            raise StoreError(f"cannot remove collection {name!r} from {self.where()}: {exc}") from None

    def _write(self, name: str, pids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        shard = self._shard(name)
        points = [qe.Point(id=pid, vector=row, payload=payload) for pid, row, payload in zip(pids, vectors.tolist(), payloads)]
        with self._guarded("upsert", name):
            shard.update(qe.UpdateOperation.upsert_points(points))

    def _commit(self, name: str) -> None:
        # the WAL already makes each update durable; flushing keeps reopening cheap
        with self._guarded("flush", name):
            self._shard(name).flush()

    def _query(
        self, name: str, vectors: np.ndarray, k: int, conditions: list[Condition], exclude: list[list[str]], exact: bool
    ) -> list[list[Hit]]:
        shard = self._shard(name)
        params = qe.SearchParams(exact=True) if exact else None
        requests = [
            qe.QueryRequest(
                limit=k, query=qe.Query.Nearest(row), filter=_filter(conditions, ex), params=params, with_payload=True
            )
            for row, ex in zip(vectors.tolist(), exclude)
        ]
        with self._guarded("search", name):
            if len(requests) == 1:
                return [[_hit(p) for p in shard.query(requests[0])]]
            return [[_hit(p) for p in points] for points in shard.query_batch(qe.QueryBatchRequest(requests))]

    def _scroll(
        self, name: str, fields: list[str], conditions: list[Condition] | None = None, with_vectors: bool = False
    ) -> Iterator[list[tuple[str, dict, list[float] | None]]]:
        shard = self._shard(name)
        offset = None
        selector = qe.PayloadSelector.Include(["item_id", *fields])
        flt = _filter(conditions or [], [])
        while True:
            with self._guarded("scroll", name):
                records, offset = shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=_SCROLL_PAGE, filter=flt, with_payload=selector,
                                     with_vector=with_vectors)
                )
            yield [(str((r.payload or {}).get("item_id", r.id)), r.payload or {}, _vector(r) if with_vectors else None)
                   for r in records]
            if offset is None:
                return

    def _existing(self, name: str, pids: list[str]) -> list[str]:
        shard = self._shard(name)
        with self._guarded("retrieve", name):
            return [str(r.id) for r in shard.retrieve(pids, with_payload=False, with_vector=False)]

    def _remove(self, name: str, pids: list[str]) -> None:
        shard = self._shard(name)
        with self._guarded("delete", name):
            shard.update(qe.UpdateOperation.delete_points(pids))

    def _count(self, name: str) -> int:
        shard = self._shard(name)
        with self._guarded("count", name):
            return int(shard.count(qe.CountRequest(exact=True)))

    def optimize(self, name: str) -> None:
        """Build the HNSW index and merge segments now (edge shards never do it on their own).

        Until then a search scans every vector: exact, and fast enough to some 10^5 points;
        at 100k x 512 on 2 cores this takes minutes and makes search ~8x faster.
        """
        self._require(name)
        with self._guarded("optimize", name):
            self._shard(name).optimize()

    def close(self) -> None:
        if self._closed:
            return
        errors = []
        for name in list(self._shards):
            try:
                self._close_shard(name)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{name}: {exc}")
        self._closed = True
        if errors:
            raise StoreError(f"closing {self.where()} failed: " + "; ".join(errors))
