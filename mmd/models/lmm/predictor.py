"""A saved LMM detector: its folder, and P(label 1) of items (the predictor). Serving imports this module,
never the training loop.

A saved model is a folder: adapter_model.safetensors + adapter_config.json (peft LoRA),
head.safetensors (stage 1), rgcl_head.safetensors + database.safetensors (stage 2: weights,
training embeddings and labels for RKC), config.json (everything needed to rebuild it) and
metrics.json. The base model itself is not copied: it is loaded again from `lmm.model`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from mmd.config import Settings
from mmd.items import now_iso
from mmd.models.lmm.config import LMMConfig
from mmd.models.lmm.items import Items, load_image
from mmd.models.lmm.model import Batch, ClassifierHead, ItemEncoder, forward_hidden, hidden_size, last_prompt_states, \
    load_lmm, quiet_peft, yes_no_logit
from mmd.util import write_json

MODEL_NAME = "lmm"


# --------------------------------------------------------------------------- forward passes over items
@dataclass
class Outputs:
    """What one pass of the LMM gives per item: the last prompt token's hidden state and logit(yes) - logit(no)."""

    features: torch.Tensor   # (N, H) float32, on the CPU
    yes_no: np.ndarray       # (N,) float32


def encode_batch(encoder: ItemEncoder, items: Items, idx: Sequence[int], with_answer: bool, device: torch.device,
                 dtype: torch.dtype) -> Batch:
    """The items at `idx` as one batch on `device` (pictures read from disk and resized here); with
    `with_answer`, each item's answer is appended as the LM target."""
    idx = [int(i) for i in idx]
    images = [load_image(items.images[i], encoder.cfg.image_size) for i in idx]
    labels = [int(items.labels[i]) for i in idx] if with_answer else None
    return encoder.batch([items.texts[i] for i in idx], images, labels).to(device, dtype)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where the model's weights are and their floating dtype (what picture tensors are cast to)."""
    p = model.get_output_embeddings().weight
    return p.device, p.dtype


@torch.no_grad()
def infer(model: nn.Module, encoder: ItemEncoder, items: Items, batch_size: int) -> Outputs:
    """Hidden states and yes/no logits of every item, prompt only (no answer), in eval mode."""
    model.eval()
    device, dtype = model_device_dtype(model)
    feats, yn = [], []
    for start in range(0, len(items), batch_size):
        batch = encode_batch(encoder, items, range(start, min(start + batch_size, len(items))), False, device, dtype)
        states = last_prompt_states(forward_hidden(model, batch), batch)
        feats.append(states.float().cpu())
        yn.append(yes_no_logit(model, states, encoder.yes_id, encoder.no_id).cpu())
    width = hidden_size(model)
    return Outputs(torch.cat(feats) if feats else torch.zeros(0, width),
                   torch.cat(yn).numpy() if yn else np.zeros(0, np.float32))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))).astype(np.float32)


