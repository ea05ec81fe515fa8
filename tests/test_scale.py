"""Scale-out on Dask (`mmd.scale`): shards by content hash, and a real multi-process LocalCluster giving
what one process gives: the embed stage's vectors and cache (and a rerun encoding nothing), the
detectors' scores in evaluate and review, and select's SemSim / DisSim scores. A scheduler that is not
there fails within seconds, saying so."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from mmd.config import ConfigError, ScaleConfig, load_settings, parse_params
from mmd.scale.engine import ScaleError, connect, open_engine
from mmd.scale.shards import merge, plan, shard_of

from .conftest import TINY_OPEN_CLIP, TINY_OPEN_CLIP_CONFIG, default_params

# --------------------------------------------------------------------------- shards, config (no cluster)


def test_a_key_lands_in_the_same_shard_whatever_else_is_sharded():
    keys = [f"{i:064x}" for i in range(500)]
    shards = {k: shard_of(k, 16) for k in keys}
    assert set(shards.values()) == set(range(16))  # every shard used: the hash spreads
    groups = plan(list(reversed(keys)) + ["extra"], 16)
    for shard, idx in groups:
        members = [(list(reversed(keys)) + ["extra"])[i] for i in idx]
        assert all(shard_of(k, 16) == shard for k in members)
        assert list(idx) == sorted(idx)  # input order kept inside a shard
    # the driver puts results back in input order, whatever order the shards come in
    values = np.arange(len(keys), dtype=np.float32)
    order = [idx for _, idx in plan(keys, 7)]
    assert np.array_equal(merge(len(keys), order[::-1], [values[i] for i in order[::-1]]), values)
    with pytest.raises(ValueError, match="came back from no shard"):
        merge(len(keys), order[1:], [values[i] for i in order[1:]])


def test_the_scale_section_is_strict_and_its_default_is_one_process():
    assert parse_params({}).scale.engine == "none"
    with open_engine(parse_params({}).scale) as engine:
        assert engine is None
    with pytest.raises(ConfigError, match="scale.workerz: unknown key"):
        parse_params({"scale": {"workerz": 4}})
    with pytest.raises(ConfigError, match="engine is none"):
        parse_params({"scale": {"scheduler": "tcp://10.0.0.1:8786"}})
    with pytest.raises(ConfigError, match="not a scheduler address"):
        parse_params({"scale": {"engine": "dask", "scheduler": "http://10.0.0.1/dask"}})
    assert parse_params({"scale": {"engine": "dask", "scheduler": "tcp://dask-scheduler:8786"}}).scale.shards == 32


def test_embedding_shards_are_the_distinct_cache_misses_by_content_hash(tmp_path):
    from mmd.encoders import EmbeddingCache, text_key
    from mmd.scale.embed import shard_payloads

    items = [{"id": f"i{k}", "text": f"caption {k % 5}", "image_path": f"images/{k % 3}.jpg",
              "image_sha256": f"{k % 3:064x}"} for k in range(12)]
    cache = EmbeddingCache(tmp_path / "cache", "test-encoder", 4, 4)
    cache.put_texts([text_key("caption 0")], np.ones((1, 4), np.float32))
    payloads = shard_payloads(items, cache, tmp_path, 4)
    texts = [kt for p in payloads.values() for kt in p["texts"]]
    images = [ki for p in payloads.values() for ki in p["images"]]
    assert sorted(t for _, t in texts) == [f"caption {k}" for k in range(1, 5)]  # each once, the cached one not
    assert sorted(k for k, _ in images) == [f"{k:064x}" for k in range(3)]
    for shard, p in payloads.items():
        assert all(shard_of(key, 4) == shard for key, _ in p["texts"] + p["images"])


def test_a_worker_rebuilds_only_the_declared_sections_with_its_own_threads(make_settings):
    from mmd.config import UndeclaredSection
    from mmd.scale.spec import worker_spec

    settings = make_settings(embed={"threads": 8, "num_workers": 2}, scale={"engine": "dask", "torch_threads": 3})
    spec = worker_spec(settings.for_stage("embed", ("embed", "scale")), ("embed",))
    assert set(spec["params"]) == {"paths", "embed"} and spec["root"] == str(settings.root)
    assert (spec["params"]["embed"]["threads"], spec["params"]["embed"]["num_workers"]) == (3, 0)
    assert parse_params(spec["params"]).embed.backend == settings.params.embed.backend
    with pytest.raises(UndeclaredSection, match="'train'"):
        worker_spec(settings.for_stage("embed", ("embed", "scale")), ("embed", "train"))


def test_a_scheduler_that_is_not_there_fails_fast_and_says_where():
    started = time.monotonic()
    with pytest.raises(ScaleError, match=r"no Dask scheduler answered at tcp://127\.0\.0\.1:1 within 2 s"):
        connect(ScaleConfig(engine="dask", scheduler="tcp://127.0.0.1:1", connect_timeout_s=2))
    assert time.monotonic() - started < 10


def test_a_scheduler_without_workers_fails_fast():
    from distributed import LocalCluster

    with LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR) as empty:
        started = time.monotonic()
        with pytest.raises(ScaleError, match="has no worker after 1 s"):
            connect(ScaleConfig(engine="dask", scheduler=empty.scheduler_address, connect_timeout_s=1))
        assert time.monotonic() - started < 10


def test_a_local_cluster_starts_workers_with_torch_threads_and_glibc_adaptive_malloc(monkeypatch):
    import os

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with open_engine(ScaleConfig(engine="dask", workers=1, torch_threads=2, connect_timeout_s=60)) as engine:
        env = engine.client.run(lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS")))
        assert list(env.values()) == [(None, "2")]
        # and the nanny's writes into this process's environment are undone
        assert "MALLOC_TRIM_THRESHOLD_" not in os.environ and "OMP_NUM_THREADS" not in os.environ


# --------------------------------------------------------------------------- a real multi-process cluster


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory) -> str:
    """A LocalCluster of 2 worker processes (1 thread each) that know the tiny open_clip architecture."""
    import open_clip
    from distributed import Client, LocalCluster

    path = tmp_path_factory.mktemp("open_clip_cfg_workers") / f"{TINY_OPEN_CLIP}.json"
    path.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(path)
    cluster = LocalCluster(processes=True, n_workers=2, threads_per_worker=1, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.ERROR)
    try:
        with Client(cluster, set_as_default=False) as client:
            client.run(open_clip.add_model_config, str(path))  # workers are fresh processes
        yield cluster.scheduler_address
    finally:
        cluster.close()


def _ran(scheduler: str) -> set[str]:
    """The kinds of task the cluster has run (encode_shard, score_shard, ...): proof the work ran there."""
    from distributed import Client

    with Client(scheduler, set_as_default=False) as client:
        return set(client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes)))


def _with_scale(root: Path, **scale) -> object:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["scale"] = scale
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return load_settings(root / "params.yaml")


def _validated_project(root: Path) -> None:
    """A small demo corpus, ingested and validated, with the tiny open_clip encoder configured."""
    from mmd.demo import generate
    from mmd.ingest import run_ingest
    from mmd.validate import run_validate

    root.mkdir()
    params = default_params()
    params["demo"].update(memes=16, claims=8, posts=10)
    params["embed"].update(backend="open_clip", open_clip={"model": TINY_OPEN_CLIP, "pretrained": None}, batch_size=4)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(root / "params.yaml")
    generate(settings.path("inbox"), settings.params.demo)
    run_ingest(settings, show_progress=False)
    run_validate(settings)


def _cache(settings) -> dict[str, np.ndarray]:
    out = {}
    for part in sorted(settings.layout.embed_cache.rglob("*.parquet")):
        table = pq.read_table(part)
        vecs = np.stack(table.column("vec").to_pylist()).astype(np.float32)
        out.update({f"{part.name.split('-')[0]}:{k}": v for k, v in zip(table.column("key").to_pylist(), vecs)})
    return out


@pytest.mark.slow
def test_sharded_embed_writes_what_one_process_writes_and_a_rerun_encodes_nothing(scheduler, tmp_path,
                                                                                  tiny_open_clip):
    from mmd import stages
    from mmd.formats.vectors import read_vectors

    _validated_project(tmp_path / "one")
    shutil.copytree(tmp_path / "one", tmp_path / "many")
    one = load_settings(tmp_path / "one" / "params.yaml")
    many = _with_scale(tmp_path / "many", engine="dask", scheduler=scheduler, shards=5)
    embed = stages.get("embed")
    a, b = embed.run(one, show_progress=False), embed.run(many, show_progress=False)

    assert b.embedded == a.embedded > 20 and b.quarantined == a.quarantined == 0
    assert (b.encoded_texts, b.encoded_images) == (a.encoded_texts, a.encoded_images)
    assert b.encoded_images > 5 and b.cached_texts == b.cached_images == 0
    ta, va, ea = read_vectors(one.layout.vectors)
    tb, vb, eb = read_vectors(many.layout.vectors)
    assert ea == eb and tb.column("id").to_pylist() == ta.column("id").to_pylist()
    assert tb.column("has_image").to_pylist() == ta.column("has_image").to_pylist()
    np.testing.assert_allclose(vb, va, atol=1e-5)
    assert "encode_shard" in _ran(scheduler)
    ca, cb = _cache(one), _cache(many)
    assert cb.keys() == ca.keys()
    np.testing.assert_allclose(np.stack([cb[k] for k in ca]), np.stack(list(ca.values())), atol=1e-5)

    again = embed.run(many, show_progress=False)
    assert (again.encoded_texts, again.encoded_images) == (0, 0)
    assert (again.cached_texts, again.cached_images) == (a.encoded_texts, a.encoded_images)
    assert _cache(many).keys() == cb.keys()  # nothing written twice


@pytest.mark.slow
def test_sharded_scoring_of_the_cycle_stages_gives_the_one_process_scores(scheduler, demo_cycle, tmp_path):
    from mmd.cycle import run_stage

    one, many = tmp_path / "one", tmp_path / "many"
    for root in (one, many):
        shutil.copytree(demo_cycle, root)
        for name in ("scored.parquet", "queue.parquet"):  # every validated item is fresh for review again
            (root / "data" / "review" / name).unlink()
    settings = {"one": load_settings(one / "params.yaml"),
                "many": _with_scale(many, engine="dask", scheduler=scheduler, shards=6)}
    for s in settings.values():
        for stage in ("select", "evaluate", "review"):
            run_stage(s, stage, use_dvc=False)
    a, b = settings["one"].layout, settings["many"].layout
    assert {"score_shard", "semsim_shard", "potential_shard"} <= _ran(scheduler)

    for family in ("cmc", "rgcl"):
        ea, eb = pq.read_table(a.evaluation_scores(family)), pq.read_table(b.evaluation_scores(family))
        assert eb.column("id").to_pylist() == ea.column("id").to_pylist() and ea.num_rows > 20
        np.testing.assert_allclose(eb.column("score").to_numpy(), ea.column("score").to_numpy(), atol=1e-5)

    ra, rb = pq.read_table(a.review_scored).to_pylist(), pq.read_table(b.review_scored).to_pylist()
    assert [r["id"] for r in rb] == [r["id"] for r in ra] and len(ra) > 20
    for x, y in zip(ra, rb):
        sa, sb = json.loads(x["scores"]), json.loads(y["scores"])
        assert sa.keys() == sb.keys() == {"cmc", "rgcl"}
        assert all(abs(sa[f] - sb[f]) < 1e-5 for f in sa)
    qa, qb = pq.read_table(a.review_queue), pq.read_table(b.review_queue)
    assert qb.column("id").to_pylist() == qa.column("id").to_pylist()

    sa, sb = pq.read_table(a.selection_scores), pq.read_table(b.selection_scores)
    assert sb.column("id").to_pylist() == sa.column("id").to_pylist()
    for column in sa.column_names[1:]:
        np.testing.assert_allclose(sb.column(column).to_numpy(), sa.column(column).to_numpy(), atol=1e-5)


@pytest.mark.slow
def test_sharded_semsim_and_dissim_stream_the_candidates_and_equal_one_process(scheduler):
    from mmd.config import SelectConfig
    from mmd.scale.synth import ShardedScoring
    from mmd.synth.select import choose, chunks_from

    rng = np.random.default_rng(0)
    candidates = rng.normal(size=(1500, 24)).astype(np.float32)
    target = (rng.normal(size=(300, 24)) + 0.3).astype(np.float32)
    ids = [f"synthetic-{i}" for i in range(len(candidates))]
    cfg = SelectConfig(k=50, dissim={"sample": 400, "chunk": 256})
    with open_engine(ScaleConfig(engine="dask", scheduler=scheduler)) as engine:
        scoring = ShardedScoring(engine, ids, shards=7)
        for method in ("semsim", "dissim", "hybrid"):
            a = choose(method, chunks_from(candidates, 200), len(ids), target, 50, cfg)
            b = choose(method, chunks_from(candidates, 200), len(ids), target, 50, cfg, scoring)
            assert b.method == a.method and np.array_equal(b.order, a.order), method
            np.testing.assert_allclose(b.score, a.score, atol=1e-5)
            for name in a.scores:
                np.testing.assert_allclose(b.scores[name], a.scores[name], atol=1e-5)
        with pytest.raises(ValueError, match="ended after 1400 of its 1500 ids"):
            scoring.semsim(chunks_from(candidates[:1400], 200)(), target)
