"""A fourth, trivial detector family for the tests: nearest class centroid on the encoder's features.

Everything a family needs, in one module, registered with one call (`FAMILY`): its params section, its
training stage (a report and a model folder of safetensors + config.json), and its predictor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from mmd.config import Settings
from mmd.models.families import Family

NAME = "centroid"


class CentroidConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sharpness: float = Field(8.0, gt=0)   # score = sigmoid(sharpness * (cos to class 1 - cos to class 0))


def _features(split) -> np.ndarray:
    x = np.concatenate([split.text, split.image], axis=1).astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _scores(x: np.ndarray, centroids: np.ndarray, sharpness: float) -> np.ndarray:
    cos = x @ centroids.T
    return (1 / (1 + np.exp(-sharpness * (cos[:, 1] - cos[:, 0])))).astype(np.float32)


def train(settings: Settings, log=None) -> dict:
    from safetensors.numpy import save_file

    from mmd.evaluate.metrics import classification_metrics
    from mmd.items import now_iso
    from mmd.models.data import load_training_data
    from mmd.results import TrainReport
    from mmd.util import write_json

    cfg = settings.params.centroid
    data = load_training_data(settings)
    x, y = _features(data.train), data.train.labels
    centroids = np.stack([x[y == c].mean(axis=0) for c in (0, 1)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    folder = settings.layout.model(NAME)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"centroids": centroids.astype(np.float32)}, str(folder / "model.safetensors"))
    write_json(folder / "config.json", {"model": NAME, "variant": "cosine", "encoder": data.encoder, "trained_at": now_iso(),
                                        "centroid": cfg.model_dump(), "data": data.summary(),
                                        "label_names": list(settings.params.train.label_names)})
    metrics = {role: {NAME: classification_metrics(getattr(data, role).labels,
                                                   _scores(_features(getattr(data, role)), centroids, cfg.sharpness),
                                                   settings.params.train.label_names)}
               for role in ("val", "test") if getattr(data, role) is not None}
    report = TrainReport(model=NAME, variant="cosine", serves=NAME, trained_at=now_iso(), model_dir=str(folder),
                         val=metrics["val"], test=metrics.get("test", {}), data=data.summary())
    report.write(settings.layout)
    return report.to_dict()


@dataclass
class CentroidPredictor:
    settings: Settings
    meta: dict
    centroids: np.ndarray
    variant: str = "cosine"

    def score(self, rows: list[dict], data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        from mmd.models.data import item_features

        split = item_features(self.settings, rows, data_dir=data_dir)
        return _scores(_features(split), self.centroids.astype(np.float64), self.meta["centroid"]["sharpness"]), \
            split.has_image


def load_predictor(settings: Settings, folder: Path, challenger: bool = False) -> CentroidPredictor:
    from safetensors.numpy import load_file

    from mmd.models.io import read_model_config

    meta = read_model_config(folder, NAME)
    return CentroidPredictor(settings, meta, load_file(str(Path(folder) / "model.safetensors"))["centroids"])


FAMILY = Family(NAME, CentroidConfig, "tests.plugin_family:train", "tests.plugin_family:load_predictor",
                about="nearest class centroid (a test family)", code=("tests/plugin_family.py",),
                intended_use="Tests only.")
