"""CMC's networks: one per modality with its own classifier, BLOCK fusion, and the
early-fusion (concatenation) baseline.

On frozen backbone features a modality network is LayerNorm -> Linear -> ReLU -> Dropout
(its output is the modality feature f^T or f^V) plus a linear classifier. With
fine-tuning, the encoder's own tower runs in front of it (`backbone`). An item without a
picture gives the image network a learned "no image" input instead of a zero vector.

BLOCK (Ben-younes et al., AAAI 2019) fuses two vectors with a block-term tensor
decomposition: both are projected to mm_dim, cut into `chunks` blocks, and each pair of
blocks interacts through a rank-`rank` bilinear product; each block's result is
signed-square-rooted and L2-normalised, then all are concatenated and mapped to the
output.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mmd.models.cmc.config import BlockConfig


def chunk_sizes(dim: int, chunks: int) -> list[int]:
    """Split dim into `chunks` near-equal positive sizes (the first ones take the remainder)."""
    if chunks > dim:
        raise ValueError(f"BLOCK: {chunks} chunks do not fit in mm_dim {dim}")
    base, extra = divmod(dim, chunks)
    return [base + 1] * extra + [base] * (chunks - extra)


class Block(nn.Module):
    def __init__(self, input_dims: tuple[int, int], output_dim: int, cfg: BlockConfig = BlockConfig()):
        super().__init__()
        self.cfg = cfg
        self.linear0 = nn.Linear(input_dims[0], cfg.mm_dim)
        self.linear1 = nn.Linear(input_dims[1], cfg.mm_dim)
        self.sizes = chunk_sizes(cfg.mm_dim, cfg.chunks)
        self.merge0 = nn.ModuleList(nn.Linear(s, s * cfg.rank) for s in self.sizes)
        self.merge1 = nn.ModuleList(nn.Linear(s, s * cfg.rank) for s in self.sizes)
        self.linear_out = nn.Linear(cfg.mm_dim, output_dim)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        x0, x1 = self.linear0(x0), self.linear1(x1)
        x0 = F.dropout(x0, cfg.dropout_input, self.training)
        x1 = F.dropout(x1, cfg.dropout_input, self.training)
        zs = []
        for c0, c1, m0, m1 in zip(torch.split(x0, self.sizes, 1), torch.split(x1, self.sizes, 1), self.merge0,
                                  self.merge1):
            m = (m0(c0) * m1(c1)).view(len(x0), cfg.rank, -1)
            z = m.sum(1)
            z = torch.sqrt(F.relu(z) + 1e-12) - torch.sqrt(F.relu(-z) + 1e-12)  # signed square root
            zs.append(F.normalize(z, dim=1))
        z = F.dropout(torch.cat(zs, 1), cfg.dropout_pre_lin, self.training)
        return F.dropout(self.linear_out(z), cfg.dropout_output, self.training)


class ModalityNet(nn.Module):
    """f^T or f^V: (backbone ->) LayerNorm -> Linear -> ReLU -> Dropout, then a classifier."""

    def __init__(self, in_dim: int, hidden: int, dropout: float, n_classes: int = 2, missing: bool = False,
                 backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.missing = nn.Parameter(torch.zeros(in_dim)) if missing else None
        self.body = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.classifier = nn.Linear(hidden, n_classes)

    def features(self, x, present: torch.Tensor | None = None) -> torch.Tensor:
        if self.backbone is not None:
            x = self.backbone(x)
        if self.missing is not None and present is not None:
            x = torch.where(present[:, None], x, self.missing.to(x.dtype).expand_as(x))
        return self.body(x)

    def forward(self, x, present: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x, present)
        return f, self.classifier(f)


class ConcatNet(nn.Module):
    """The early-fusion baseline: one network on [text features, image features]."""

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float, n_classes: int = 2):
        super().__init__()
        self.missing = nn.Parameter(torch.zeros(image_dim))
        self.net = nn.Sequential(nn.LayerNorm(text_dim + image_dim), nn.Linear(text_dim + image_dim, hidden),
                                 nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, text: torch.Tensor, image: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        image = torch.where(present[:, None], image, self.missing.to(image.dtype).expand_as(image))
        return self.net(torch.cat([text, image], 1))


class CMCModel(nn.Module):
    """Every part a variant may use; `head` says which output predicts.

    forward returns the logits of the head, from text input, image input and a has-image mask
    (inputs are features, or raw batches for the backbones when fine-tuning)."""

    def __init__(self, text_dim: int, image_dim: int, hidden: int, dropout: float, branches: tuple[str, ...],
                 head: str, block: BlockConfig, text_backbone: nn.Module | None = None,
                 image_backbone: nn.Module | None = None):
        super().__init__()
        self.branches, self.head = tuple(branches), head
        self.text_net = ModalityNet(text_dim, hidden, dropout, backbone=text_backbone) if "text" in branches else None
        self.image_net = (ModalityNet(image_dim, hidden, dropout, missing=True, backbone=image_backbone)
                          if "image" in branches else None)
        self.fusion = Block((hidden, hidden), 2, block) if head in ("fusion", "joint") else None
        self.concat = ConcatNet(text_dim, image_dim, hidden, dropout) if head == "concat" else None

    def branch_outputs(self, text, image, present: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.text_net is not None:
            out["text_feat"], out["text_logits"] = self.text_net(text)
        if self.image_net is not None:
            out["image_feat"], out["image_logits"] = self.image_net(image, present)
        return out

    def forward(self, text, image, present: torch.Tensor) -> torch.Tensor:
        if self.head == "concat":
            return self.concat(text, image, present)
        out = self.branch_outputs(text, image, present)
        if self.head in ("fusion", "joint"):
            return self.fusion(out["text_feat"], out["image_feat"])
        return out[f"{self.head}_logits"]
