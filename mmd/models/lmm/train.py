"""Train, save, reload and run an LMM detector; the `train_lmm` stage.

Recipe `rgcl` (LMM-RGCL, Mei et al. EMNLP 2025):
  stage 1  LoRA on the language model + an MLP head on the last prompt token's hidden state;
           loss = LM cross-entropy on the answer ("yes" = label 1, "no" = label 0) + bce_weight
           * BCE of the head. The epoch with the best validation BCE is kept.
  stage 2  the LMM is frozen; the last prompt token's hidden state of every item (no answer
           appended) feeds an RGCL `FeatureHead` trained by `mmd.models.rgcl.train.fit_head` (the
           `rgcl` section's settings, `lmm.stage2_epochs` epochs). It predicts with RKC over the
           training items' embeddings, or its logistic output (`rgcl.predict_with`).
Recipe `yes_no` (the synthetic-data paper): LoRA with the LM loss on the answer only; an
  item's score is P(yes) = softmax over the next-token logits of "yes" and "no" after the prompt.

Data: the validated labelled items and the selected synthetic set, with the same roles and
leak rules as every other detector (`mmd.models.data`), but raw texts and picture files
instead of encoder features (an unreadable or missing picture makes a text-only item).

A saved model is a folder: adapter_model.safetensors + adapter_config.json (peft LoRA),
head.safetensors (stage 1), rgcl_head.safetensors + database.safetensors (stage 2: weights,
training embeddings and labels for RKC), config.json (everything needed to rebuild it) and
metrics.json. The base model itself is not copied: it is loaded again from `lmm.model`.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmd.config import Settings
from mmd.evaluate.metrics import auroc, classification_metrics
from mmd.items import now_iso
from mmd.models.data import ROLES
from mmd.models.lmm.config import LMMConfig
from mmd.models.lmm.model import (Batch, ClassifierHead, ItemEncoder, add_lora, answer_lm_loss, forward_hidden,
                                  hidden_size, last_prompt_states, load_lmm, locate_model, quiet_peft, yes_no_logit)
from mmd.util import write_json

MODEL_NAME = "lmm"
GRAD_CLIP = 1.0
Log = Callable[[str], None]


def paths(settings: Settings) -> dict[str, Path]:
    return {"model": settings.data_dir / "models" / MODEL_NAME, "report": settings.reports_dir / "train_lmm.json",
            "predictions": settings.data_dir / "predictions" / f"{MODEL_NAME}.parquet"}


# --------------------------------------------------------------------------- data
def load_image(path: Path | None, size: int) -> Any | None:
    """An RGB PIL picture whose longest side is `size`, or None (no file, unreadable)."""
    if path is None:
        return None
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("RGB")
    except Exception:  # a missing or broken picture: the item is text-only
        return None
    scale = size / max(img.size)
    if scale != 1:
        width, height = max(1, round(img.width * scale)), max(1, round(img.height * scale))
        img = img.resize((width, height), Image.Resampling.BICUBIC)
    return img


@dataclass
class Items:
    """Raw items in one order: texts, picture files (absolute, None = text-only) and labels (-1 = unknown)."""

    ids: list[str]
    texts: list[str]
    images: list[Path | None]
    labels: np.ndarray
    synthetic: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    missing_images: int = 0   # rows whose picture file was absent or unsafe (they are text-only here)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, np.int64)
        if len(self.synthetic) != len(self.ids):
            self.synthetic = np.zeros(len(self.ids), bool)

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def from_rows(cls, rows: Sequence[dict], data_dir: Path) -> "Items":
        """Item rows (`id`, `text`, `image_path` relative to data_dir, `label`, `_synthetic`); a picture
        outside data_dir or not there makes a text-only item (counted in `missing_images`)."""
        from mmd.encoders.base import resolve_image_path

        images: list[Path | None] = []
        for r in rows:
            path = resolve_image_path(data_dir, r["image_path"]) if r.get("image_path") else None
            images.append(path if isinstance(path, Path) and path.is_file() else None)
        items = cls([str(r["id"]) for r in rows], [r.get("text") or "" for r in rows], images,
                    np.array([-1 if r.get("label") is None else int(r["label"]) for r in rows], np.int64),
                    np.array([bool(r.get("_synthetic")) for r in rows], bool))
        items.missing_images = sum(1 for r, p in zip(rows, images) if r.get("image_path") and p is None)
        return items

    def summary(self) -> dict:
        y = self.labels
        return {"items": len(self), "label_1": int((y == 1).sum()), "label_0": int((y == 0).sum()),
                "with_image": sum(p is not None for p in self.images), "synthetic": int(self.synthetic.sum())}


def load_items(settings: Settings, synthetic: bool | None = None) -> tuple[dict[str, Items | None], dict]:
    """Train / val / test items as `mmd.models.data.load_training_data` assigns them (same filter,
    roles and leak rules), as raw texts and picture files; and what was carved or dropped."""
    from mmd.models.data import training_rows

    roles, report = training_rows(settings, synthetic)
    splits = {role: Items.from_rows(roles[role], settings.data_dir) if roles[role] else None for role in ROLES}
    report["missing_images"] = sum(s.missing_images for s in splits.values() if s is not None)
    return splits, report


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


# --------------------------------------------------------------------------- the detector
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


# --------------------------------------------------------------------------- stage 1 / yes_no fine-tuning
def batch_losses(model: nn.Module, head: ClassifierHead | None, batch: Batch, y: torch.Tensor,
                 cfg: LMMConfig) -> dict[str, torch.Tensor]:
    """Losses of a batch with its answers appended: `lm` (answer tokens only), `bce` (the head, rgcl)
    and `loss` = lm + bce_weight * bce."""
    hidden = forward_hidden(model, batch)
    lm = answer_lm_loss(model, hidden, batch.labels)
    if head is None:
        return {"loss": lm, "lm": lm}
    bce = F.binary_cross_entropy_with_logits(head(last_prompt_states(hidden, batch)), y.float())
    return {"loss": lm + cfg.bce_weight * bce, "lm": lm, "bce": bce}


def step_losses(model: nn.Module, head: ClassifierHead | None, encoder: ItemEncoder, items: Items, idx: Sequence[int],
                cfg: LMMConfig) -> dict[str, torch.Tensor]:
    """`batch_losses` of the items at `idx` (encoded here, pictures read from disk)."""
    device, dtype = model_device_dtype(model)
    batch = encode_batch(encoder, items, idx, True, device, dtype)
    y = torch.as_tensor(items.labels[np.asarray(idx)], device=device)
    return batch_losses(model, head, batch, y, cfg)


def binary_logits(model: nn.Module, head: ClassifierHead | None, encoder: ItemEncoder, items: Items,
                  batch_size: int) -> np.ndarray:
    """The logit stage 1 is validated on: the head's (rgcl) or logit(yes) - logit(no) (yes_no)."""
    out = infer(model, encoder, items, batch_size)
    return head_outputs(head, out.features)[1] if head is not None else out.yes_no


