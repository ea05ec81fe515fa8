"""The vector store, on the real engines: every behaviour runs on both the embedded
backend (qdrant-edge) and qdrant-client's local mode, which speaks the server's API, so
the server path is exercised without a server. Results are checked against numpy.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from mmd.config import IndexConfig, Params, Settings
from mmd.store import Hit, StoreError, VectorStore, open_store, point_id, store_path

BACKENDS = ["embedded", "local"]
DIM = 32
N = 200  # points in a filled collection
ENCODER = "offline:test-encoder@1"


# --------------------------------------------------------------------------- helpers
def item_ids(n: int, prefix: str = "it") -> list[str]:
    return [f"{prefix}{i:05d}" for i in range(n)]


def random_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def payloads_for(ids: list[str]) -> list[dict]:
    kinds, sources, splits = ("meme", "fact_check", "post"), ("hm", "harmeme", "claims", "tweets"), ("train", "dev", "test")
    return [
        {
            "label": i % 2,
            "kind": kinds[i % 3],
            "source": sources[i % 4],
            "split": splits[i % 3],
            "ingested_at": f"2024-05-{1 + i % 28:02d}T12:00:00+00:00",
        }
        for i, _ in enumerate(ids)
    ]


def brute_force(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int, keep: np.ndarray | None = None):
    """(ids, scores) of the k nearest by cosine, over the rows where keep is True."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = unit @ (query / np.linalg.norm(query))
    if keep is not None:
        scores = np.where(keep, scores, -np.inf)
    order = np.argsort(-scores, kind="stable")[:k]
    order = [i for i in order if np.isfinite(scores[i])]
    return [ids[i] for i in order], scores[order]


def assert_same_ranking(hits: list[Hit], expected_ids: list[str], expected_scores: np.ndarray) -> None:
    assert [h.id for h in hits] == expected_ids
    np.testing.assert_allclose([h.score for h in hits], expected_scores, atol=1e-4)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def open_(tmp_path: Path, backend: str):
    """open_() -> a store of this backend in tmp_path; the same folder every call."""
    opened: list[VectorStore] = []

    def _open() -> VectorStore:
        store = open_store(IndexConfig(backend=backend), tmp_path / "data")
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


@pytest.fixture
def store(open_) -> VectorStore:
    return open_()


def fill(store: VectorStore):
    ids = item_ids(N)
    vectors = random_vectors(N)
    payloads = payloads_for(ids)
    store.ensure_collection("items", DIM, ENCODER)
    assert store.upsert("items", ids, vectors, payloads, batch_size=64) == N
    return store, ids, vectors, payloads


@pytest.fixture
def filled(store: VectorStore):
    """A collection of N random items with payloads, for tests that change it."""
    return fill(store)


@pytest.fixture(scope="module", params=BACKENDS)
def shared(request, tmp_path_factory):
    """The same, filled once per backend for the tests that only read it.

    Local mode commits every point to SQLite on its own, so filling is what costs here.
    """
    store = open_store(IndexConfig(backend=request.param), tmp_path_factory.mktemp(request.param))
    yield fill(store)
    store.close()


# --------------------------------------------------------------------------- collections
def test_create_and_info(store: VectorStore):
    assert store.info("items") is None
    store.ensure_collection("items", DIM, ENCODER)
    store.ensure_collection("items", DIM, ENCODER)  # a second time is a no-op
    assert store.info("items") == {"dim": DIM, "encoder": ENCODER, "count": 0}
    assert store.count("items") == 0
    assert store.ids("items") == set()
    assert store.search("items", random_vectors(1)[0], k=5) == []


def test_collections_are_separate(store: VectorStore):
    store.ensure_collection("items", DIM, ENCODER)
    store.ensure_collection("synthetic", 8, "other-encoder")
    store.upsert("items", ["a"], random_vectors(1), [{}])
    assert store.count("items") == 1 and store.count("synthetic") == 0
    assert store.info("synthetic") == {"dim": 8, "encoder": "other-encoder", "count": 0}


def test_missing_collection_is_a_clear_error(store: VectorStore):
    for call in (
        lambda: store.count("items"),
        lambda: store.ids("items"),
        lambda: store.search("items", random_vectors(1)[0]),
        lambda: store.upsert("items", ["a"], random_vectors(1), [{}]),
        lambda: store.delete("items", ["a"]),
    ):
        with pytest.raises(StoreError, match=r"no collection 'items'.*mmd index"):
            call()
    with pytest.raises(StoreError, match="collection names"):
        store.ensure_collection("../escape", DIM, ENCODER)


# --------------------------------------------------------------------------- writes
def test_upsert_count_ids_and_payload(shared):
    store, ids, _, payloads = shared
    assert store.count("items") == N
    assert store.ids("items") == set(ids)
    hit = store.search("items", random_vectors(N)[7], k=1)[0]
    assert hit.id == ids[7]
    assert hit.payload == {**payloads[7], "item_id": ids[7]}


