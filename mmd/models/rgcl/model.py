"""The RGCL head: frozen image and text features -> LayerNorm + projections (map_dim) -> fusion by
element-wise product -> an MLP -> the embedding g (L2-normalised, used for retrieval) and
a logistic output. `FeatureHead` is the same from one feature vector (e.g. an LMM's
hidden state, LMM-RGCL stage 2)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mmd.models.rgcl.config import RGCLConfig


def _mlp(cfg: RGCLConfig) -> nn.Sequential:
    """num_layers of Dropout -> Linear, with ReLU between them but not after the last: g can point
    anywhere on the sphere (after a ReLU every cosine would be >= 0 and retrieval would crowd)."""
    layers: list[nn.Module] = []
    for n in range(cfg.num_layers):
        layers += [nn.Dropout(cfg.dropout), nn.Linear(cfg.map_dim, cfg.map_dim)]
        if n < cfg.num_layers - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class RGCLHead(nn.Module):
    def __init__(self, text_dim: int, image_dim: int, cfg: RGCLConfig = RGCLConfig()):
        super().__init__()
        self.missing = nn.Parameter(torch.zeros(image_dim))  # the input of an item without a picture
        # LayerNorm first: encoders give L2-normalised vectors whose entries are ~1/sqrt(dim); without
        # it the product of the two projections is ~1e-3, the biases dominate and every g is alike
        self.text_proj = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, cfg.map_dim),
                                       nn.Dropout(cfg.input_dropout))
        self.image_proj = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, cfg.map_dim),
                                        nn.Dropout(cfg.input_dropout))
        self.mlp = _mlp(cfg)
        self.out = nn.Linear(cfg.map_dim, 1)

    def forward(self, text: torch.Tensor, image: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.where(present[:, None], image, self.missing.to(image.dtype).expand_as(image))
        h = self.mlp(self.text_proj(text) * self.image_proj(image))
        return F.normalize(h, dim=1), self.out(h).squeeze(1)


class FeatureHead(nn.Module):
    def __init__(self, in_dim: int, cfg: RGCLConfig = RGCLConfig()):
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, cfg.map_dim), nn.ReLU(),
                                  nn.Dropout(cfg.input_dropout))
        self.mlp = _mlp(cfg)
        self.out = nn.Linear(cfg.map_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.mlp(self.proj(x))
        return F.normalize(h, dim=1), self.out(h).squeeze(1)
