"""Sharded scoring: a detector's P(label 1) of many items, the model's work on Dask workers.

The items are cut into shards by content hash; each worker loads the detector once (and the encoder
and the read-only embedding cache its features come from), runs `score_features` on its shards and
returns arrays; the driver puts them back in the items' order and runs `finish_scores` (RGCL's RKC
searches the vector store there, so the store is only ever opened by the driver, whatever its
backend). A predictor that does not split its scoring that way is scored here, in one process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

from mmd.config import Settings
from mmd.models.serving import Predictor, shardable
from mmd.scale.engine import Engine
from mmd.scale.shards import merge, plan
from mmd.scale.spec import worker_spec

# what a worker needs of an item row to compute its features (rows carry much more: payloads stay small)
ROW_FIELDS = ("id", "text", "image_path", "image_sha256", "label", "content_hash")


def model_key(folder: Path) -> str:
    """What identifies a saved model: its config's digest (a retrained model in the same folder differs)."""
    return hashlib.sha256((Path(folder) / "config.json").read_bytes()).hexdigest()


def score_rows(settings: Settings, family: str, folder: Path, predictor: Predictor, rows: Sequence[dict],
               engine: Engine | None, challenger: bool = False) -> np.ndarray:
    """P(label 1) of `rows` in their order: sharded over `engine`'s workers when there is an engine and
    the predictor is shardable, else `predictor.score` here. `predictor` is the one loaded from `folder`."""
    if not rows:
        return np.zeros(0, np.float32)
    if engine is None or not shardable(predictor):
        return predictor.score(list(rows), settings.data_dir)[0]
    from mmd.models.families import get
    from mmd.scale.worker import score_shard

    groups = plan([r.get("content_hash") or str(r["id"]) for r in rows], settings.params.scale.shards)
    payloads = [[{f: rows[i].get(f) for f in ROW_FIELDS} for i in idx] for _, idx in groups]
    f = get(family)
    spec = worker_spec(settings, ("embed", "train", "index", family, *f.reads))
    model = {"family": family, "folder": str(folder), "key": model_key(folder), "challenger": challenger}
    results = engine.map(score_shard, payloads, spec, model, str(settings.data_dir))
    order = [idx for _, idx in groups]
    parts = {name: merge(len(rows), order, [r[name] for r in results]) for name in results[0] if name != "has_image"}
    return predictor.finish_scores(parts)
