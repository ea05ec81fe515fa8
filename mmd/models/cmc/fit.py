"""Train CMC: stage 1 trains the variant's single-modal networks together (mutual learning):
each one's cross-entropy, plus beta * (L_{V->T} + L_{T->V}) when the variant distils. Stage 2
(head `fusion`) freezes them and trains BLOCK on their features. `joint` and `concat` variants
train in one stage. Every stage keeps the weights of its best validation loss and stops after
`patience` epochs without improvement (`mmd.models.fit`). The head's logits are then calibrated by
temperature scaling on the validation split, and scored on val and test.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmd.config import TrainConfig
from mmd.encoders.base import select_device
from mmd.evaluate.metrics import classification_metrics, fit_temperature
from mmd.models.cmc.config import VARIANTS, CMCConfig
from mmd.models.cmc.loss import CrossModalDistillation
from mmd.models.cmc.model import CMCModel
from mmd.models.cmc.predictor import Inputs, RawInputs, _batches, build_model, predict_logits, probabilities
from mmd.models.data import Split, TrainData
from mmd.models.fit import EarlyStopping, optimise

GRAD_CLIP = 5.0


@dataclass
class Trained:
    model: CMCModel
    variant: str
    temperature: float
    history: list[dict]
    metrics: dict
    seconds: float
    stopped: dict = field(default_factory=dict)  # stage -> best epoch
    scores: dict = field(default_factory=dict)   # role -> calibrated P(label 1) of its items


def _fit(cfg: CMCConfig, history: list[dict], generator: torch.Generator, device: torch.device, stage: str,
         modules: Sequence[nn.Module], optimizers: list[torch.optim.Optimizer], n: int,
         step: Callable[[torch.Tensor], torch.Tensor], validate: Callable[[], float], epochs: int) -> int:
    """One stage: minibatch epochs, the best validation loss's weights kept, early stopping; the best epoch."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    stopper = EarlyStopping.of_modules(modules, cfg.patience)
    for epoch in range(1, epochs + 1):
        for m in modules:
            m.train()
        total, count = 0.0, 0
        for idx in _batches(n, cfg.batch_size, generator, device):
            if len(idx) < 2:  # a lone leftover item: too little for a step (and NCE needs a pair)
                continue
            loss = step(idx)
            optimise(loss, optimizers, params, GRAD_CLIP)
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        val = validate()
        history.append({"stage": stage, "epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val})
        if stopper.step(epoch, val):
            break
    stopper.restore()
    return stopper.best_epoch


def _optimizers(cfg: CMCConfig, heads: Sequence[nn.Module], model: CMCModel) -> list[torch.optim.Optimizer]:
    """Adam for the heads (and the text backbone at its own rate); SGD for an image backbone."""
    backbone_ids: set[int] = set()
    groups: list[dict] = []
    text_bb = model.text_net.backbone if model.text_net is not None else None
    image_bb = model.image_net.backbone if model.image_net is not None else None
    if text_bb is not None:
        ps = [p for p in text_bb.parameters() if p.requires_grad]
        backbone_ids |= {id(p) for p in ps}
        groups.append({"params": ps, "lr": cfg.finetune.text_lr, "weight_decay": 0.0})
    sgd = None
    if image_bb is not None:
        ps = [p for p in image_bb.parameters() if p.requires_grad]
        backbone_ids |= {id(p) for p in ps}
        if ps:
            sgd = torch.optim.SGD(ps, lr=cfg.finetune.image_lr, momentum=cfg.finetune.image_momentum,
                                  weight_decay=cfg.finetune.image_weight_decay)
    rest = [p for m in heads for p in m.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups.insert(0, {"params": rest})
    adam = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay)
    return [adam] + ([sgd] if sgd is not None else [])


def item_weights(cfg: CMCConfig, split: Split) -> np.ndarray | None:
    """Each item's weight in the loss (mean 1), or None for plain cross-entropy.

    `picture_weight: equal`: the items that share a picture weigh one item together (a viral picture's
    thousands of reposts say about as much as one story); `class_weight: balanced`: each class weighs half."""
    if cfg.class_weight == "none" and cfg.picture_weight == "none":
        return None
    w = np.ones(len(split), np.float64)
    if cfg.picture_weight == "equal":
        _, inverse, counts = np.unique(np.array(split.picture_keys()), return_inverse=True, return_counts=True)
        w /= counts[inverse]
    if cfg.class_weight == "balanced":
        total = w.sum()
        for c in (0, 1):
            mask = split.labels == c
            if mask.any():
                w[mask] *= 0.5 * total / w[mask].sum()
    return (w * len(w) / w.sum()).astype(np.float32)


def train_variant(data: TrainData, cfg: CMCConfig, train_cfg: TrainConfig, variant_name: str | None = None,
                  seed: int | None = None, backbones: tuple[nn.Module, nn.Module] | None = None,
                  raw: RawInputs | None = None, log: Callable[[str], None] | None = None) -> Trained:
    """Train one variant on `data` (features, or raw inputs with `backbones` to fine-tune)."""
    started = time.perf_counter()
    name = variant_name or cfg.variant
    variant = VARIANTS[name]
    seed = train_cfg.seed if seed is None else seed
    device = select_device(train_cfg.device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(cfg, variant, data.text_dim, data.image_dim, backbones).to(device)
    train, val = Inputs(data.train, device, raw), Inputs(data.val, device, raw)
    w_train, w_val = (None if (w := item_weights(cfg, split)) is None else torch.as_tensor(w, device=device)
                      for split in (data.train, data.val))
    history: list[dict] = []
    stopped: dict[str, int] = {}

    def ce(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        if w is None:
            return F.cross_entropy(logits, y)
        return (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum()

    @torch.no_grad()
    def val_loss(fn: Callable[[Any, Any, torch.Tensor], dict[str, torch.Tensor] | torch.Tensor], keys=None) -> float:
        model.eval()
        total, mass = 0.0, 0.0
        for idx in _batches(len(val), 512, None, device):
            out = fn(*val.batch(idx))
            y, w = val.labels[idx], None if w_val is None else w_val[idx]
            m = float(len(idx) if w is None else w.sum())
            total += float(sum(ce(out[k], y, w) for k in keys) if keys else ce(out, y, w)) * m
            mass += m
        return total / max(mass, 1e-12)

    def w_of(idx: torch.Tensor) -> torch.Tensor | None:
        return None if w_train is None else w_train[idx]

    if variant.head in ("joint", "concat"):
        def step(idx):
            t, v, p = train.batch(idx)
            return ce(model(t, v, p), train.labels[idx], w_of(idx))

        stopped["joint"] = _fit(cfg, history, gen, device, "joint", [model], _optimizers(cfg, [model], model), len(train), step,
                               lambda: val_loss(model), cfg.epochs)
    else:
        # ---- stage 1: the single-modal networks, mutually, with or without distillation
        distill = None
        bank_index = torch.full((len(train),), -1, dtype=torch.long, device=device)
        paired = np.flatnonzero(data.train.has_image)
        if variant.distill and cfg.beta > 0 and len(paired) >= 2:
            bank_index[torch.as_tensor(paired, device=device)] = torch.arange(len(paired), device=device)
            distill = CrossModalDistillation(cfg.hidden, cfg.hidden, cfg.nce.feat_dim, len(paired), cfg.nce.k,
                                             cfg.nce.temperature, cfg.nce.momentum, gen).to(device)
            bank_labels = (torch.as_tensor(data.train.labels[paired], device=device)
                           if cfg.nce.negatives == "other_class" else None)
        elif variant.distill:
            stopped["distill_skipped"] = int(len(paired))  # fewer than 2 items with a picture
        monitored = {"text": ["text_logits"], "image": ["image_logits"],
                     "fusion": ["text_logits", "image_logits"]}[variant.head]

        def step1(idx):
            t, v, p = train.batch(idx)
            y = train.labels[idx]
            out = model.branch_outputs(t, v, p)
            loss = sum(ce(out[f"{b}_logits"], y, w_of(idx)) for b in variant.branches)
            if distill is not None:
                anchors = bank_index[idx] >= 0
                if int(anchors.sum()) >= 1:
                    pos = bank_index[idx][anchors]
                    contrast = distill.memory.sample(pos, bank_labels, gen)
                    d = distill(out["text_feat"][anchors], out["image_feat"][anchors], pos, contrast)
                    loss = loss + cfg.beta * d["distill"]
            return loss

        heads = [model] + ([distill] if distill is not None else [])
        stopped["networks"] = _fit(cfg, history, gen, device, "networks", heads, _optimizers(cfg, heads, model), len(train), step1,
                                  lambda: val_loss(model.branch_outputs, monitored), cfg.epochs)

        # ---- stage 2: BLOCK on the frozen networks' features
        if variant.head == "fusion":
            for net in (model.text_net, model.image_net):
                net.requires_grad_(False)

            @torch.no_grad()
            def features(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
                model.eval()
                ft, fv = [], []
                for idx in _batches(len(inputs), 512, None, device):
                    out = model.branch_outputs(*inputs.batch(idx))
                    ft.append(out["text_feat"])
                    fv.append(out["image_feat"])
                return torch.cat(ft), torch.cat(fv)

            tr_t, tr_v = features(train)
            va_t, va_v = features(val)

            def step2(idx):
                return ce(model.fusion(tr_t[idx], tr_v[idx]), train.labels[idx], w_of(idx))

            @torch.no_grad()
            def val2() -> float:
                model.fusion.eval()
                return float(ce(model.fusion(va_t, va_v), val.labels, w_val))

            stopped["fusion"] = _fit(cfg, history, gen, device, "fusion", [model.fusion], _optimizers(cfg, [model.fusion], model), len(train),
                                    step2, val2, cfg.fusion_epochs)
            for net in (model.text_net, model.image_net):
                net.requires_grad_(True)

    model.eval()
    val_logits = predict_logits(model, val)
    temperature = fit_temperature(val_logits, data.val.labels) if cfg.calibrate else 1.0
    scores = {"val": probabilities(val_logits, temperature)}
    if data.test is not None:
        scores["test"] = probabilities(predict_logits(model, Inputs(data.test, device, raw)), temperature)
    metrics = {role: classification_metrics(getattr(data, role).labels, p, train_cfg.label_names)
               for role, p in scores.items()}
    if log:
        scored = metrics.get("test", metrics["val"])
        log(f"{name} seed {seed}: acc {scored['accuracy']:.3f} macro-F1 {scored['macro_f1']:.3f} "
            f"AUROC {scored['auroc'] if scored['auroc'] is None else round(scored['auroc'], 3)} "
            f"({time.perf_counter() - started:.0f}s, epochs {stopped})")
    return Trained(model.cpu(), name, temperature, history, metrics, time.perf_counter() - started, stopped, scores)