def test_hashes_for_incremental_indexing(store: VectorStore):
    store.ensure_collection("items", DIM, ENCODER)
    store.upsert("items", ["a", "b"], random_vectors(2), [{"content_hash": "h1", "text": "x"}, {}])
    assert store.hashes("items") == {"a": "h1", "b": None}
    assert store.hashes("items", field="text") == {"a": "x", "b": None}


def test_reupsert_is_idempotent(filled):
    store, ids, vectors, payloads = filled
    moved = random_vectors(N, seed=1)
    changed = [{**p, "label": 1 - p["label"]} for p in payloads]
    assert store.upsert("items", ids, moved, changed) == N
    assert store.count("items") == N
    assert store.ids("items") == set(ids)
    # the points were overwritten, not duplicated: vector and payload are the new ones
    hit = store.search("items", moved[11], k=1)[0]
    assert hit.id == ids[11] and hit.score == pytest.approx(1.0, abs=1e-4)
    assert hit.payload["label"] == changed[11]["label"]


def test_point_ids_are_deterministic():
    assert point_id("abc") == point_id("abc") != point_id("abd")
    assert len(point_id("abc")) == 36  # a UUID string, what Qdrant accepts


def test_wrong_dim_rejected_nothing_written(store: VectorStore):
    store.ensure_collection("items", DIM, ENCODER)
    with pytest.raises(StoreError, match=rf"dim {DIM + 1}.*dim {DIM}.*mmd index --rebuild"):
        store.upsert("items", item_ids(10), random_vectors(10, DIM + 1), payloads_for(item_ids(10)))
    with pytest.raises(StoreError, match="2-D"):
        store.upsert("items", ["a"], random_vectors(1)[0], [{}])
    with pytest.raises(StoreError, match="floating point"):
        store.upsert("items", ["a"], np.ones((1, DIM), dtype=np.int64), [{}])
    assert store.count("items") == 0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vectors_rejected_naming_items(store: VectorStore, bad: float):
    store.ensure_collection("items", DIM, ENCODER)
    ids = item_ids(50)
    vectors = random_vectors(50)
    vectors[3, 5] = bad
    vectors[47, 0] = bad  # in the last batch: nothing before it may be written either
    with pytest.raises(StoreError, match=r"NaN or infinite.*2 item\(s\): it00003, it00047") as err:
        store.upsert("items", ids, vectors, payloads_for(ids), batch_size=10)
    assert "it00004" not in str(err.value)
    assert store.count("items") == 0


def test_other_bad_input_rejected_nothing_written(store: VectorStore):
    store.ensure_collection("items", DIM, ENCODER)
    ids = item_ids(5)
    vectors = random_vectors(5)
    zero = vectors.copy()
    zero[2] = 0
    with pytest.raises(StoreError, match="all-zero.*it00002"):
        store.upsert("items", ids, zero, payloads_for(ids))
    with pytest.raises(StoreError, match="repeated.*it00001"):
        store.upsert("items", ids + ["it00001"], random_vectors(6), payloads_for(ids + ["x"]))
    with pytest.raises(StoreError, match="5 ids but 4 payloads"):
        store.upsert("items", ids, vectors, payloads_for(ids)[:4])
    with pytest.raises(StoreError, match="it00004.*not plain JSON"):
        store.upsert("items", ids, vectors, payloads_for(ids)[:4] + [{"score": float("nan")}])
    assert store.count("items") == 0
    # numpy scalars in payloads are fine: they become plain numbers
    store.upsert("items", ids[:1], vectors[:1], [{"label": np.int64(1)}])
    assert store.search("items", vectors[0], k=1, filter={"label": 1})[0].id == ids[0]


def test_delete(filled):
    store, ids, vectors, _ = filled
    gone = ids[:20]
    assert store.delete("items", gone + ["never-indexed"]) == 20
    assert store.count("items") == N - 20
    assert store.ids("items") == set(ids[20:])
    hits = store.search("items", vectors[0], k=N)
    assert not {h.id for h in hits} & set(gone)
    assert store.delete("items", gone) == 0  # already gone
    assert store.delete("items", []) == 0


# --------------------------------------------------------------------------- search
def test_top_k_matches_brute_force(shared):
    store, ids, vectors, _ = shared
    for query in random_vectors(8, seed=42):
        expected_ids, expected_scores = brute_force(vectors, ids, query, 10)
        assert_same_ranking(store.search("items", query, k=10), expected_ids, expected_scores)


