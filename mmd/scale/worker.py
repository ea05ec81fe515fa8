"""What runs on a Dask worker: the per-worker state (models loaded once) and one function per kind of shard.

Every task gets a `spec` from the driver: the params sections it needs (as JSON values), the folder the
params came from, and torch's thread count. The worker rebuilds Settings from it and keeps what is
costly to load (the encoder, a detector, the read-only embedding cache) in its `WorkerState`, keyed by
what decides it, so a worker loads each model once however many shards it runs. Tasks never write:
they return arrays, and the driver merges and writes.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
from distributed import get_worker
from distributed.diagnostics.plugin import WorkerPlugin

# models a worker keeps loaded: a cycle needs an encoder and a few detectors; older ones are dropped
MAX_OBJECTS = 8


class WorkerState(WorkerPlugin):
    """Loaded models per worker process (registered by `mmd.scale.engine.connect`)."""

    name = "mmd"
    # registering again (the next stage on a long-running cluster) keeps the models already loaded
    idempotent = True

    def setup(self, worker) -> None:
        self.objects: OrderedDict[Any, Any] = OrderedDict()
        # one load per key: a second task thread asking for the same model waits for the first
        self.lock = threading.RLock()

    def teardown(self, worker) -> None:
        self.objects.clear()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.objects:
                self.objects.move_to_end(key)
                return self.objects[key]
            value = make()
            self.objects[key] = value
            while len(self.objects) > MAX_OBJECTS:
                self.objects.popitem(last=False)
            return value


def _state() -> WorkerState:
    state = get_worker().plugins.get(WorkerState.name)
    if state is None:
        raise RuntimeError("this Dask worker has no mmd WorkerState plugin: connect through mmd.scale.engine.connect")
    return state


def _spec_key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _settings(spec: dict):
    from mmd.config import Settings, parse_params
    from mmd.encoders.base import set_threads

    set_threads(spec["torch_threads"])
    return _state().get(("settings", _spec_key(spec)),
                        lambda: Settings(parse_params(spec["params"], "the driver's params"), Path(spec["root"])))


def _encoder(settings, spec: dict):
    from mmd.encoders import build_encoder

    return _state().get(("encoder", _spec_key({"embed": spec["params"]["embed"], "root": spec["root"]})),
                        lambda: build_encoder(settings.params.embed, settings.root))


def _read_only_cache(settings, encoder):
    """The embed stage's cache, read only, reopened when the stage has written new parts since."""
    from mmd.encoders import EmbeddingCache
    from mmd.encoders.cache import cache_folder

    if encoder.keyed_by_id:
        return None
    folder = cache_folder(settings.layout.embed_cache, encoder.identity)
    parts = tuple(sorted(p.name for p in folder.glob("*.parquet"))) if folder.is_dir() else ()
    return _state().get(("cache", str(folder), parts),
                        lambda: EmbeddingCache.for_encoder(settings.layout.embed_cache, encoder, read_only=True))


# --------------------------------------------------------------------------- embedding
def encode_shard(payload: dict, spec: dict, data_dir: str) -> dict:
    """Encode one shard of cache misses: `texts` [(key, text)] and `images` [(key, image_path)].

    Returns the encoder's identity (the driver checks it is its own), the keys and vectors, and the
    images that could not be read with why. Texts go longest first, so each batch pads little."""
    from mmd.encoders.base import iter_image_batches, resolve_image_path

    settings = _settings(spec)
    encoder = _encoder(settings, spec)
    size = settings.params.embed.batch_size
    texts = sorted(payload["texts"], key=lambda kt: -len(kt[1]))
    text_vecs = [encoder.encode_texts([t for _, t in texts[s : s + size]]) for s in range(0, len(texts), size)]
    images = payload["images"]
    paths = [resolve_image_path(Path(data_dir), ref) for _, ref in images]
    image_keys: list[str] = []
    image_vecs: list[np.ndarray] = []
    failed: list[tuple[str, str]] = []
    # no DataLoader processes: a Dask worker is a daemon process, which may not start children
    for batch in iter_image_batches(encoder, paths, size, 0):
        if batch.indices:
            image_keys += [images[j][0] for j in batch.indices]
            image_vecs.append(encoder.encode_image_tensors(batch.tensors))
        failed += [(images[j][0], reason) for j, reason in batch.failed]
    return {
        "identity": encoder.identity,
        "text_keys": [k for k, _ in texts],
        "text": np.concatenate(text_vecs) if text_vecs else np.zeros((0, encoder.text_dim), np.float32),
        "image_keys": image_keys,
        "image": np.concatenate(image_vecs) if image_vecs else np.zeros((0, encoder.image_dim), np.float32),
        "failed": failed,
    }


# --------------------------------------------------------------------------- detectors
def score_shard(rows: list[dict], spec: dict, model: dict, data_dir: str) -> dict:
    """The model part of a detector's scores for one shard of item rows (`Predictor.score_features`),
    with `has_image`. `model`: family, folder, challenger, and `key` (its config's digest, so a
    retrained model in the same folder is loaded afresh)."""
    from mmd.models.data import item_features
    from mmd.models.serving import load_predictor

    settings = _settings(spec)
    predictor = _state().get(
        ("predictor", _spec_key(spec), model["family"], model["folder"], model["key"], model["challenger"]),
        lambda: load_predictor(settings, model["family"], Path(model["folder"]), challenger=model["challenger"]))
    encoder = getattr(predictor, "encoder", None) or _encoder(settings, spec)
    split = item_features(settings, rows, encoder, data_dir=Path(data_dir), cache=_read_only_cache(settings, encoder))
    return {**predictor.score_features(split, Path(data_dir)), "has_image": np.asarray(split.has_image, bool)}


# --------------------------------------------------------------------------- synthetic candidates
def semsim_shard(rows: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """SemSim of one shard of candidates: the cosine of each to the real mean."""
    from mmd.synth.scoring import cosines

    return cosines(rows, mean)


def potential_shard(rows: np.ndarray, potential, torch_threads: int) -> np.ndarray:
    """DisSim's dual potential of one shard of candidates against the fitted real side."""
    from mmd.encoders.base import set_threads
    from mmd.synth.scoring import potentials

    set_threads(torch_threads)
    return potentials(potential, [rows])
