"""CMC (Wei et al., ICASSP 2022): text and image networks trained mutually with a contrastive
cross-modal distillation loss, then a BLOCK fusion layer on their frozen features.

config.py  the knobs and the ablation variants (no torch import)
loss.py    the NCE distillation loss and its memory bank (after CRD, Tian et al. 2020)
model.py   the modality networks and BLOCK fusion (Ben-younes et al. 2019), in torch
train.py   the two-stage training loop, calibration, saving, loading and prediction
"""