def test_exact_search_after_optimize(filled):
    store, ids, vectors, _ = filled
    store.optimize("items")  # embedded: builds the index; local: nothing to build
    query = random_vectors(1, seed=9)[0]
    expected = brute_force(vectors, ids, query, 10, np.array([p % 2 == 1 for p in range(N)]))
    assert_same_ranking(store.search("items", query, k=10, filter={"label": 1}, exact=True), *expected)
    [hits] = store.search_batch("items", query[None, :], k=10, filter={"label": 1}, exact=True)
    assert_same_ranking(hits, *expected)


def test_search_batch_matches_search(shared):
    store, ids, vectors, _ = shared
    queries = vectors[:6] + 0.1 * random_vectors(6, seed=3)
    batch = store.search_batch("items", queries, k=5, filter={"split": "train"})
    assert len(batch) == 6
    for query, hits in zip(queries, batch):
        single = store.search("items", query, k=5, filter={"split": "train"})
        assert [h.id for h in hits] == [h.id for h in single]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in single], atol=1e-5)
    # one exclude list per query: mining neighbours of items that are themselves indexed
    own = store.search_batch("items", vectors[:6], k=3, exclude_ids=[[i] for i in ids[:6]])
    for own_id, hits in zip(ids[:6], own):
        assert own_id not in {h.id for h in hits} and len(hits) == 3
    assert store.search_batch("items", np.empty((0, DIM), np.float32), k=3) == []


@pytest.mark.parametrize(
    "filter",
    [
        {"label": 1},
        {"label": 0, "kind": "meme"},
        {"kind": ["meme", "post"]},
        {"source": "harmeme", "split": ["train", "test"]},
        {"label": [0, 1], "split": "dev"},
    ],
    ids=str,
)
def test_filtered_search_matches_brute_force(shared, filter: dict):
    store, ids, vectors, payloads = shared
    keep = np.array(
        [
            all(p[f] in (v if isinstance(v, list) else [v]) for f, v in filter.items())
            for p in payloads
        ]
    )
    for query in random_vectors(4, seed=5):
        hits = store.search("items", query, k=10, filter=filter)
        expected_ids, expected_scores = brute_force(vectors, ids, query, 10, keep)
        assert_same_ranking(hits, expected_ids, expected_scores)
        for hit in hits:
            for field, value in filter.items():
                assert hit.payload[field] in (value if isinstance(value, list) else [value])


def test_filter_with_no_match_and_bad_filters(shared):
    store, _, vectors, _ = shared
    assert store.search("items", vectors[0], filter={"source": "nowhere"}) == []
    assert store.search("items", vectors[0], filter={"generator": "swap"}) == []  # field absent
    with pytest.raises(StoreError, match="filter"):
        store.search("items", vectors[0], filter={"label": 1.5})
    with pytest.raises(StoreError, match="filter"):
        store.search("items", vectors[0], filter={"kind": []})
    with pytest.raises(StoreError, match="k must be"):
        store.search("items", vectors[0], k=0)
    with pytest.raises(StoreError, match=f"dim {DIM + 1}"):
        store.search("items", random_vectors(1, DIM + 1)[0])
    with pytest.raises(StoreError, match="NaN"):
        store.search("items", np.full(DIM, np.nan, np.float32))


def test_exclude_ids(shared):
    store, ids, vectors, _ = shared
    assert store.search("items", vectors[5], k=1)[0].id == ids[5]
    hits = store.search("items", vectors[5], k=10, exclude_ids=[ids[5]])
    keep = np.array([i != ids[5] for i in ids])
    assert_same_ranking(hits, *brute_force(vectors, ids, vectors[5], 10, keep))
    # with a filter too, and ids that were never indexed are harmless
    hits = store.search("items", vectors[5], k=5, filter={"label": 1}, exclude_ids=[ids[5], "nope"])
    assert ids[5] not in {h.id for h in hits} and all(h.payload["label"] == 1 for h in hits)


# --------------------------------------------------------------------------- identity
def test_other_encoder_refused_until_rebuild(filled):
    store, ids, vectors, payloads = filled
    with pytest.raises(StoreError) as err:
        store.ensure_collection("items", DIM, "open_clip:ViT-B-32")
    message = str(err.value)
    assert "mmd index --rebuild" in message and ENCODER in message and "open_clip:ViT-B-32" in message
    with pytest.raises(StoreError, match=rf"dim {DIM}.*dim 64.*mmd index --rebuild"):
        store.ensure_collection("items", 64, ENCODER)
    assert store.count("items") == N  # refusing touched nothing

    store.ensure_collection("items", 64, "open_clip:ViT-B-32", rebuild=True)
    assert store.info("items") == {"dim": 64, "encoder": "open_clip:ViT-B-32", "count": 0}
    store.upsert("items", ids[:10], random_vectors(10, 64), payloads[:10])
    assert store.count("items") == 10
    with pytest.raises(StoreError, match="dim 32 but the collection holds dim 64"):
        store.upsert("items", ids, vectors, payloads)


