"""The LMM detector's knobs (the `lmm` section of params.yaml). No torch here: mmd.config reads it.

Defaults follow LMM-RGCL (Mei et al., EMNLP 2025): Qwen2-VL-2B-Instruct, LoRA r 128 / alpha
256 on the attention projections, an MLP head on the last prompt token, stage 1 for one
epoch (LM loss + BCE), stage 2 (the RGCL head on frozen hidden states, the `rgcl` section's
settings) for 30.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoRAParams(_Strict):
    """peft LoRA on the language model's linear layers whose names end with `target_modules`."""

    r: int = Field(128, gt=0)
    alpha: int = Field(256, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


class HeadParams(_Strict):
    """The stage-1 classifier: Linear(hidden, hidden) -> ReLU -> Dropout -> Linear(hidden, 1)."""

    hidden: int = Field(1024, gt=0)
    dropout: float = Field(0.1, ge=0, lt=1)


class LMMConfig(_Strict):
    # a Hugging Face model id (needs the hub cache offline) or a local folder (relative to params.yaml)
    model: str = "Qwen/Qwen2-VL-2B-Instruct"
    # rgcl: LMM-RGCL's two stages; yes_no: LoRA on the yes/no answer, score = P(yes)
    recipe: Literal["rgcl", "yes_no"] = "rgcl"
    prompt: str = "Is this meme hateful or is this post misinformation? Answer yes or no."
    lora: LoRAParams = LoRAParams()
    head: HeadParams = HeadParams()
    bce_weight: float = Field(1.0, ge=0)    # stage 1 loss = LM loss + bce_weight * BCE (rgcl)
    stage1_epochs: int = Field(1, ge=0)     # LoRA fine-tuning (both recipes); 0 = the base model as it is
    stage2_epochs: int = Field(30, ge=0)    # the RGCL head (rgcl); 0 = predict with the stage-1 head
    lr: float = Field(1e-4, gt=0)           # LoRA weights (AdamW)
    head_lr: float = Field(1e-4, gt=0)      # the stage-1 head
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(8, gt=0)        # micro-batches per optimiser step
    max_length: int = Field(512, ge=16)     # tokens per item, image tokens included; the text is cut to fit
    image_size: int = Field(448, ge=28)     # pictures are resized so that their longest side is this
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on CUDA, fp32 on CPU
    gradient_checkpointing: bool = True
    device: str = "auto"
    seed: int = 0
