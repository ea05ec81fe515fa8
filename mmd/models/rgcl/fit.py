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
from typing import Callable, Sequence

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
from mmd.models.rgcl.knn import Mined, mine_batch, mine_exact, rkc_scores
from mmd.models.rgcl.loss import rgcl_loss
from mmd.models.rgcl.model import RGCLHead
from mmd.models.rgcl.predictor import embed_all, sigmoid, tensors

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
            # batch mining searches at every step (below); the refresh only takes the snapshot
            mined = miner(g_all, y_np) if cfg.mining_query == "refresh" else Mined(np.arange(n), np.zeros((n, 0), int))
            mining_s = time.perf_counter() - t
            snapshot = torch.as_tensor(g_all, device=device)  # the embeddings mined on (mined_from: snapshot)
        pos_all = torch.as_tensor(mined.positives if cfg.positive == "other" else np.arange(n), device=device)
        neg_all = torch.as_tensor(mined.negatives, device=device)
        head.train()
        total, count = 0.0, 0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            if len(idx) < 2:
                continue
            idx = idx.to(device)
            y = train_labels[idx]
            g, logit = head(*[x[idx] for x in train_inputs])
            pos, neg = pos_all[idx], neg_all[idx]
            if cfg.mining_query == "batch":
                pos, neg = mine_batch(g, snapshot, train_labels, y, cfg.hard_negatives, cfg.mining_window)
            g_pos, g_neg = _mined_embeddings(head, train_inputs, pos.clamp(min=0), neg.clamp(min=0), snapshot, cfg)
            g_pos = g_pos * (pos >= 0)[:, None]  # none in the window: a zero vector, cosine 0
            loss = (1 - w) * rgcl_loss(g, y, g_pos, g_neg, cfg.temperature, cfg.in_batch_negatives, cfg.loss,
                                       cfg.triplet_margin, neg >= 0) \
                + w * F.binary_cross_entropy_with_logits(logit, y.float())
            optimise(loss, [opt], list(head.parameters()), cfg.grad_clip)
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
        elif cfg.early_stop == "head_acc":
            record["val_head_acc"] = float(((val_logit >= 0) == (val_labels.cpu().numpy() == 1)).mean())
            val = 1.0 - record["val_head_acc"]
        history.append(record)
        if stopper.step(epoch, val):
            break
    stopper.restore()
    head.eval()
    if log:
        # the stopper keeps "lower is better": the figure itself for accuracy and AUROC, the loss for bce
        shown = stopper.best if cfg.early_stop == "bce" else 1.0 - stopper.best
        log(f"rgcl: best epoch {stopper.best_epoch} of {len(history)} (val {cfg.early_stop} {shown:.4f}), "
            f"{time.perf_counter() - started:.0f}s")
    return FitResult(head, history, stopper.best_epoch, time.perf_counter() - started)


def _mined_embeddings(head: nn.Module, inputs: Sequence[torch.Tensor], pos: torch.Tensor, neg: torch.Tensor,
                      snapshot: torch.Tensor, cfg: RGCLConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The embeddings of a batch's positives (B, d) and hard negatives (B, H, d): re-embedded by the
    current head, with gradient (mined_from: live), or read from the refresh's embeddings (snapshot)."""
    h = neg.shape[1]
    if cfg.mined_from == "snapshot":
        return snapshot[pos], (snapshot[neg.reshape(-1)].view(len(neg), h, -1) if h else None)
    g_pos, _ = head(*[x[pos] for x in inputs])
    g_neg = head(*[x[neg.reshape(-1)] for x in inputs])[0].view(len(neg), h, -1) if h else None
    return g_pos, g_neg


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