def test_persistence_across_reopen(open_):
    store = open_()
    ids = item_ids(200)
    vectors = random_vectors(200)
    store.ensure_collection("items", DIM, ENCODER)
    store.upsert("items", ids, vectors, payloads_for(ids))
    store.delete("items", ids[:5])
    store.close()

    again = open_()
    assert again.info("items") == {"dim": DIM, "encoder": ENCODER, "count": 195}
    assert again.ids("items") == set(ids[5:])
    assert again.search("items", vectors[9], k=1)[0].id == ids[9]
    again.ensure_collection("items", DIM, ENCODER)  # the recorded identity survived
    with pytest.raises(StoreError, match="mmd index --rebuild"):
        again.ensure_collection("items", DIM, "another")


def test_one_open_store_per_folder(open_):
    first = open_()
    first.ensure_collection("items", DIM, ENCODER)
    first.upsert("items", ["a"], random_vectors(1), [{}])
    with pytest.raises(StoreError, match="open elsewhere|already accessed|cannot open"):
        second = open_()
        second.count("items")
    first.close()
    with pytest.raises(StoreError, match="closed"):
        first.count("items")


def test_rebuild_does_not_pull_an_open_collection_away(tmp_path: Path):
    cfg = IndexConfig(backend="embedded")
    with open_store(cfg, tmp_path) as first, open_store(cfg, tmp_path) as second:
        first.ensure_collection("items", DIM, ENCODER)
        first.upsert("items", ["a"], random_vectors(1), [{}])
        with pytest.raises(StoreError, match="open elsewhere"):
            second.ensure_collection("items", DIM, "another", rebuild=True)
        assert first.count("items") == 1


def test_interrupted_create_is_refused(tmp_path: Path):
    """An embedded shard whose identity file never got written is not trusted."""
    cfg = IndexConfig(backend="embedded")
    with open_store(cfg, tmp_path) as store:
        store.ensure_collection("items", DIM, ENCODER)
    (store_path(cfg, tmp_path) / "items" / "collection.json").unlink()
    with open_store(cfg, tmp_path) as store:
        assert store.info("items") == {"dim": DIM, "encoder": None, "count": 0}
        with pytest.raises(StoreError, match="no record of the encoder.*mmd index --rebuild"):
            store.ensure_collection("items", DIM, ENCODER)
        store.ensure_collection("items", DIM, ENCODER, rebuild=True)
        assert store.info("items")["encoder"] == ENCODER


def test_open_store_from_settings(tmp_path: Path):
    settings = Settings(Params(), tmp_path)
    with open_store(settings) as store:
        store.ensure_collection("items", 4, ENCODER)
    assert (tmp_path / "data" / "qdrant" / "embedded" / "items" / "shard").is_dir()


# --------------------------------------------------------------------------- server
def test_server_down_fails_fast(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(StoreError, match=rf"cannot reach the Qdrant server at http://127.0.0.1:{port}"):
        open_store(IndexConfig(backend="server", url=f"http://127.0.0.1:{port}"))
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("backend", ["embedded", "local"])
def test_vectors_pages_back_what_was_stored_with_filters(tmp_path, backend):
    from mmd.config import IndexConfig
    from mmd.store import open_store

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(2500, 8)).astype(np.float32)
    ids = [f"i{n}" for n in range(len(vecs))]
    payloads = [{"label": n % 2, "kind": "meme"} for n in range(len(vecs))]
    with open_store(IndexConfig(backend=backend), tmp_path) as store:
        store.ensure_collection("items", 8, "enc")
        store.upsert("items", ids, vecs, payloads)
        pages = list(store.vectors("items"))
        assert len(pages) >= 2  # more than one page: memory stays bounded
        got = {i: v for page_ids, mat, _ in pages for i, v in zip(page_ids, mat)}
        assert set(got) == set(ids)
        unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
        for n in (0, 1, 2499):
            np.testing.assert_allclose(got[ids[n]], unit[n], atol=1e-5)
        odd = [i for page_ids, _, pl in store.vectors("items", {"label": 1}, fields=["label"]) for i, p in zip(page_ids, pl)
               if p["label"] == 1]
        assert sorted(odd) == sorted(ids[1::2])
        even = [i for page_ids, _, _ in store.vectors("items", {"label": {"not": 1}}) for i in page_ids]
        assert sorted(even) == sorted(ids[0::2])
        hits = store.search("items", vecs[1], k=5, filter={"label": {"not": [1]}, "kind": "meme"}, exact=True)
        assert len(hits) == 5 and all(h.payload["label"] == 0 for h in hits)
        with pytest.raises(StoreError, match="only mapping"):
            store.search("items", vecs[1], filter={"label": {"is": 1}})
        with pytest.raises(StoreError, match="no collection"):
            list(store.vectors("nope"))
