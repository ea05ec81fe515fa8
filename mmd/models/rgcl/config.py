"""RGCL's knobs (the `rgcl` section of params.yaml). Defaults follow the paper and its code
(JingbiaoMei/RGCL): map_dim 1024, 3 MLP layers, batch 64, lr 1e-4, 30 epochs, one hard
negative plus the in-batch negatives, BCE mixed in with weight 0.5, RKC with K = 20 and
rank weights."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RKCConfig(_Strict):
    k: int = Field(20, gt=0)
    # rank: w_k = K - k + 1 (the paper); uniform: w_k = 1; similarity: w_k = max(cos, 0)
    weighting: Literal["rank", "uniform", "similarity"] = "rank"


class RGCLConfig(_Strict):
    map_dim: int = Field(1024, gt=0)
    num_layers: int = Field(3, gt=0)
    input_dropout: float = Field(0.1, ge=0, lt=1)
    dropout: float = Field(0.2, ge=0, lt=1)
    temperature: float = Field(1.0, gt=0)      # sim(g, g') = cos / temperature (the paper: 1)
    hard_negatives: int = Field(1, ge=0)       # nearest opposite-label items per example
    in_batch_negatives: bool = True            # opposite-label items of the batch count too
    bce_weight: float = Field(0.5, ge=0, le=1)  # loss = (1 - w) * L_RGCL + w * BCE
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(64, gt=1)
    epochs: int = Field(30, gt=0)
    patience: int = Field(5, gt=0)
    # the validation figure that picks the epoch: rkc (1 - AUROC of RKC against the training
    # embeddings: what predicts by default) or bce (the logistic head's loss)
    early_stop: Literal["rkc", "bce"] = "rkc"
    # mining: the training embeddings go into a vector-store collection every `refresh_every`
    # epochs and positives / hard negatives are searched there (store), or found by an exact
    # matmul + top-k in torch (exact); see benchmarks/bench_mining.py for the trade-off
    mining: Literal["store", "exact"] = "store"
    refresh_every: int = Field(1, gt=0)
    rkc: RKCConfig = RKCConfig()
    predict_with: Literal["rkc", "head"] = "rkc"
    collection: str = "rgcl"                   # the RKC database of the trained model
    mining_collection: str = "rgcl_mining"
