"""The retrieval-guided contrastive loss (RGCL, Mei et al. 2024).

For an example with embedding g, its pseudo-gold positive g+ (the nearest same-label
training example, never itself) and its negatives (the nearest opposite-label examples,
plus the opposite-label examples of the batch):

    L = -log( e^{sim(g, g+)} / ( e^{sim(g, g+)} + sum_{g-} e^{sim(g, g-)} ) ),

with sim the cosine divided by `temperature`, averaged over the batch.
"""

from __future__ import annotations

import torch


def rgcl_loss(g: torch.Tensor, labels: torch.Tensor, positives: torch.Tensor, hard_negatives: torch.Tensor | None,
              temperature: float = 1.0, in_batch: bool = True) -> torch.Tensor:
    """g, positives: (B, d) L2-normalised; hard_negatives: (B, H, d) or None; labels: (B,)."""
    pos = (g * positives).sum(1) / temperature                      # (B,)
    terms = [pos[:, None]]
    if hard_negatives is not None and hard_negatives.shape[1] > 0:
        terms.append(torch.bmm(hard_negatives, g.unsqueeze(2)).squeeze(2) / temperature)  # (B, H)
    if in_batch:
        sims = g @ g.T / temperature                                 # (B, B)
        other = labels[:, None] != labels[None, :]
        terms.append(sims.masked_fill(~other, float("-inf")))
    logits = torch.cat(terms, dim=1)
    return (torch.logsumexp(logits, dim=1) - pos).mean()
