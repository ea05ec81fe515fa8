"""Train RGCL: retrieval-guided contrastive learning on frozen features.

Each epoch (every `refresh_every`) the training set's embeddings g are recomputed and
mined (see knn.py): every example gets its nearest same-label positive and nearest
opposite-label hard negatives. A step embeds the batch, its positives and negatives with
the current head and minimises (1 - w) * L_RGCL + w * BCE. The best validation epoch is
kept (by RKC's AUROC against the training embeddings, or the head's BCE:
`rgcl.early_stop`), early stopping after `patience` (`mmd.models.fit`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmd.config import TrainConfig
from mmd.encoders.base import select_device
from mmd.evaluate.metrics import classification_metrics, fit_temperature
from mmd.models.data import TrainData
from mmd.models.fit import EarlyStopping, optimise
from mmd.models.rgcl.config import RGCLConfig
from mmd.models.rgcl.knn import Mined, mine_exact, rkc_scores
from mmd.models.rgcl.loss import rgcl_loss
from mmd.models.rgcl.model import RGCLHead
from mmd.models.rgcl.predictor import embed_all, sigmoid, tensors

GRAD_CLIP = 5.0
Miner = Callable[[np.ndarray, np.ndarray], Mined]


@dataclass
class FitResult:
    head: nn.Module
    history: list[dict]
    best_epoch: int
    seconds: float


def fit_head(head: nn.Module, train_inputs: tuple[torch.Tensor, ...], train_labels: torch.Tensor,
             val_inputs: tuple[torch.Tensor, ...], val_labels: torch.Tensor, cfg: RGCLConfig, seed: int = 0,
             log: Callable[[str], None] | None = None, miner: Miner | None = None) -> FitResult:
    """Train `head` (inputs -> (g, logit)) with the RGCL loss + BCE; exact mining unless a `miner` is given.
    Inputs are tuples of tensors with one row per example (features, or features + masks)."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = train_labels.device
    y_np = train_labels.cpu().numpy()
    miner = miner or (lambda g, y: mine_exact(g, y, cfg.hard_negatives, device=device))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    w = cfg.bce_weight
    history: list[dict] = []
    stopper = EarlyStopping.of_modules([head], cfg.patience)
    n = len(train_labels)
    mined: Mined | None = None
    g_train: np.ndarray | None = None  # the training embeddings under the current weights, when known
    for epoch in range(1, cfg.epochs + 1):
        if mined is None or (epoch - 1) % cfg.refresh_every == 0:
            g_all = g_train if g_train is not None else embed_all(head, train_inputs)[0]
            t = time.perf_counter()
            mined = miner(g_all, y_np)
            mining_s = time.perf_counter() - t
        pos_all = torch.as_tensor(mined.positives, device=device)
        neg_all = torch.as_tensor(mined.negatives, device=device)
        head.train()
        total, count = 0.0, 0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            if len(idx) < 2:
                continue
            idx = idx.to(device)
            y = train_labels[idx]
            g, logit = head(*[x[idx] for x in train_inputs])
            g_pos, _ = head(*[x[pos_all[idx]] for x in train_inputs])
            h = neg_all.shape[1]
            g_neg = None
            if h:
                flat = neg_all[idx].reshape(-1)
                g_neg = head(*[x[flat] for x in train_inputs])[0].view(len(idx), h, -1)
            loss = (1 - w) * rgcl_loss(g, y, g_pos, g_neg, cfg.temperature, cfg.in_batch_negatives) \
                + w * F.binary_cross_entropy_with_logits(logit, y.float())
            optimise(loss, [opt], list(head.parameters()), GRAD_CLIP)
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        g_train = None  # the weights moved
        val_g, val_logit = embed_all(head, val_inputs)
        val_bce = float(F.binary_cross_entropy_with_logits(torch.as_tensor(val_logit), val_labels.float().cpu()))
        record = {"stage": "rgcl", "epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_bce,
                  "mining_s": round(mining_s, 4)}
        val = val_bce
        if cfg.early_stop == "rkc":
            from mmd.evaluate.metrics import auroc

            g_train, _ = embed_all(head, train_inputs)  # reused by the next refresh
            found = auroc(val_labels.cpu().numpy(), rkc_scores(val_g, g_train, y_np, cfg.rkc.k, cfg.rkc.weighting))
            record["val_rkc_auroc"] = found
            val = 1.0 - (found if found is not None else 0.5)
        history.append(record)
        if stopper.step(epoch, val):
            break
    stopper.restore()
    head.eval()
    if log:
        log(f"rgcl: best epoch {stopper.best_epoch} of {len(history)} (val {cfg.early_stop} {stopper.best:.4f}), "
            f"{time.perf_counter() - started:.0f}s")
    return FitResult(head, history, stopper.best_epoch, time.perf_counter() - started)


def binary_temperature(logit: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling of a logistic output (as the two-class logits [0, logit])."""
    logit = np.asarray(logit, np.float64)
    return fit_temperature(np.stack([np.zeros_like(logit), logit], axis=1), y)


@dataclass
class Trained:
    head: RGCLHead
    fit: FitResult
    temperature: float
    train_g: np.ndarray
    metrics: dict
    rkc: dict  # role -> RKC scores of its items against the training embeddings


def train_rgcl(data: TrainData, cfg: RGCLConfig, train_cfg: TrainConfig, seed: int | None = None,
               miner: Miner | None = None, log: Callable[[str], None] | None = None) -> Trained:
    """Train on `data`; score the logistic head (temperature-scaled on val) and RKC (database = train)."""
    seed = train_cfg.seed if seed is None else seed
    device = select_device(train_cfg.device)
    torch.manual_seed(seed)
    head = RGCLHead(data.text_dim, data.image_dim, cfg).to(device)
    tr, va = tensors(data.train, device), tensors(data.val, device)
    y_tr = torch.as_tensor(data.train.labels, device=device)
    y_va = torch.as_tensor(data.val.labels, device=device)
    fit = fit_head(head, tr, y_tr, va, y_va, cfg, seed, log, miner)
    train_g, _ = embed_all(head, tr)
    val_g, val_logit = embed_all(head, va)
    temperature = binary_temperature(val_logit, data.val.labels)
    metrics: dict = {}
    rkc: dict = {}
    for role in ("val", "test"):
        split = getattr(data, role)
        if split is None:
            continue
        g, logit = (val_g, val_logit) if role == "val" else embed_all(head, tensors(split, device))
        rkc[role] = rkc_scores(g, train_g, data.train.labels, cfg.rkc.k, cfg.rkc.weighting)
        metrics[role] = {
            "head": classification_metrics(split.labels, sigmoid(logit, temperature), train_cfg.label_names),
            "rkc": classification_metrics(split.labels, rkc[role], train_cfg.label_names),
        }
    return Trained(head.cpu(), fit, temperature, train_g, metrics, rkc)
