"""The train_lmm stage (a GPU job: gpu/dvc.yaml): train per `lmm`, save, report."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mmd.config import Settings
from mmd.items import now_iso
from mmd.models.lmm.config import LMMConfig
from mmd.models.lmm.fit import train_detector
from mmd.models.lmm.items import load_items
from mmd.models.lmm.model import load_lmm, locate_model
from mmd.models.lmm.predictor import MODEL_NAME, save_detector
from mmd.results import TrainReport

Log = Callable[[str], None]


def train_stage(settings: Settings, log: Log | None = None, cfg: LMMConfig | None = None) -> dict:
    """Train per `lmm` (or `cfg`), save under <data>/models/lmm, write reports/train_lmm.json."""
    cfg = cfg or settings.params.lmm
    tcfg = settings.params.train
    model_dir = settings.layout.model(MODEL_NAME)
    source = locate_model(cfg.model, settings.root)[0]  # no weights: a clear error before any data is read
    splits, data_report = load_items(settings)
    model, processor = load_lmm(cfg, root=settings.root)
    if log:
        log(f"lmm: {cfg.recipe} on {cfg.model}, " + ", ".join(f"{r} {len(s)}" for r, s in splits.items() if s))
    trained = train_detector(model, processor, splits, cfg, settings.params.rgcl, tcfg.label_names, log)
    trained.data = {**trained.data, **data_report}
    save_detector(model_dir, trained, tcfg.label_names, source if Path(source).is_dir() else None)
    scorers = trained.metrics.get("scorers", {})
    by_role = {role: {name: m[role] for name, m in scorers.items() if role in m} for role in ("val", "test")}
    report = TrainReport(
        model=MODEL_NAME, variant=cfg.recipe, serves=trained.metrics.get("scorer", ""), trained_at=now_iso(),
        seconds=round(trained.seconds, 2), model_dir=str(model_dir), val=by_role["val"], test=by_role["test"],
        recipe=cfg.recipe, base_model=cfg.model, best_epochs=trained.best_epochs, history=trained.history,
        data=trained.data)
    report.write(settings.layout)
    return report.to_dict()
