"""The embed and index stages end to end: incremental, idempotent, rebuildable from files,
and refusing to mix encoders."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmd.demo import generate
from mmd.embed import run_embed
from mmd.formats.vectors import read_vectors
from mmd.index import run_index
from mmd.store import open_store
from mmd.ingest import run_ingest
from mmd.search import search_items
from mmd.store import StoreError
from mmd.validate import run_validate


@pytest.fixture
def pipeline(make_settings, tiny_open_clip):
    """Demo items ingested and validated, configured for the tiny open_clip encoder."""
    tiny = {"backend": "open_clip", "open_clip": {"model": tiny_open_clip, "pretrained": None}, "batch_size": 16}

    def _make(**embed):
        settings = make_settings(demo={"memes": 10, "claims": 6, "posts": 8}, embed={**tiny, **embed})
        if not (settings.path("inbox") / "demo").exists():
            generate(settings.path("inbox"), settings.params.demo)
            run_ingest(settings, show_progress=False)
            run_validate(settings)
        return settings

    return _make


def test_embed_then_index_then_nothing_to_redo(pipeline):
    settings = pipeline()
    first = run_embed(settings, show_progress=False)
    assert first.items == first.embedded > 0 and first.quarantined == 0
    assert first.encoded_texts > 0 and first.encoded_images > 0
    idx = run_index(settings)
    assert idx.total == idx.upserted == first.embedded

    again = run_embed(settings, show_progress=False)
    assert (again.encoded_texts, again.encoded_images) == (0, 0)  # the cache serves everything
    assert run_index(settings).upserted == 0
    _, v1, _ = read_vectors(settings.layout.vectors)
    assert v1.shape == (first.embedded, first.dim)
    assert np.allclose(np.linalg.norm(v1, axis=1), 1.0, atol=1e-5)


def test_index_removes_items_that_left_and_rebuilds_from_files_alone(pipeline):
    settings = pipeline()
    run_embed(settings, show_progress=False)
    run_index(settings)
    table, vectors, _ = read_vectors(settings.layout.vectors)
    query, query_id = vectors[3], table.column("id")[3].as_py()
    before = [h.id for h in search_items_vector(settings, query)]
    assert before[0] == query_id

    # the store is only an index: delete it, rebuild from the embeddings, same answers
    import shutil

    shutil.rmtree(settings.data_dir / settings.params.index.path)
    rebuilt = run_index(settings, rebuild=True)
    assert rebuilt.total == table.num_rows
    assert [h.id for h in search_items_vector(settings, query)] == before

    # an item that left the dataset leaves the index
    from mmd.formats.vectors import write_vectors

    keep = [i for i in range(table.num_rows) if i != 3]
    write_vectors(settings.layout.vectors, [table.column("id")[i].as_py() for i in keep],
                  [table.column("content_hash")[i].as_py() for i in keep],
                  np.array([table.column("has_image")[i].as_py() for i in keep]), vectors[keep], _encoder(settings))
    r = run_index(settings)
    assert (r.deleted, r.total) == (1, table.num_rows - 1)
    assert query_id not in [h.id for h in search_items_vector(settings, query)]


def _encoder(settings) -> str:
    return read_vectors(settings.layout.vectors)[2]


def search_items_vector(settings, vector, k=5):
    store = open_store(settings)
    try:
        return store.search(settings.params.index.items_collection, vector, k=k)
    finally:
        store.close()


def test_a_collection_built_with_another_encoder_is_refused(pipeline):
    settings = pipeline()
    run_embed(settings, show_progress=False)
    run_index(settings)
    vectors = settings.layout.vectors
    table, mixed, _ = read_vectors(vectors)
    from mmd.formats.vectors import write_vectors

    # the same items' vectors, claimed by another encoder: never mixed into the collection
    write_vectors(vectors, table.column("id").to_pylist(), table.column("content_hash").to_pylist(),
                  np.array(table.column("has_image").to_pylist()), mixed, "open_clip:another-model:v9")
    with pytest.raises(StoreError, match="rebuild"):
        run_index(settings)
    assert run_index(settings, rebuild=True).total == table.num_rows


def test_an_image_that_vanished_after_validation_is_quarantined(pipeline):
    settings = pipeline()
    from mmd.items import ITEM_SCHEMA, read_table

    items = read_table(settings.data_dir / "validated" / "items.parquet", ITEM_SCHEMA)
    with_image = [r for r in items.select(["id", "image_path"]).to_pylist() if r["image_path"]]
    victim = with_image[0]
    (settings.data_dir / victim["image_path"]).unlink()
    report = run_embed(settings, show_progress=False)
    lost = [r["id"] for r in with_image if r["image_path"] == victim["image_path"]]
    assert report.quarantined == len(lost) and report.embedded == report.items - len(lost)
    assert json.loads((settings.reports_dir / "embed.json").read_text())["reconciled"]
    import pyarrow.parquet as pq

    q = pq.read_table(settings.layout.embed_quarantine).to_pylist()
    assert {r["item_id"] for r in q} == set(lost) and {r["reason_code"] for r in q} == {"image_missing"}
    table, _, _ = read_vectors(settings.layout.vectors)
    assert not set(lost) & set(table.column("id").to_pylist())


def test_search_by_text_and_by_image(pipeline):
    settings = pipeline()
    run_embed(settings, show_progress=False)
    run_index(settings)
    hits = search_items(settings, "anything at all", None, k=3)
    assert len(hits) == 3 and all(-1.0 <= h.score <= 1.0 for h in hits)
    memes = search_items(settings, "anything", None, k=50, filters={"kind": "meme"})
    assert memes and {h.payload["kind"] for h in memes} == {"meme"}
    image = settings.path("inbox") / "demo" / "memes" / "images" / "demo_meme_0003.jpg"
    from mmd.items import sha256_hex

    by_image = search_items(settings, "", image, k=1)
    assert sha256_hex(image.read_bytes()) in by_image[0].payload["image_path"]  # the picture itself
