"""LMM detectors: LoRA fine-tuning of a transformers vision-language model.

Two recipes (see `config.py`): `rgcl`, LMM-RGCL (Mei et al., EMNLP 2025) — stage 1 fine-tunes
LoRA adapters on the language model with the answer's LM loss plus a classifier head on the
last prompt token, stage 2 freezes the LMM and trains a retrieval-guided (RGCL) head on its
hidden states; and `yes_no`, the synthetic-data paper's recipe — LoRA on a yes/no question,
scored by P(yes) from the next-token logits.

`model.py` loads a model and turns items into batches; `train.py` trains, saves, reloads and
runs the `train_lmm` stage; `tiny.py` builds tiny random models (tests and benchmarks only).
Nothing heavy is imported here: `config.py` is read by `mmd.config`.
"""
