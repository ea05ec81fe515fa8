"""The cross-modal NCE distillation loss and its memory bank (CRD, Tian et al. 2020, as CMC uses it).

Both networks' features are mapped by a linear layer to `feat_dim` and L2-normalised:
t_i = phi1(T_i), v_i = phi2(V_i). A memory bank keeps one slowly updated copy of each
item's t and v. For an anchor t_i (the text side), the positive is the bank's v_i and
the k negatives are bank v's of other items; the score of a pair is

    h(t, v) = exp(<t, v> / tau) / Z,   Z = mean(exp(<t, v> / tau)) * N on the first batch,

and with the noise prior k/N, P(D=1 | t, v) = h / (h + k/N). The loss L_{V->T} is
-log P(D=1) for the positive minus the sum over negatives of log(1 - P(D=1)); L_{T->V}
is the same with the roles swapped. Bank entries are not trained: after each step the
batch's entries move to momentum * old + (1 - momentum) * new, renormalised.

Only items that have both modalities take part: the bank is indexed by position among
them (`bank_index`), and N is their number.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

EPS = 1e-7


def nce_loss(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """scores: (B, 1 + k) normalised h, positive first. Mean over the batch of
    -log P(D=1 | positive) - sum_j log(1 - P(D=1 | negative j)), with P = h / (h + k / N)."""
    batch, k = scores.shape[0], scores.shape[1] - 1
    noise = k / n_data
    pos = scores[:, 0]
    log_d1 = torch.log(pos / (pos + noise + EPS))
    neg = scores[:, 1:]
    log_d0 = torch.log(noise / (neg + noise + EPS))
    return -(log_d1.sum() + log_d0.sum()) / batch


class ContrastMemory(nn.Module):
    """The memory bank of both modalities' embeddings and the NCE scores against it."""

    def __init__(self, feat_dim: int, n_data: int, k: int, temperature: float, momentum: float,
                 generator: torch.Generator | None = None):
        super().__init__()
        if n_data < 2:
            raise ValueError(f"the NCE memory needs at least 2 items with both modalities, got {n_data}")
        self.n_data, self.k = n_data, min(k, n_data - 1)
        self.temperature, self.momentum = temperature, momentum
        stdv = 1.0 / math.sqrt(feat_dim / 3)
        init = lambda: torch.rand(n_data, feat_dim, generator=generator).mul_(2 * stdv).add_(-stdv)  # noqa: E731
        self.register_buffer("memory_text", init())
        self.register_buffer("memory_image", init())
        # the normalising constants, fixed on the first batch (negative = not yet set)
        self.register_buffer("z", torch.tensor([-1.0, -1.0]))

    def sample(self, index: torch.Tensor, labels: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 1 + k) bank positions: the item itself, then k negatives, uniform over the bank, or
        uniform over the items of the other label when `labels` (all bank labels) is given."""
        b = len(index)
        if labels is None:
            neg = torch.randint(0, self.n_data, (b, self.k), generator=generator).to(index.device)
        else:
            own = labels[index]
            pools = [torch.nonzero(labels != c).flatten() for c in (0, 1)]
            neg = torch.empty(b, self.k, dtype=torch.long, device=index.device)
            for c in (0, 1):
                rows = torch.nonzero(own == c).flatten()
                if len(rows) == 0:
                    continue
                pool = pools[c] if len(pools[c]) else torch.arange(self.n_data, device=index.device)
                pick = torch.randint(0, len(pool), (len(rows), self.k), generator=generator).to(index.device)
                neg[rows] = pool[pick]
        return torch.cat([index[:, None], neg], dim=1)

    def forward(self, text: torch.Tensor, image: torch.Tensor, index: torch.Tensor,
                contrast: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """text, image: (B, d) L2-normalised embeddings of the batch; index: their bank positions;
        contrast: (B, 1 + k) positions to score against (`sample`). Returns the normalised
        scores of text anchors against the image bank (for L_{V->T}) and of image anchors
        against the text bank (for L_{T->V}), then updates the bank with this batch."""
        w_image = self.memory_image[contrast].detach()           # (B, 1+k, d)
        w_text = self.memory_text[contrast].detach()
        out_text = torch.exp(torch.bmm(w_image, text.unsqueeze(2)).squeeze(2) / self.temperature)
        out_image = torch.exp(torch.bmm(w_text, image.unsqueeze(2)).squeeze(2) / self.temperature)
        if self.z[0] < 0:
            self.z[0] = out_text.detach().mean() * self.n_data
        if self.z[1] < 0:
            self.z[1] = out_image.detach().mean() * self.n_data
        out_text, out_image = out_text / self.z[0], out_image / self.z[1]
        self.update(text.detach(), image.detach(), index)
        return out_text, out_image

    @torch.no_grad()
    def update(self, text: torch.Tensor, image: torch.Tensor, index: torch.Tensor) -> None:
        m = self.momentum
        self.memory_text[index] = F.normalize(self.memory_text[index] * m + text * (1 - m), dim=1)
        self.memory_image[index] = F.normalize(self.memory_image[index] * m + image * (1 - m), dim=1)


class Embed(nn.Module):
    """phi: a linear map to the NCE space, L2-normalised."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x), dim=1)


class CrossModalDistillation(nn.Module):
    """L_distill = L_{V->T} + L_{T->V} for a batch of paired features (the trainable phi1, phi2
    and the memory bank together)."""

    def __init__(self, text_dim: int, image_dim: int, feat_dim: int, n_data: int, k: int, temperature: float,
                 momentum: float, generator: torch.Generator | None = None):
        super().__init__()
        self.embed_text = Embed(text_dim, feat_dim)
        self.embed_image = Embed(image_dim, feat_dim)
        self.memory = ContrastMemory(feat_dim, n_data, k, temperature, momentum, generator)

    def forward(self, text_feat: torch.Tensor, image_feat: torch.Tensor, index: torch.Tensor,
                contrast: torch.Tensor) -> dict[str, torch.Tensor]:
        t, v = self.embed_text(text_feat), self.embed_image(image_feat)
        out_text, out_image = self.memory(t, v, index, contrast)
        v_to_t = nce_loss(out_text, self.memory.n_data)
        t_to_v = nce_loss(out_image, self.memory.n_data)
        return {"v_to_t": v_to_t, "t_to_v": t_to_v, "distill": v_to_t + t_to_v}