def _snapshot(model: nn.Module, head: nn.Module | None) -> dict:
    return {"lora": {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad},
            "head": copy.deepcopy(head.state_dict()) if head is not None else None}


def _restore(model: nn.Module, head: nn.Module | None, snap: dict) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in snap["lora"].items():
            params[name].copy_(value)
    if head is not None:
        head.load_state_dict(snap["head"])


def fine_tune(model: nn.Module, head: ClassifierHead | None, encoder: ItemEncoder, train: Items, val: Items,
              cfg: LMMConfig, log: Log | None = None) -> tuple[list[dict], int]:
    """Stage 1 (or the yes_no recipe): `stage1_epochs` epochs of AdamW on the LoRA weights (lr) and
    the head (head_lr), `grad_accum` micro-batches of `batch_size` per step; keeps the epoch with
    the lowest validation BCE. Returns the history and that epoch (0 when nothing was trained)."""
    if cfg.stage1_epochs == 0:
        return [], 0
    lora = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": lora, "lr": cfg.lr}]
    if head is not None:
        groups.append({"params": list(head.parameters()), "lr": cfg.head_lr})
    trainable = lora + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    y_val = torch.as_tensor(val.labels, dtype=torch.float32)
    history: list[dict] = []
    best, best_epoch, snap = math.inf, 0, _snapshot(model, head)
    for epoch in range(1, cfg.stage1_epochs + 1):
        started = time.perf_counter()
        model.train()
        if head is not None:
            head.train()
        micro = torch.randperm(len(train), generator=gen).split(cfg.batch_size)
        sums: dict[str, float] = defaultdict(float)
        steps = 0
        for start in range(0, len(micro), cfg.grad_accum):
            group = micro[start : start + cfg.grad_accum]
            opt.zero_grad(set_to_none=True)
            for idx in group:
                parts = step_losses(model, head, encoder, train, idx.tolist(), cfg)
                (parts["loss"] / len(group)).backward()
                for key, value in parts.items():
                    sums[key] += float(value.detach()) * len(idx)
            nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
            opt.step()
            steps += 1
        logit = binary_logits(model, head, encoder, val, cfg.batch_size)
        val_loss = float(F.binary_cross_entropy_with_logits(torch.as_tensor(logit), y_val))
        entry = {"stage": "lmm", "epoch": epoch, **{f"train_{k}": v / len(train) for k, v in sums.items()},
                 "val_loss": val_loss, "val_auroc": auroc(val.labels, logit), "steps": steps,
                 "seconds": round(time.perf_counter() - started, 2)}
        history.append(entry)
        if log:
            log(f"lmm epoch {epoch}/{cfg.stage1_epochs}: train loss {entry['train_loss']:.4f}, val BCE {val_loss:.4f}, "
                f"val AUROC {entry['val_auroc']}")
        if val_loss < best - 1e-6:
            best, best_epoch, snap = val_loss, epoch, _snapshot(model, head)
    _restore(model, head, snap)
    model.eval()
    return history, best_epoch


