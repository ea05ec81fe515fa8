"""The train_cmc stage: train the configured variant on the cycle's data, save it, plot it, report it."""

from __future__ import annotations

from typing import Callable

from mmd.config import Settings
from mmd.evaluate.metrics import plot_evaluation, plot_history
from mmd.items import now_iso
from mmd.models.cmc.fit import train_variant
from mmd.models.cmc.predictor import MODEL_NAME, raw_inputs, save_model
from mmd.results import TrainReport


def train_stage(settings: Settings, variant: str | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train, save under <data>/models/cmc, write reports/train_cmc.json (and its plots)."""
    from mmd.encoders import build_encoder
    from mmd.models.data import load_training_data

    cfg, tcfg = settings.params.cmc, settings.params.train
    at = settings.layout
    encoder = build_encoder(settings.params.embed, settings.root)
    data = load_training_data(settings, encoder)
    backbones, raw = None, None
    if cfg.finetune.enabled:
        backbones = encoder.trainable_backbones()
        raw = raw_inputs(encoder, settings.data_dir)
    trained = train_variant(data, cfg, tcfg, variant, backbones=backbones, raw=raw, log=log)
    model_dir, plots_dir = at.model(MODEL_NAME), at.train_plots(MODEL_NAME)
    save_model(model_dir, trained, cfg, data, tcfg, finetuned=cfg.finetune.enabled)
    plots = {"history": str(plot_history(trained.history, plots_dir / "history.png", f"CMC ({trained.variant})"))}
    for role, y_p in trained.scores.items():
        plots[role] = str(plot_evaluation(getattr(data, role).labels, y_p, plots_dir / f"evaluation-{role}.png",
                                          f"CMC ({trained.variant}), {role}"))
    report = TrainReport(
        model=MODEL_NAME, variant=trained.variant, serves=MODEL_NAME, trained_at=now_iso(),
        seconds=round(trained.seconds, 2), temperature=trained.temperature, model_dir=str(model_dir),
        val={MODEL_NAME: trained.metrics["val"]}, test={MODEL_NAME: trained.metrics["test"]} if "test" in trained.metrics
        else {}, plots=plots, best_epochs=trained.stopped, data=data.summary())
    report.write(at)
    return report.to_dict()
