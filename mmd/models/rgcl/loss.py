"""The retrieval-guided contrastive loss (RGCL, Mei et al. 2024).

For an example with embedding g, its pseudo-gold positive g+ (the nearest same-label
training example, never itself) and its negatives (the nearest opposite-label examples,
plus the opposite-label examples of the batch):

    infonce:  L = -log( e^{sim(g, g+)} / ( e^{sim(g, g+)} + sum_{g-} e^{sim(g, g-)} ) ),

with sim the cosine divided by `temperature` (the paper's equation), or

    triplet:  L = relu( mean_{in-batch g-} cos(g, g-) + sum_{hard g-} cos(g, g-) - cos(g, g+) + margin )

(the form the authors' released scripts train with: `--loss triplet`, margin 0.1; an example
with no opposite-label example in its batch has 0 for the in-batch term). Both averaged
over the batch. `hard_valid` (B, H) marks the hard negatives that exist (batch mining within a
window may find none); the others are left out. A positive that was not found is a zero vector
(cosine 0), as in the authors' code.
"""

from __future__ import annotations

import torch


def rgcl_loss(g: torch.Tensor, labels: torch.Tensor, positives: torch.Tensor, hard_negatives: torch.Tensor | None,
              temperature: float = 1.0, in_batch: bool = True, form: str = "infonce",
              margin: float = 0.1, hard_valid: torch.Tensor | None = None) -> torch.Tensor:
    """g, positives: (B, d) L2-normalised; hard_negatives: (B, H, d) or None; labels: (B,)."""
    has_hard = hard_negatives is not None and hard_negatives.shape[1] > 0
    hard = torch.bmm(hard_negatives, g.unsqueeze(2)).squeeze(2) if has_hard else None  # (B, H) cosines
    if has_hard and hard_valid is None:
        hard_valid = torch.ones_like(hard, dtype=torch.bool)
    other = labels[:, None] != labels[None, :]
    cos_pos = (g * positives).sum(1)
    if form == "triplet":
        total = margin - cos_pos
        if has_hard:
            total = total + (hard * hard_valid).sum(1)
        if in_batch:
            n = other.sum(1)
            inb = ((g @ g.T) * other).sum(1) / n.clamp(min=1)
            total = total + torch.where(n > 0, inb, torch.zeros_like(inb))
        return torch.relu(total).mean()
    if form != "infonce":
        raise ValueError(f"unknown RGCL loss {form!r}: infonce or triplet")
    pos = cos_pos / temperature                                      # (B,)
    terms = [pos[:, None]]
    if has_hard:
        terms.append((hard / temperature).masked_fill(~hard_valid, float("-inf")))  # (B, H)
    if in_batch:
        sims = g @ g.T / temperature                                 # (B, B)
        terms.append(sims.masked_fill(~other, float("-inf")))
    logits = torch.cat(terms, dim=1)
    return (torch.logsumexp(logits, dim=1) - pos).mean()