# --------------------------------------------------------------------------- stage 2
def fit_stage2(detector: LMMDetector, outputs: dict[str, Outputs], splits: dict[str, Items | None], rgcl_cfg: Any,
               epochs: int, seed: int, log: Log | None = None) -> tuple[list[dict], int]:
    """Train an RGCL FeatureHead on the frozen LMM's hidden states (train, validated on val); the
    training items' embeddings and labels become the RKC database. Sets the detector's
    `rgcl_head`, `rgcl_cfg` and `database`; returns fit_head's history and best epoch."""
    from mmd.models.rgcl.model import FeatureHead
    from mmd.models.rgcl.train import fit_head

    rcfg = rgcl_cfg.model_copy(update={"epochs": epochs})
    device = model_device_dtype(detector.model)[0]
    x_train, x_val = outputs["train"].features.to(device), outputs["val"].features.to(device)
    y_train = torch.as_tensor(splits["train"].labels, device=device)
    y_val = torch.as_tensor(splits["val"].labels, device=device)
    torch.manual_seed(seed)
    head = FeatureHead(x_train.shape[1], rcfg).to(device)
    result = fit_head(head, (x_train,), y_train, (x_val,), y_val, rcfg, seed=seed, log=log)
    detector.rgcl_head, detector.rgcl_cfg = result.head.eval(), rcfg
    g_train, _ = head_outputs(detector.rgcl_head, outputs["train"].features)
    detector.database = (g_train, splits["train"].labels.copy())
    return [{**h, "stage": h.get("stage", "rgcl")} for h in result.history], int(result.best_epoch)


# --------------------------------------------------------------------------- training end to end
@dataclass
class Trained:
    detector: LMMDetector
    history: list[dict]
    best_epochs: dict[str, int]
    metrics: dict
    seconds: float
    data: dict = field(default_factory=dict)


def evaluate(detector: LMMDetector, outputs: dict[str, Outputs], splits: dict[str, Items | None],
             label_names: Sequence[str]) -> dict:
    """Metrics of every scorer on val and test; the recipe's scorer's at the top level."""
    scorers: dict[str, dict] = {}
    for role in ("val", "test"):
        items = splits.get(role)
        if items is None or not len(items):
            continue
        for name, p in detector.scores(outputs[role]).items():
            scorers.setdefault(name, {})[role] = classification_metrics(items.labels, p, label_names)
    return {"scorer": detector.scorer, **scorers.get(detector.scorer, {}), "scorers": scorers}