@torch.no_grad()
def head_outputs(head: nn.Module, features: torch.Tensor, batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(embedding g, logit) of an RGCL FeatureHead, or (empty, logit) of a ClassifierHead, in eval mode."""
    head.eval()
    device = next(head.parameters()).device
    gs, logits = [], []
    for start in range(0, len(features), batch):
        out = head(features[start : start + batch].to(device))
        g, logit = out if isinstance(out, tuple) else (None, out)
        logits.append(logit.float().cpu())
        if g is not None:
            gs.append(g.float().cpu())
    return (torch.cat(gs).numpy() if gs else np.zeros((0, 0), np.float32),
            torch.cat(logits).numpy() if logits else np.zeros(0, np.float32))


@dataclass
class LMMDetector:
    """A LoRA-tuned LMM with its heads: P(label 1) of items.

    Scorers: `p_yes` (the LM's own answer), `head` (stage 1's MLP), `rgcl_head` (stage 2's
    logistic output) and `rkc` (stage 2's retrieval vote over the training items); `scorer`
    names the one the recipe predicts with."""

    model: nn.Module
    encoder: ItemEncoder
    cfg: LMMConfig
    head: ClassifierHead | None = None
    rgcl_head: nn.Module | None = None
    rgcl_cfg: Any | None = None                               # RGCLConfig of stage 2
    database: tuple[np.ndarray, np.ndarray] | None = None     # training items' g (N, d) and labels (N,)
    meta: dict = field(default_factory=dict)

    @property
    def scorer(self) -> str:
        if self.cfg.recipe == "yes_no":
            return "p_yes"
        if self.rgcl_head is not None:
            return "rkc" if self.rgcl_cfg.predict_with == "rkc" and self.database is not None else "rgcl_head"
        return "head"

    def infer(self, items: Items) -> Outputs:
        return infer(self.model, self.encoder, items, self.cfg.batch_size)

    def scores(self, out: Outputs) -> dict[str, np.ndarray]:
        """Every scorer's P(label 1) from one pass's outputs."""
        result = {"p_yes": sigmoid(out.yes_no)}
        if self.head is not None:
            result["head"] = sigmoid(head_outputs(self.head, out.features)[1])
        if self.rgcl_head is not None:
            g, logit = head_outputs(self.rgcl_head, out.features)
            result["rgcl_head"] = sigmoid(logit)
            if self.database is not None:
                from mmd.models.rgcl.knn import rkc_scores

                db_g, db_y = self.database
                result["rkc"] = np.asarray(rkc_scores(g, db_g, db_y, k=self.rgcl_cfg.rkc.k,
                                                      weighting=self.rgcl_cfg.rkc.weighting), np.float32)
        return result

    def predict_items(self, items: Items) -> np.ndarray:
        """P(label 1) of each item with the recipe's scorer."""
        return self.scores(self.infer(items))[self.scorer]

    def predict(self, texts: Sequence[str], images: Sequence[str | Path | None]) -> np.ndarray:
        """P(label 1) of items given as texts and picture files (None = text-only)."""
        paths_ = [Path(p) if p else None for p in images]
        items = Items([str(i) for i in range(len(texts))], list(texts), paths_, np.full(len(texts), -1))
        return self.predict_items(items)


# --------------------------------------------------------------------------- saving and loading
def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata={"model": MODEL_NAME})


def save_detector(folder: Path, trained: Any, label_names: Sequence[str] = ("real", "fake"),
                  base_path: str | None = None) -> Path:
    """Write the adapter, the heads, config.json and metrics.json as `folder`, replacing an older
    model there only once everything is written. `base_path`: where the base model was loaded from."""
    det = trained.detector
    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    det.model.save_pretrained(str(tmp))
    if det.head is not None:
        _save_tensors(tmp / "head.safetensors", det.head.state_dict())
    if det.rgcl_head is not None:
        _save_tensors(tmp / "rgcl_head.safetensors", det.rgcl_head.state_dict())
    if det.database is not None:
        g, y = det.database
        _save_tensors(tmp / "database.safetensors", {"g": torch.as_tensor(g), "labels": torch.as_tensor(y)})
    meta = {
        "model": MODEL_NAME,
        "recipe": det.cfg.recipe,
        "base_model": det.cfg.model,
        "base_model_path": base_path,
        "scorer": det.scorer,
        "hidden_size": hidden_size(det.model),
        "answer_token_ids": {"yes": det.encoder.yes_id, "no": det.encoder.no_id},
        "label_names": list(label_names),
        "lmm": det.cfg.model_dump(mode="json"),
        "rgcl": det.rgcl_cfg.model_dump(mode="json") if det.rgcl_cfg is not None else None,
        "trained_at": now_iso(),
        "seconds": round(trained.seconds, 2),
        "best_epochs": trained.best_epochs,
        "data": trained.data,
    }
    write_json(tmp / "config.json", meta)
    write_json(tmp / "metrics.json", trained.metrics)
    if folder.exists():
        folder.replace(old)
    tmp.replace(folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def load_lmm_detector(folder: Path, base: tuple[nn.Module, Any] | None = None, device: str | None = None,
                      root: Path | None = None) -> LMMDetector:
    """Rebuild a saved detector: the base model (from `base` = (model, processor) when given, else
    loaded again from where training loaded it, or `lmm.model` under `root`), its LoRA adapter and heads."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from mmd.models.io import read_model_config

    folder = Path(folder)
    meta = read_model_config(folder, MODEL_NAME, required=("adapter_config.json",))
    cfg = LMMConfig.model_validate(meta["lmm"])
    if device is not None:
        cfg = cfg.model_copy(update={"device": device})
    if base is None:
        saved = meta.get("base_model_path")
        source = cfg.model_copy(update={"model": saved}) if saved and Path(saved).is_dir() else cfg
        base = load_lmm(source, root)
    model, processor = base
    with quiet_peft():
        peft_model = PeftModel.from_pretrained(model, str(folder), is_trainable=False).eval()
    dev = model_device_dtype(peft_model)[0]
    det = LMMDetector(peft_model, ItemEncoder(processor, cfg), cfg, meta=meta)
    if (folder / "head.safetensors").exists():
        det.head = ClassifierHead(meta["hidden_size"], cfg.head)
        det.head.load_state_dict(load_file(str(folder / "head.safetensors")))
        det.head.to(dev).eval()
    if (folder / "rgcl_head.safetensors").exists():
        from mmd.models.rgcl.config import saved_config
        from mmd.models.rgcl.model import FeatureHead

        det.rgcl_cfg = saved_config(meta["rgcl"])
        det.rgcl_head = FeatureHead(meta["hidden_size"], det.rgcl_cfg)
        det.rgcl_head.load_state_dict(load_file(str(folder / "rgcl_head.safetensors")))
        det.rgcl_head.to(dev).eval()
    if (folder / "database.safetensors").exists():
        db = load_file(str(folder / "database.safetensors"))
        det.database = (db["g"].numpy(), db["labels"].numpy())
    return det


@dataclass
class LMMScorer:
    """The family's predictor: the recipe's scorer over item rows (texts and pictures, no encoder)."""

    detector: LMMDetector

    @property
    def meta(self) -> dict:
        return self.detector.meta

    @property
    def variant(self) -> str:
        return self.detector.meta.get("recipe", "lmm")

    def score(self, rows: list[dict], data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        items = Items.from_rows(rows, data_dir)
        return (np.asarray(self.detector.predict_items(items), np.float32),
                np.array([p is not None for p in items.images], bool))


def load_predictor(settings: Settings, folder: Path, challenger: bool = False) -> LMMScorer:
    return LMMScorer(load_lmm_detector(folder, root=settings.root))
