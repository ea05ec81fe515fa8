"""The models in service: which folder serves a family, and its predictor (calibrated P(label 1) of item rows).

Every family's predictor (`mmd.models.families`) has `meta` (its config.json), `variant` (what it
predicts with) and `score(rows, data_dir) -> (P(label 1), has_image)`. Serving imports predictors
only, never a training loop.

A predictor may also split `score` in two (`Shardable`), so that scoring can be sharded over Dask
workers (`mmd.scale.score`): `score_features(split, data_dir)`, the model's work on some rows' features,
returning arrays with a row each and touching no store (it runs on any worker); and
`finish_scores(parts)`, on the driver, from the parts of all rows in order (RGCL searches its RKC
database in the store here). A predictor without them is scored in one process, as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, TypeGuard

import numpy as np

from mmd.config import Settings


class Predictor(Protocol):
    meta: dict
    variant: str

    def score(self, rows: list[dict], data_dir: Path) -> tuple[np.ndarray, np.ndarray]: ...


class Shardable(Predictor, Protocol):
    def score_features(self, split, data_dir: Path) -> dict[str, np.ndarray]: ...

    def finish_scores(self, parts: dict[str, np.ndarray]) -> np.ndarray: ...


def shardable(predictor: Predictor) -> TypeGuard[Shardable]:
    """Whether the predictor splits its scoring into a worker's part and the driver's (see the docstring)."""
    return callable(getattr(predictor, "score_features", None)) and callable(getattr(predictor, "finish_scores", None))


def serving_dir(settings: Settings, family: str) -> Path:
    """The model in service: the registry's champion, or the newest trained one while there is none."""
    from mmd.registry import Registry

    at = settings.layout
    champion = Registry(at.registry).serving_dir(family) if at.registry.exists() else None
    return champion or at.model(family)


def load_predictor(settings: Settings, family: str, folder: Path | None = None, challenger: bool = False) -> Predictor:
    """The predictor of a saved model folder (the one in service by default). `challenger`: it is being
    evaluated before the gate, so whatever it keeps in the store goes where the champion's is not."""
    from mmd.models.families import get

    folder = Path(folder) if folder else serving_dir(settings, family)
    return get(family).load("predictor")(settings, folder, challenger=challenger)
