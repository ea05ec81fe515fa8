"""The synthesize and select stages end to end on the demo data: provenance, determinism,
increments, budgets, held-out splits, label rules, outputs, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmd.embed import run_embed
from mmd.formats.vectors import read_vectors
from mmd.index import run_index
from mmd.store import open_store
from mmd.ingest import run_ingest
from mmd.formats.pool import read_pool
from mmd.synth.generate import run_synthesize
from mmd.synth.scoring import SelectionError
from mmd.synth.select import run_select
from mmd.validate import run_validate


@pytest.fixture(scope="module")
def _prepared(tmp_path_factory, tiny_open_clip):
    """Demo items ingested, validated, embedded (tiny open_clip) and indexed, once per module."""
    from .conftest import prepare_demo_project

    root = tmp_path_factory.mktemp("indexed")
    prepare_demo_project(root, tiny_open_clip, dict(memes=14, claims=8, posts=16))
    return root


@pytest.fixture
def indexed(_prepared, tmp_path):
    """A private copy of the prepared project, with params sections overridden."""
    import shutil

    import yaml

    from mmd.config import load_settings

    count = iter(range(100))

    def _make(synthesize: dict | None = None, select: dict | None = None) -> object:
        root = tmp_path / f"project{next(count)}"
        shutil.copytree(_prepared, root)
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["synthesize"].update(synthesize or {})
        params["select"].update(select or {"k": 10})
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return load_settings(root / "params.yaml")

    return _make


def _pool(settings) -> list[dict]:
    return read_pool(settings).to_pylist()


def test_every_generator_writes_items_with_provenance_and_vectors(indexed):
    settings = indexed()
    report = run_synthesize(settings)
    assert report.new == report.pool_after > 0 and report.to_dict()["reconciled"]
    pool = _pool(settings)
    by_gen = {g: [r for r in pool if r["generator"] == g] for g in ("out_of_context", "caption_edit", "meme_recompose")}
    assert all(by_gen.values()), {g: len(v) for g, v in by_gen.items()}
    items = {r["id"]: r for r in pq.read_table(settings.data_dir / "validated" / "items.parquet").to_pylist()}
    for r in pool:
        assert r["source"] == "synthetic" and r["split"] == "synthetic" and r["seed"] == 0
        assert r["parent_ids"] and all(p in items for p in r["parent_ids"])
        parent = items[r["parent_ids"][0]]
        assert r["group"] == parent["group"] and r["kind"] == parent["kind"]
        recipe = json.loads(r["extra"])["recipe"]
        assert recipe["parent"] == parent["id"]
    for r in by_gen["out_of_context"]:
        parent, donor = (items[i] for i in r["parent_ids"])
        assert r["text"] == parent["text"] and r["image_sha256"] == donor["image_sha256"] != parent["image_sha256"]
        if r["label"] == 1:
            assert donor["group"] != parent["group"]
        else:  # pristine: a truthful caption with another truthful picture of its own event
            assert donor["group"] == parent["group"] and parent["label"] == donor["label"] == 0
    for r in by_gen["caption_edit"]:
        parent, donor = (items[i] for i in r["parent_ids"])
        recipe = json.loads(r["extra"])["recipe"]
        assert r["label"] == 1 and r["text"] != parent["text"] and r["image_path"] == parent["image_path"]
        assert recipe["new"] in donor["text"] and recipe["old"] in parent["text"]
        assert r["text"] == parent["text"][: recipe["at"]] + recipe["new"] + parent["text"][recipe["at"] + len(recipe["old"]):]
    for r in by_gen["meme_recompose"]:
        parent = items[r["parent_ids"][0]]
        assert (settings.data_dir / r["image_path"]).is_file() and r["image_path"].startswith("synthetic/images/")
        if len(r["parent_ids"]) == 1:
            assert r["label"] == parent["label"]  # onto a template: the text decides
        else:
            donor = items[r["parent_ids"][1]]
            assert not (parent["label"] == 0 and donor["label"] == 1)  # the ambiguous case is never made
            assert r["label"] == (1 if parent["label"] == 1 else 0)
    table, mixed, encoder = read_vectors(settings.layout.pool_vectors)
    assert table.column("id").to_pylist() == [r["id"] for r in pool]
    assert np.allclose(np.linalg.norm(mixed, axis=1), 1.0, atol=1e-5)
    with open_store(settings) as store:
        assert store.count(settings.params.index.synthetic_collection) == len(pool)


def test_held_out_splits_never_parent_or_partner(indexed):
    settings = indexed()
    items = pq.read_table(settings.data_dir / "validated" / "items.parquet").to_pylist()
    held = {r["id"] for r in items if r["split"] in settings.params.synthesize.holdout_splits}
    assert held  # the demo memes have a val split
    run_synthesize(settings)
    assert not {p for r in _pool(settings) for p in r["parent_ids"]} & held


def test_generation_is_deterministic_and_incremental(indexed):
    settings = indexed()
    first = run_synthesize(settings)
    ids = [r["id"] for r in _pool(settings)]
    again = run_synthesize(settings)
    assert again.new == 0 and again.pool_after == first.pool_after  # every parent was tried once

    # the same inputs and seed from scratch give the same pool
    import shutil

    shutil.rmtree(settings.data_dir / "synthetic")
    run_synthesize(settings)
    assert [r["id"] for r in _pool(settings)] == ids
    # another seed gives other choices
    other = indexed(synthesize={"seed": 7})
    run_synthesize(other)
    assert [r["id"] for r in _pool(other)] != ids


def test_new_real_items_make_new_candidates_and_the_pool_keeps_its_history(indexed):
    settings = indexed()
    run_synthesize(settings)
    before = {r["id"] for r in _pool(settings)}
    post = ("post_id\tpost_text\tuser_id\timage_id(s)\tusername\ttimestamp\tlabel\n"
            "new_1\tHuge flood in Lisbon on 3 March 2021, 300 homes lost, says Maria Costa\t7\triverflood_real_1\tu\t"
            "Mon Jan 01 00:00:00 +0000 2021\treal\n")
    demo_posts = next((settings.path("inbox") / "demo").glob("**/*.tsv"))
    (demo_posts.parent / "later.tsv").write_text(post)
    run_ingest(settings, show_progress=False)
    run_validate(settings)
    run_embed(settings, show_progress=False)
    run_index(settings)
    report = run_synthesize(settings)
    after = _pool(settings)
    assert before <= {r["id"] for r in after}  # history kept
    new = [r for r in after if r["id"] not in before]
    assert report.new == len(new) > 0
    items = pq.read_table(settings.data_dir / "validated" / "items.parquet").to_pylist()
    lisbon = [r["id"] for r in items if "Lisbon" in r["text"]]
    assert len(lisbon) == 1
    assert {r["parent_ids"][0] for r in new} == set(lisbon)  # only the new post parented anything


def test_the_budget_defers_parents_to_the_next_run(indexed):
    settings = indexed(synthesize={"max_new_per_run": 5})
    first = run_synthesize(settings)
    assert first.new <= 5
    deferred = sum(g.deferred for g in first.generators.values())
    assert deferred > 0
    second = run_synthesize(settings)
    assert second.new > 0 and second.pool_after == first.pool_after + second.new


def test_select_writes_the_set_its_scores_features_and_report(indexed):
    settings = indexed(select={"k": 10, "method": "hybrid"})
    run_synthesize(settings)
    report = run_select(settings)
    p = settings.layout
    selected = pq.read_table(p.selected).to_pylist()
    assert len(selected) == report.selected == 10
    assert [r["rank"] for r in selected] == list(range(1, 11))
    assert all({"semsim", "dissim", "score", "generator", "parent_ids"} <= set(r) for r in selected)
    assert report.ranked_by.startswith("proxy:") and set(report.details["proxy_divergence"]) == {"semsim", "dissim"}
    table, mixed, _ = read_vectors(p.selected_features)
    assert table.column("id").to_pylist() == [r["id"] for r in selected] and mixed.shape[0] == 10
    scores = pq.read_table(p.selection_scores)
    assert scores.num_rows == report.candidates and sum(scores.column("selected").to_pylist()) == 10
    saved = json.loads(p.select_report.read_text())
    assert saved["k"] == 10 and saved["target"] > 0

    for method in ("random", "semsim", "dissim"):
        r = run_select(settings, method=method, k=5)
        assert r.selected == 5 and r.ranked_by == method


def test_k_larger_than_the_pool_selects_the_whole_pool(indexed):
    settings = indexed()
    run_synthesize(settings)
    report = run_select(settings, method="dissim", k=100_000)
    assert report.selected == report.candidates == len(_pool(settings))


def test_an_empty_real_target_is_a_clear_error(indexed):
    settings = indexed(select={"target": {"source": "no-such-source"}})
    run_synthesize(settings)
    with pytest.raises(SelectionError, match="real target set is empty"):
        run_select(settings)


def test_select_before_synthesize_is_a_clear_error(indexed):
    settings = indexed()
    with pytest.raises(SelectionError, match="run `mmd synthesize`"):
        run_select(settings)


def test_a_lost_store_comes_back_with_the_pool(indexed):
    settings = indexed()
    run_synthesize(settings)
    import shutil

    shutil.rmtree(settings.data_dir / settings.params.index.path)
    run_index(settings)
    with open_store(settings) as store:
        assert store.count(settings.params.index.synthetic_collection) == len(_pool(settings))
