"""Train an LMM detector.

Recipe `rgcl` (LMM-RGCL, Mei et al. EMNLP 2025):
  stage 1  LoRA on the language model + an MLP head on the last prompt token's hidden state;
           loss = LM cross-entropy on the answer ("yes" = label 1, "no" = label 0) + bce_weight
           * BCE of the head. The epoch with the best validation BCE is kept.
  stage 2  the LMM is frozen; the last prompt token's hidden state of every item (no answer
           appended) feeds an RGCL `FeatureHead` trained by `mmd.models.rgcl.fit.fit_head` (the
           `rgcl` section's settings, `lmm.stage2_epochs` epochs). It predicts with RKC over the
           training items' embeddings, or its logistic output (`rgcl.predict_with`).
Recipe `yes_no` (the synthetic-data paper): LoRA with the LM loss on the answer only; an
  item's score is P(yes) = softmax over the next-token logits of "yes" and "no" after the prompt.
"""

from __future__ import annotations

import copy
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmd.evaluate.metrics import auroc, classification_metrics
from mmd.models.data import ROLES
from mmd.models.fit import EarlyStopping
from mmd.models.lmm.config import LMMConfig
from mmd.models.lmm.items import Items
from mmd.models.lmm.model import (Batch, ClassifierHead, ItemEncoder, add_lora, answer_lm_loss, forward_hidden,
                                  hidden_size, last_prompt_states)
from mmd.models.lmm.predictor import LMMDetector, Outputs, encode_batch, head_outputs, infer, model_device_dtype

GRAD_CLIP = 1.0
Log = Callable[[str], None]


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
    stopper = EarlyStopping(lambda: _snapshot(model, head), lambda snap: _restore(model, head, snap), None, 1e-6)
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
        stopper.step(epoch, val_loss)
    stopper.restore()
    model.eval()
    return history, stopper.best_epoch


# --------------------------------------------------------------------------- stage 2
def fit_stage2(detector: LMMDetector, outputs: dict[str, Outputs], splits: dict[str, Items | None], rgcl_cfg: Any,
               epochs: int, seed: int, log: Log | None = None) -> tuple[list[dict], int]:
    """Train an RGCL FeatureHead on the frozen LMM's hidden states (train, validated on val); the
    training items' embeddings and labels become the RKC database. Sets the detector's
    `rgcl_head`, `rgcl_cfg` and `database`; returns fit_head's history and best epoch."""
    from mmd.models.rgcl.model import FeatureHead
    from mmd.models.rgcl.fit import fit_head

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
