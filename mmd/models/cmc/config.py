"""CMC's knobs (the `cmc` section of params.yaml) and its ablation variants.

Defaults follow the paper's code (Doraemonzm/CMC) where it states them: beta 0.3, a 128-d
NCE embedding, temperature 0.07, memory momentum 0.5, BLOCK with mm_dim 256, 18 chunks,
rank 15 and input dropout 0.1; backbone learning rates 2e-5 (text, Adam) and 3e-4
(image, SGD) when the backbones are fine-tuned. On frozen backbone features (the default,
for CPU) the trainable part is a small network per modality on top of the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Variant:
    """What a variant trains and what it predicts with.

    branches: the single-modal networks trained in stage 1;
    distill:  whether stage 1 adds the cross-modal NCE distillation (beta > 0);
    head:     text | image (that network's own classifier), fusion (stage 2: BLOCK on the
              frozen branch features), joint (branches and BLOCK trained end to end on one
              loss: a shared multimodal representation, no mutual learning) or concat (one
              network on the concatenated features: early fusion).
    """

    branches: tuple[str, ...]
    distill: bool
    head: str
    about: str


VARIANTS: dict[str, Variant] = {
    "text": Variant(("text",), False, "text", "text network alone"),
    "text_distill": Variant(("text", "image"), True, "text", "text network, trained mutually with distillation"),
    "image": Variant(("image",), False, "image", "image network alone"),
    "image_distill": Variant(("text", "image"), True, "image", "image network, trained mutually with distillation"),
    "concat": Variant((), False, "concat", "concatenated features, one network (early fusion)"),
    "shared": Variant(("text", "image"), False, "joint", "shared representation: both networks and BLOCK end to end"),
    "block": Variant(("text", "image"), False, "fusion", "two stages without distillation: BLOCK on frozen networks"),
    "cmc": Variant(("text", "image"), True, "fusion", "full CMC: mutual learning with distillation, then BLOCK"),
}
VariantName = Literal["text", "text_distill", "image", "image_distill", "concat", "shared", "block", "cmc"]


class NCEConfig(_Strict):
    feat_dim: int = Field(128, gt=0)        # both features are mapped to this and L2-normalised
    k: int = Field(1024, gt=0)              # negatives per anchor (at most the bank size - 1)
    temperature: float = Field(0.07, gt=0)
    momentum: float = Field(0.5, ge=0, lt=1)  # memory bank update
    # uniform: negatives drawn uniformly from the bank (the paper); other_class: from
    # items of the other label only (what the released code does)
    negatives: Literal["uniform", "other_class"] = "uniform"


class BlockConfig(_Strict):
    mm_dim: int = Field(256, gt=0)
    chunks: int = Field(18, gt=0)
    rank: int = Field(15, gt=0)
    dropout_input: float = Field(0.1, ge=0, lt=1)
    dropout_pre_lin: float = Field(0.0, ge=0, lt=1)
    dropout_output: float = Field(0.0, ge=0, lt=1)


class FinetuneConfig(_Strict):
    """Train the encoder's own text and image towers too (a GPU job); off = frozen features."""

    enabled: bool = False
    text_lr: float = Field(2e-5, gt=0)      # Adam, as in the paper
    image_lr: float = Field(3e-4, gt=0)     # SGD with momentum, as in the paper
    image_momentum: float = Field(0.9, ge=0, lt=1)
    image_weight_decay: float = Field(5e-4, ge=0)


class CMCConfig(_Strict):
    variant: VariantName = "text_distill"
    # `mmd train --model cmc --ablation` trains each of these and writes the table
    ablation: tuple[VariantName, ...] = ("text", "text_distill", "image", "image_distill", "concat", "shared",
                                         "block", "cmc")
    ablation_seeds: tuple[int, ...] = (0,)
    hidden: int = Field(256, gt=0)          # each modality network's feature width
    dropout: float = Field(0.2, ge=0, lt=1)
    beta: float = Field(0.3, ge=0)          # weight of the distillation loss
    nce: NCEConfig = NCEConfig()
    block: BlockConfig = BlockConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    lr: float = Field(1e-3, gt=0)           # Adam, for everything that is not a backbone
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(64, gt=1)
    epochs: int = Field(30, gt=0)           # stage 1 (and the one-stage variants)
    fusion_epochs: int = Field(30, gt=0)    # stage 2
    patience: int = Field(5, gt=0)          # epochs without a better validation loss before stopping
    class_weight: Literal["none", "balanced"] = "none"
    # equal: the items that share a picture weigh one item together in the loss (MediaEval's viral pictures
    # come with thousands of near-identical reposts); none: every item weighs one
    picture_weight: Literal["none", "equal"] = "equal"
    calibrate: bool = True                  # temperature scaling on the validation split
