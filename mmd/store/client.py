"""The `local` and `server` backends: one implementation over qdrant-client.

`local` is qdrant-client's local mode (a folder, pure Python, the server's API), so the
tests run the server code path without a server; `server` talks to a Qdrant server or
cluster. A collection's identity (encoder, dim) lives in the collection's own metadata,
written by the same call that creates it, so it can never be half there; a server too old
to keep collection metadata (< 1.16) is refused when the collection is created.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from mmd.store.base import (
    PAYLOAD_INDEXES,
    CollectionMeta,
    Condition,
    Hit,
    StoreError,
    VectorStore,
    meta_record,
)

META_KEY = "mmd"  # the key of our record inside a collection's metadata
PROBE_TIMEOUT_S = 3  # a server that does not answer its collection list in this is down
REQUEST_TIMEOUT_S = 60  # a big upsert batch on a busy server can take a while
_SCROLL_PAGE = 2048
_SCHEMA_TYPES = {
    "integer": models.PayloadSchemaType.INTEGER,
    "keyword": models.PayloadSchemaType.KEYWORD,
    "datetime": models.PayloadSchemaType.DATETIME,
}


def _filter(conditions: list[Condition], exclude: list[str]) -> models.Filter | None:
    def cond(field, value):
        match = models.MatchAny(any=value) if isinstance(value, list) else models.MatchValue(value=value)
        return models.FieldCondition(key=field, match=match)

    must = [cond(field, value) for field, value, negated in conditions if not negated]
    must_not = [cond(field, value) for field, value, negated in conditions if negated]
    must_not += [models.HasIdCondition(has_id=exclude)] if exclude else []
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)


def _hit(point: models.ScoredPoint) -> Hit:
    payload = dict(point.payload or {})
    return Hit(id=str(payload.get("item_id", point.id)), score=float(point.score), payload=payload)


def _reason(exc: BaseException) -> str:
    source = getattr(exc, "source", None)
    return f"{type(source or exc).__name__}: {source or exc}"


class ClientStore(VectorStore):
    """Collections in a Qdrant server, or in qdrant-client's local mode."""

    def __init__(self, client: QdrantClient, backend: str, where: str, batch_size: int = 512):
        super().__init__()
        self.client = client
        self.backend = backend
        self._where = where
        self.default_batch_size = batch_size

    # ------------------------------------------------------------------ opening
    @classmethod
    def local(cls, path: Path, batch_size: int = 512) -> "ClientStore":
        """qdrant-client local mode in a folder (one open client per folder)."""
        path = Path(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            client = QdrantClient(path=str(path))
        except (RuntimeError, OSError) as exc:
            raise StoreError(f"cannot open the local Qdrant store at {path}: {exc}") from None
        return cls(client, "local", f"the local Qdrant store at {path}", batch_size)

    @classmethod
    def server(cls, url: str, api_key: str | None = None, batch_size: int = 512, api_key_env: str = "") -> "ClientStore":
        """A Qdrant server; one that is down or refuses the key fails here, within seconds."""
        where = f"the Qdrant server at {url}"
        probe = QdrantClient(url=url, api_key=api_key, timeout=PROBE_TIMEOUT_S, check_compatibility=False)
        try:
            probe.get_collections()
        except UnexpectedResponse as exc:
            if exc.status_code in (401, 403):
                key = f"${api_key_env}" if api_key_env else "the API key"
                state = "is not set" if not api_key else "was refused"
                raise StoreError(f"{where} needs an API key and {key} {state} (HTTP {exc.status_code})") from None
            raise StoreError(f"{where} answered HTTP {exc.status_code} {exc.reason_phrase}; is it a Qdrant server?") from None
        except Exception as exc:  # noqa: BLE001 - connection refused, timeout, DNS, TLS, …
            raise StoreError(
                f"cannot reach {where} ({_reason(exc)}); start the server, fix index.url, "
                f"or use index.backend: embedded"
            ) from None
        finally:
            probe.close()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
            client = QdrantClient(url=url, api_key=api_key, timeout=REQUEST_TIMEOUT_S)
        return cls(client, "server", where, batch_size)

    def where(self) -> str:
        return self._where

    def _translate(self, op: str, name: str, exc: Exception) -> StoreError:
        if isinstance(exc, UnexpectedResponse):
            detail = exc.content.decode("utf-8", "replace")[:300] if exc.content else exc.reason_phrase
            return StoreError(f"{op} on collection {name!r} in {self.where()} failed: HTTP {exc.status_code} {detail}")
        if isinstance(exc, ResponseHandlingException):
            return StoreError(f"{op} on collection {name!r}: lost {self.where()} ({_reason(exc)})")
        return StoreError(f"{op} on collection {name!r} in {self.where()} failed: {_reason(exc)}")

    # ------------------------------------------------------------------ primitives
    def _describe(self, name: str) -> CollectionMeta | None:
        with self._guarded("describe", name):
            if not self.client.collection_exists(name):
                return None
            config = self.client.get_collection(name).config
        vectors = config.params.vectors
        dim = vectors.size if isinstance(vectors, models.VectorParams) else None
        distance = vectors.distance.value.lower() if isinstance(vectors, models.VectorParams) else None
        record = (config.metadata or {}).get(META_KEY)
        encoder = record.get("encoder") if isinstance(record, dict) else None
        return CollectionMeta(dim=dim, encoder=encoder if isinstance(encoder, str) else None, distance=distance)

    def _create(self, name: str, dim: int, encoder: str) -> None:
        with self._guarded("create", name):
            self.client.create_collection(
                name,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                metadata={META_KEY: meta_record(dim, encoder)},
            )
            self._create_indexes(name, PAYLOAD_INDEXES)
        found = self._describe(name)
        if found is None or found.encoder != encoder:
            with self._guarded("drop", name):
                self.client.delete_collection(name)
            raise StoreError(
                f"{self.where()} did not keep the collection's metadata (the encoder it was built with); "
                f"mmd needs Qdrant server >= 1.16"
            )

    def _create_indexes(self, name: str, fields: dict[str, str]) -> None:
        with warnings.catch_warnings():
            # local mode accepts the indexes and warns that it ignores them; the server uses them
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            for field, kind in fields.items():
                self.client.create_payload_index(name, field, field_schema=_SCHEMA_TYPES[kind], wait=True)

    def _repair(self, name: str) -> None:
        if self.backend == "local":
            return  # local mode keeps no payload indexes to repair
        with self._guarded("index", name):
            have = set(self.client.get_collection(name).payload_schema or {})
            self._create_indexes(name, {f: k for f, k in PAYLOAD_INDEXES.items() if f not in have})

    def _drop(self, name: str) -> None:
        with self._guarded("drop", name):
            self.client.delete_collection(name)

    def _write(self, name: str, pids: list[str], vectors: np.ndarray, payloads: list[dict]) -> None:
        with self._guarded("upsert", name):
            self.client.upsert(name, points=models.Batch(ids=pids, vectors=vectors.tolist(), payloads=payloads), wait=True)

    def _query(
        self, name: str, vectors: np.ndarray, k: int, conditions: list[Condition], exclude: list[list[str]], exact: bool
    ) -> list[list[Hit]]:
        # local mode always scans every vector, and warns when told to
        params = models.SearchParams(exact=True) if exact and self.backend != "local" else None
        with self._guarded("search", name):
            if len(vectors) == 1:
                response = self.client.query_points(
                    name,
                    query=vectors[0].tolist(),
                    query_filter=_filter(conditions, exclude[0]),
                    search_params=params,
                    limit=k,
                    with_payload=True,
                )
                return [[_hit(p) for p in response.points]]
            requests = [
                models.QueryRequest(query=row, filter=_filter(conditions, ex), params=params, limit=k, with_payload=True)
                for row, ex in zip(vectors.tolist(), exclude)
            ]
            return [[_hit(p) for p in r.points] for r in self.client.query_batch_points(name, requests=requests)]

    def _scroll(
        self, name: str, fields: list[str], conditions: list[Condition] | None = None, with_vectors: bool = False
    ) -> Iterator[list[tuple[str, dict, list[float] | None]]]:
        offset = None
        flt = _filter(conditions or [], [])
        while True:
            with self._guarded("scroll", name):
                records, offset = self.client.scroll(
                    name, scroll_filter=flt, limit=_SCROLL_PAGE, offset=offset, with_payload=["item_id", *fields],
                    with_vectors=with_vectors,
                )
            yield [(str((r.payload or {}).get("item_id", r.id)), r.payload or {}, r.vector if with_vectors else None)
                   for r in records]
            if offset is None:
                return

    def _existing(self, name: str, pids: list[str]) -> list[str]:
        with self._guarded("retrieve", name):
            return [str(r.id) for r in self.client.retrieve(name, ids=pids, with_payload=False, with_vectors=False)]

    def _remove(self, name: str, pids: list[str]) -> None:
        with self._guarded("delete", name):
            self.client.delete(name, points_selector=models.PointIdsList(points=pids), wait=True)

    def _count(self, name: str) -> int:
        with self._guarded("count", name):
            return int(self.client.count(name, exact=True).count)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.client.close()