def prepare(model: nn.Module, processor: Any, cfg: LMMConfig) -> LMMDetector:
    """LoRA on the model (activation checkpointing first when configured and training), the
    item encoder and, for rgcl, a fresh stage-1 head: an untrained detector."""
    training = cfg.stage1_epochs > 0
    if cfg.gradient_checkpointing and training and getattr(model, "supports_gradient_checkpointing", False):
        model.activation_checkpointing_enable()
    model = add_lora(model, cfg.lora)
    device = model_device_dtype(model)[0]
    head = ClassifierHead(hidden_size(model), cfg.head).to(device) if cfg.recipe == "rgcl" else None
    return LMMDetector(model, ItemEncoder(processor, cfg), cfg, head)


def train_detector(model: nn.Module, processor: Any, splits: dict[str, Items | None], cfg: LMMConfig,
                   rgcl_cfg: Any | None = None, label_names: Sequence[str] = ("real", "fake"),
                   log: Log | None = None) -> Trained:
    """The recipe on a loaded base model: fine-tune, (rgcl) stage 2, metrics on val and test."""
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    detector = prepare(model, processor, cfg)
    history, best1 = fine_tune(detector.model, detector.head, detector.encoder, splits["train"], splits["val"], cfg,
                               log)
    best_epochs = {"lmm": best1}
    stage2 = cfg.recipe == "rgcl" and cfg.stage2_epochs > 0
    roles = [r for r in ROLES if splits.get(r) is not None and (r != "train" or stage2)]
    outputs = {role: detector.infer(splits[role]) for role in roles}
    if stage2:
        if rgcl_cfg is None:
            from mmd.models.rgcl.config import RGCLConfig

            rgcl_cfg = RGCLConfig()
        h2, best_epochs["rgcl"] = fit_stage2(detector, outputs, splits, rgcl_cfg, cfg.stage2_epochs, cfg.seed, log)
        history += h2
    metrics = evaluate(detector, outputs, splits, label_names)
    return Trained(detector, history, best_epochs, metrics, time.perf_counter() - started,
                   {role: splits[role].summary() if splits.get(role) is not None else None for role in ROLES})


# --------------------------------------------------------------------------- saving and loading
def _save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata={"model": MODEL_NAME})


def save_detector(folder: Path, trained: Trained, label_names: Sequence[str] = ("real", "fake"),
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


# --------------------------------------------------------------------------- the stage
def run_train_lmm(settings: Settings, log: Log | None = None, cfg: LMMConfig | None = None) -> dict:
    """The DVC stage: train per `lmm` (or `cfg`), save under <data>/models/lmm, write reports/train_lmm.json."""
    cfg = cfg or settings.params.lmm
    tcfg = settings.params.train
    p = paths(settings)
    source = locate_model(cfg.model, settings.root)[0]  # no weights: a clear error before any data is read
    splits, data_report = load_items(settings)
    model, processor = load_lmm(cfg, root=settings.root)
    if log:
        log(f"lmm: {cfg.recipe} on {cfg.model}, " + ", ".join(f"{r} {len(s)}" for r, s in splits.items() if s))
    rgcl_cfg = getattr(settings.params, "rgcl", None)
    trained = train_detector(model, processor, splits, cfg, rgcl_cfg, tcfg.label_names, log)
    trained.data = {**trained.data, **data_report}
    save_detector(p["model"], trained, tcfg.label_names, source if Path(source).is_dir() else None)
    report = {"trained_at": now_iso(), "model": MODEL_NAME, "recipe": cfg.recipe, "base_model": cfg.model,
              "seconds": round(trained.seconds, 2), "best_epochs": trained.best_epochs, "history": trained.history,
              "data": trained.data, **trained.metrics, "model_dir": str(p["model"])}
    write_json(p["report"], report)
    return report
