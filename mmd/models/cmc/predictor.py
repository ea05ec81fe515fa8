"""A saved CMC model: its folder (save_model / load_model) and its calibrated scores (the predictor).

A saved model is a folder: model.safetensors (weights), config.json (everything needed to
rebuild it: variant, dimensions, encoder identity, temperature, the cmc section),
metrics.json. Serving imports this module, never the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmd.config import Settings, TrainConfig
from mmd.encoders.base import select_device
from mmd.items import now_iso
from mmd.models.cmc.config import VARIANTS, CMCConfig, Variant
from mmd.models.cmc.model import CMCModel
from mmd.models.data import ModelMismatch, Split, TrainData
from mmd.models.io import read_model_config, save_weights
from mmd.util import write_json

MODEL_NAME = "cmc"


# --------------------------------------------------------------------------- inputs
class Inputs:
    """A split on the device: features (frozen backbones), or raw text and decoded pictures
    (fine-tuning, where `encoder` turns an index batch into backbone inputs)."""

    def __init__(self, split: Split, device: torch.device, raw: "RawInputs | None" = None):
        self.split, self.device, self.raw = split, device, raw
        self.labels = torch.as_tensor(split.labels, device=device)
        self.present = torch.as_tensor(split.has_image, device=device)
        if raw is None:
            self.text = torch.as_tensor(split.text, device=device)
            self.image = torch.as_tensor(split.image, device=device)

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, idx: torch.Tensor) -> tuple[Any, Any, torch.Tensor]:
        if self.raw is None:
            return self.text[idx], self.image[idx], self.present[idx]
        return self.raw.batch(self.split, idx.cpu().numpy(), self.device) + (self.present[idx],)


class RawInputs:
    """Text strings and decoded, transformed pictures for the backbones (fine-tuning)."""

    def __init__(self, encoder, data_dir: Path, image_shape: tuple[int, ...]):
        self.encoder, self.data_dir, self.image_shape = encoder, Path(data_dir), image_shape

    def batch(self, split: Split, idx: np.ndarray, device: torch.device) -> tuple[list[str], torch.Tensor]:
        from mmd.encoders.base import resolve_image_path

        texts = [split.texts[i] for i in idx]
        images = []
        for i in idx:
            ref = split.image_paths[i] if split.has_image[i] else None
            path = resolve_image_path(self.data_dir, ref) if ref else None
            if isinstance(path, Path):
                images.append(self.encoder.image_transform(self.encoder.load_image(path)))
            else:
                images.append(torch.zeros(self.image_shape, dtype=torch.uint8))
        return texts, torch.stack(images).to(device)


def _batches(n: int, size: int, generator: torch.Generator | None, device: torch.device) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return [order[s : s + size].to(device) for s in range(0, n, size)]


def raw_inputs(encoder, data_dir: Path) -> RawInputs:
    """Backbone inputs for fine-tuning: texts as they are, pictures decoded and transformed (the
    shape of a blank transformed picture stands in for a missing one)."""
    from PIL import Image

    blank = torch.zeros(3, 64, 64, dtype=torch.uint8) if encoder.image_input == "tensor" else Image.new("RGB", (64, 64))
    return RawInputs(encoder, data_dir, tuple(encoder.image_transform(blank).shape))


# --------------------------------------------------------------------------- the network
def build_model(cfg: CMCConfig, variant: Variant, text_dim: int, image_dim: int,
                backbones: tuple[nn.Module, nn.Module] | None = None) -> CMCModel:
    text_bb, image_bb = backbones if backbones is not None else (None, None)
    return CMCModel(text_dim, image_dim, cfg.hidden, cfg.dropout, variant.branches, variant.head, cfg.block,
                    text_backbone=text_bb, image_backbone=image_bb)


@torch.no_grad()
def predict_logits(model: CMCModel, inputs: Inputs, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = [model(*inputs.batch(idx)).float().cpu() for idx in _batches(len(inputs), batch_size, None, inputs.device)]
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated P(label 1) = softmax(logits / T)[:, 1]."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e[:, 1] / e.sum(axis=1)).astype(np.float32)


# --------------------------------------------------------------------------- saving and loading
def save_model(folder: Path, trained: Any, cfg: CMCConfig, data: TrainData, train_cfg: TrainConfig,
               finetuned: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "model.safetensors", trained.model, {"model": MODEL_NAME, "variant": trained.variant})
    meta = {
        "model": MODEL_NAME,
        "variant": trained.variant,
        "encoder": data.encoder,
        "text_dim": data.text_dim,
        "image_dim": data.image_dim,
        "finetuned": finetuned,
        "temperature": trained.temperature,
        "label_names": list(train_cfg.label_names),
        "cmc": cfg.model_dump(mode="json"),
        "trained_at": now_iso(),
        "best_epochs": trained.stopped,
        "data": data.summary(),
    }
    write_json(folder / "config.json", meta)
    write_json(folder / "metrics.json", trained.metrics)
    return folder


@dataclass
class Predictor:
    """A loaded CMC model: calibrated P(label 1) for item features."""

    model: CMCModel
    meta: dict
    device: torch.device

    @property
    def temperature(self) -> float:
        return float(self.meta["temperature"])

    def logits(self, split: Split, raw: RawInputs | None = None) -> np.ndarray:
        return predict_logits(self.model, Inputs(split, self.device, raw))

    def predict(self, split: Split, raw: RawInputs | None = None) -> np.ndarray:
        return probabilities(self.logits(split, raw), self.temperature)


def load_model(folder: Path, encoder=None, device: str = "auto") -> Predictor:
    """Rebuild a saved model. A fine-tuned one needs the encoder it was fine-tuned from."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_model_config(folder, MODEL_NAME, encoder=encoder)
    cfg = CMCConfig.model_validate(meta["cmc"])
    backbones = None
    if meta.get("finetuned"):
        if encoder is None:
            raise ModelMismatch("a fine-tuned CMC model needs its encoder to rebuild the backbones")
        backbones = encoder.trainable_backbones()
    model = build_model(cfg, VARIANTS[meta["variant"]], meta["text_dim"], meta["image_dim"], backbones)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    dev = select_device(device)
    return Predictor(model.to(dev).eval(), meta, dev)


def load_predictor(settings: Settings, folder: Path, challenger: bool = False) -> "CMCScorer":
    """The family's predictor (mmd.models.families): P(label 1) of item rows."""
    from mmd.encoders import build_encoder

    encoder = build_encoder(settings.params.embed, settings.root)
    return CMCScorer(settings, encoder, load_model(folder, encoder, settings.params.train.device))


@dataclass
class CMCScorer:
    settings: Settings
    encoder: Any
    predictor: Predictor

    @property
    def meta(self) -> dict:
        return self.predictor.meta

    @property
    def variant(self) -> str:
        return self.predictor.meta["variant"]

    def score(self, rows: list[dict], data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        from mmd.models.data import item_features

        split = item_features(self.settings, rows, self.encoder, data_dir=data_dir)
        return self.finish_scores(self.score_features(split, data_dir)), split.has_image

    def score_features(self, split: Split, data_dir: Path) -> dict[str, np.ndarray]:
        """The whole score: CMC needs nothing beyond the features and its weights (any worker may run it)."""
        raw = raw_inputs(self.encoder, data_dir) if self.meta.get("finetuned") else None
        return {"score": self.predictor.predict(split, raw)}

    def finish_scores(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        return parts["score"]
