"""The train_rgcl stage: train on the cycle's data, save, put the RKC database in the candidate collection."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from mmd.config import Settings
from mmd.evaluate.metrics import plot_evaluation, plot_history
from mmd.items import now_iso
from mmd.models.rgcl.fit import train_rgcl
from mmd.models.rgcl.knn import mine_store
from mmd.models.rgcl.predictor import MODEL_NAME, candidate_collection, load_model, save_model, sync_database
from mmd.results import TrainReport


def train_stage(settings: Settings, log: Callable[[str], None] | None = None) -> dict:
    from mmd.encoders import build_encoder
    from mmd.models.data import load_training_data
    from mmd.store import open_store

    cfg, tcfg = settings.params.rgcl, settings.params.train
    at = settings.layout
    model_dir, plots_dir = at.model(MODEL_NAME), at.train_plots(MODEL_NAME)
    started = time.perf_counter()
    encoder = build_encoder(settings.params.embed, settings.root)
    data = load_training_data(settings, encoder)
    with open_store(settings) as store:
        miner = None
        if cfg.mining == "store":
            def miner(g, y):
                return mine_store(store, cfg.mining_collection, data.train.ids, g, y, cfg.hard_negatives)
        trained = train_rgcl(data, cfg, tcfg, miner=miner, log=log)
        save_model(model_dir, trained, cfg, data, tcfg)
        predictor = load_model(model_dir, encoder)
        # a challenger: its database goes to the candidate collection, the serving one is the champion's
        candidate = candidate_collection(cfg)
        synced = sync_database(settings, predictor, store, encoder, collection=candidate)
        # RKC through the store equals the brute-force figure computed in training
        agreement = float(np.mean(np.abs(predictor.rkc(store, data.val, candidate) - trained.rkc["val"]) < 1e-4))
    plots = {"history": str(plot_history(trained.fit.history, plots_dir / "history.png", "RGCL"))}
    for role, scores in trained.rkc.items():
        plots[role] = str(plot_evaluation(getattr(data, role).labels, scores, plots_dir / f"evaluation-{role}.png",
                                          f"RGCL (RKC), {role}"))
    metrics = trained.metrics
    report = TrainReport(
        model=MODEL_NAME, variant=cfg.predict_with, serves=cfg.predict_with, trained_at=now_iso(),
        seconds=round(time.perf_counter() - started, 2), temperature=trained.temperature, model_dir=str(model_dir),
        val=metrics.get("val", {}), test=metrics.get("test", {}), plots=plots, best_epoch=trained.fit.best_epoch,
        epochs_run=len(trained.fit.history), mining=cfg.mining,
        mining_seconds=round(sum(h["mining_s"] for h in trained.fit.history), 3), database_points=synced,
        store_rkc_agreement=agreement, data=data.summary())
    report.write(at)
    return report.to_dict()
