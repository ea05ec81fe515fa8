"""The RGCL head: frozen image and text features -> (LayerNorm) + projections (map_dim) ->
fusion by element-wise product -> an MLP -> the embedding g (L2-normalised, used for
retrieval) and a logistic output. `FeatureHead` is the same from one feature vector (e.g. an
LMM's hidden state, LMM-RGCL stage 2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mmd.models.rgcl.config import RGCLConfig


def _mlp(cfg: RGCLConfig) -> nn.Sequential:
    """num_layers of Dropout -> Linear, with ReLU between them but not after the last: g can point
    anywhere on the sphere (after a ReLU every cosine would be >= 0 and retrieval would crowd). The
    first dropout is on the fused vector (fusion_dropout), the later ones `dropout`."""
    layers: list[nn.Module] = []
    for n in range(cfg.num_layers):
        layers += [nn.Dropout(cfg.fusion_dropout if n == 0 else cfg.dropout), nn.Linear(cfg.map_dim, cfg.map_dim)]
        if n < cfg.num_layers - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _output(cfg: RGCLConfig) -> nn.Module:
    """The logistic output on h (the unnormalised g): a linear layer, or ReLU -> Dropout -> linear
    (head_relu, as the authors' code: their MLP ends in ReLU + dropout and g is read before them)."""
    if cfg.head_relu:
        return nn.Sequential(nn.ReLU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.map_dim, 1))
    return nn.Linear(cfg.map_dim, 1)


def _projection(in_dim: int, cfg: RGCLConfig, relu: bool = False) -> nn.Sequential:
    # LayerNorm first (input_norm): encoders give L2-normalised vectors whose entries are ~1/sqrt(dim)
    layers: list[nn.Module] = [nn.LayerNorm(in_dim)] if cfg.input_norm == "layernorm" else []
    layers.append(nn.Linear(in_dim, cfg.map_dim))
    if relu:
        layers.append(nn.ReLU())
    layers.append(nn.Dropout(cfg.input_dropout))
    return nn.Sequential(*layers)


class RGCLHead(nn.Module):
    def __init__(self, text_dim: int, image_dim: int, cfg: RGCLConfig = RGCLConfig()):
        super().__init__()
        self.missing = nn.Parameter(torch.zeros(image_dim))  # the input of an item without a picture
        self.normalize_projections = cfg.normalize_projections
        self.text_proj = _projection(text_dim, cfg)
        self.image_proj = _projection(image_dim, cfg)
        self.mlp = _mlp(cfg)
        self.out = _output(cfg)

    def forward(self, text: torch.Tensor, image: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.where(present[:, None], image, self.missing.to(image.dtype).expand_as(image))
        t, i = self.text_proj(text), self.image_proj(image)
        if self.normalize_projections:  # each modality on the unit sphere: the product is their aligned part
            t, i = F.normalize(t, dim=1), F.normalize(i, dim=1)
        h = self.mlp(t * i)
        return F.normalize(h, dim=1), self.out(h).squeeze(1)


class FeatureHead(nn.Module):
    def __init__(self, in_dim: int, cfg: RGCLConfig = RGCLConfig()):
        super().__init__()
        self.proj = _projection(in_dim, cfg, relu=True)
        self.mlp = _mlp(cfg)
        self.out = _output(cfg)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(self.proj(x))
        return F.normalize(h, dim=1), self.out(h).squeeze(1)
