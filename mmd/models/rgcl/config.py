"""RGCL's knobs (the `rgcl` section of params.yaml). Defaults follow the authors' code
(JingbiaoMei/RGCL, src/run_rac.py run as scripts/experiments.sh runs it) where it did
better on HarMeme than what this project had (docs/experiments/rgcl-study.md):
map_dim 1024, 3 MLP layers, batch 64, lr 1e-4, 30 epochs, the triplet form of the loss,
in-batch negatives plus one hard negative, BCE mixed in with weight 0.5, L2-normalised
projections, their dropouts, AdamW weight decay 0.01, the epoch with the best head
accuracy, RKC with K = 20 and signed-cosine rank weights. Two choices are not theirs: the
positive is the example itself and the hard negative its nearest opposite-label example,
both as embedded at the epoch's refresh and fixed (their code searches with each batch's
dropout-perturbed embedding, `mining_query: batch`), and gradients are clipped at norm 5,
not 0.1: together 0.780 ± 0.006 RKC AUROC against their recipe's 0.766 ± 0.005 in this
code."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RKCConfig(_Strict):
    k: int = Field(20, gt=0)
    # rank: w_k = K - k + 1 (the paper); uniform: w_k = 1; similarity: w_k = max(cos, 0);
    # rank_similarity: each neighbour votes its label as +-1 times its cosine, with rank weights
    # (the authors' code), mapped from [-1, 1] to a score in [0, 1]
    weighting: Literal["rank", "uniform", "similarity", "rank_similarity"] = "rank_similarity"


class RGCLConfig(_Strict):
    map_dim: int = Field(1024, gt=0)
    num_layers: int = Field(3, gt=0)
    input_dropout: float = Field(0.2, ge=0, lt=1)   # after each modality's projection
    fusion_dropout: float = Field(0.4, ge=0, lt=1)  # on the fused vector, before the MLP's first layer
    dropout: float = Field(0.1, ge=0, lt=1)         # before the MLP's later layers (and the output's, with head_relu)
    input_norm: Literal["layernorm", "none"] = "none"  # on each frozen feature, before its projection
    normalize_projections: bool = True   # L2-normalise each modality's projection before the product
    head_relu: bool = True               # the logistic output reads ReLU(g) (+ dropout), not g
    # infonce: -log e^{s+} / (e^{s+} + sum e^{s-}) (the paper's equation); triplet: relu(mean in-batch s-
    # + sum hard s- - s+ + margin) (the loss its released scripts train with)
    loss: Literal["infonce", "triplet"] = "triplet"
    triplet_margin: float = Field(0.1, ge=0)
    temperature: float = Field(1.0, gt=0)      # sim(g, g') = cos / temperature (the paper: 1)
    hard_negatives: int = Field(1, ge=0)       # nearest opposite-label items per example
    in_batch_negatives: bool = True            # opposite-label items of the batch count too
    bce_weight: float = Field(0.5, ge=0, le=1)  # loss = (1 - w) * L_RGCL + w * BCE
    # the positive: the nearest other same-label example (other), or the example itself as embedded at the
    # last refresh (self); with mining_query batch, whatever the search finds first (itself included)
    positive: Literal["other", "self"] = "self"
    # who searches: every example once per refresh, by its refresh embedding, never finding itself
    # (refresh); or each batch at every step, by its current training-mode embedding (dropout on), among
    # the refresh's embeddings of all the training set, itself included, within the `mining_window`
    # nearest: the nearest same-label one is the positive, the nearest opposite-label ones the hard
    # negatives, and one not in the window is left out (batch: the authors' code, window 12)
    mining_query: Literal["refresh", "batch"] = "refresh"
    mining_window: int = Field(12, gt=0)
    # the embeddings of positives and hard negatives: recomputed by the current head with gradient (live),
    # or those of the last refresh, fixed (snapshot: the authors' code)
    mined_from: Literal["live", "snapshot"] = "snapshot"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    grad_clip: float = Field(5.0, gt=0)        # max gradient norm
    batch_size: int = Field(64, gt=1)
    epochs: int = Field(30, gt=0)
    patience: int = Field(30, gt=0)
    # the validation figure that picks the epoch: rkc (1 - AUROC of RKC against the training
    # embeddings: what predicts by default), bce (the logistic head's loss) or head_acc (1 - the
    # head's accuracy at 0.5: the authors' code)
    early_stop: Literal["rkc", "bce", "head_acc"] = "head_acc"
    # mining: the training embeddings go into a vector-store collection every `refresh_every`
    # epochs and positives / hard negatives are searched there (store), or found by an exact
    # matmul + top-k in torch (exact); see benchmarks/bench_mining.py for the trade-off
    mining: Literal["store", "exact"] = "exact"
    refresh_every: int = Field(1, gt=0)
    rkc: RKCConfig = RKCConfig()
    predict_with: Literal["rkc", "head"] = "rkc"
    collection: str = "rgcl"                   # the RKC database of the trained model
    mining_collection: str = "rgcl_mining"


# What a model saved before these knobs existed was trained and built with (its config.json
# lacks them): loading fills them in from here, not from today's defaults, so that its weights
# fit the head that is built for them.
PRE_STUDY = {"fusion_dropout": None, "input_norm": "layernorm", "normalize_projections": False, "head_relu": False,
             "loss": "infonce", "triplet_margin": 0.1, "positive": "other", "mining_query": "refresh",
             "mining_window": 12, "mined_from": "live", "grad_clip": 5.0}


def saved_config(saved: dict) -> RGCLConfig:
    """The RGCLConfig of a saved model's config.json `rgcl` section."""
    missing = {k: v for k, v in PRE_STUDY.items() if k not in saved}
    if "fusion_dropout" in missing:  # one dropout before every layer of the MLP
        missing["fusion_dropout"] = saved.get("dropout", 0.2)
    return RGCLConfig.model_validate({**saved, **missing})
