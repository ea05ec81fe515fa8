"""Evaluate: score the freshly trained detectors (the challengers) on the fixed holdout.

Every validated item is scored, not only the holdout: the gate compares score
distributions on what is arriving (prediction drift) and on the fresh batch, and the
champion is scored on exactly the same rows. The metrics are those of the holdout (the
items `train.holdout_fraction` or a test split puts aside, which no detector trains on),
with bootstrap confidence intervals.

Outputs, per family in `evaluate.families` that has a trained model:
- `<data>/evaluation/<family>.parquet`: id, score, label, role (holdout / train / val /
  unlabelled / other), ingested_at, kind, source;
- `<reports>/evaluate.json` (DVC metrics: `dvc metrics diff` compares cycles);
- `<reports>/evaluate/roc/<family>.csv`, `confusion/<family>.csv` (DVC plots: `dvc plots
  diff`) and `figures/<family>.png` (ROC, reliability, score histograms, confusion).

A stage of its own, a function of versioned inputs only: the champion, which lives in the
registry, is scored by the gate. With `scale.engine: dask` the items are scored in shards on Dask
workers (`mmd.scale.score`), the scores the same.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmd.config import Settings
from mmd.formats.scores import HOLDOUT, score_table
from mmd.items import now_iso, write_table
from mmd.results import EvaluateReport
from mmd.scale.engine import open_engine

def item_roles(settings: Settings) -> tuple[list[dict], dict[str, str]]:
    """Every validated item, and its role: holdout, train or val (as the detectors' data assembly
    assigns them, leak rules included), unlabelled, or other (filtered out or dropped)."""
    from mmd.models.data import read_items, training_rows

    rows, _ = read_items(settings)  # with the moderators' agreed labels, as the detectors trained on them
    roles, _ = training_rows(settings, synthetic=False)
    role_of = {r["id"]: (HOLDOUT if role == "test" else role) for role, rs in roles.items() for r in rs}
    return rows, {r["id"]: role_of.get(r["id"], "unlabelled" if r["label"] is None else "other") for r in rows}


def scorer(settings: Settings, family: str, folder: Path, challenger: bool = False, engine=None
           ) -> tuple[dict, Callable[[list[dict]], np.ndarray]]:
    """(the model's config, score(item rows) -> calibrated P(label 1)) for a saved model folder; with a
    Dask `engine` (`mmd.scale`), the rows are scored in shards on its workers."""
    from mmd.models.serving import load_predictor
    from mmd.scale.score import score_rows

    predictor = load_predictor(settings, family, folder, challenger=challenger)
    return predictor.meta, lambda rows: score_rows(settings, family, folder, predictor, rows, engine, challenger)


def holdout_metrics(y: np.ndarray, p: np.ndarray, settings: Settings) -> dict:
    """Metrics with bootstrap intervals, on labelled rows."""
    from mmd.evaluate.metrics import bootstrap, classification_metrics

    cfg, names = settings.params.evaluate, settings.params.train.label_names
    m = classification_metrics(y, p, names)
    m["ci"] = bootstrap(y, p, names, cfg.bootstrap, cfg.confidence, cfg.seed)
    return m


def write_plots(settings: Settings, family: str, y: np.ndarray, p: np.ndarray, all_scores: np.ndarray,
                all_labels: np.ndarray) -> dict[str, str]:
    """DVC plot data (ROC points, the confusion rows) and one figure for people."""
    from mmd.evaluate.metrics import plot_evaluation, plot_scores, roc_points

    at = settings.layout
    roc = at.evaluate_roc / f"{family}.csv"
    roc.parent.mkdir(parents=True, exist_ok=True)
    fpr, tpr, thr = roc_points(y, p)
    with open(roc, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["fpr", "tpr", "threshold"])
        w.writerows(zip(np.round(fpr, 6), np.round(tpr, 6), np.round(np.minimum(thr, 1.0), 6)))
    conf = at.evaluate_confusion / f"{family}.csv"
    conf.parent.mkdir(parents=True, exist_ok=True)
    names = settings.params.train.label_names
    with open(conf, "w", newline="") as fh:  # one row per item: DVC's confusion template counts them
        w = csv.writer(fh)
        w.writerow(["actual", "predicted"])
        w.writerows((names[int(a)], names[int(b >= 0.5)]) for a, b in zip(y, p))
    figures = at.evaluate_figures
    return {
        "roc": str(roc), "confusion": str(conf),
        "evaluation": str(plot_evaluation(y, p, figures / f"{family}-holdout.png", f"{family}, holdout")),
        "scores": str(plot_scores({f"{family}: every item": (all_labels, all_scores)}, figures / f"{family}-scores.png",
                                  bins=settings.params.evaluate.histogram_bins)),
    }


def evaluate_family(settings: Settings, family: str, rows: list[dict], role: dict[str, str], engine=None) -> dict:
    started = time.perf_counter()
    meta, score = scorer(settings, family, settings.layout.model(family), challenger=True, engine=engine)
    scores = score(rows)
    write_table(score_table(rows, role, scores), settings.layout.evaluation_scores(family))
    held = np.array([role[r["id"]] == HOLDOUT for r in rows], bool)
    y = np.array([-1 if r["label"] is None else r["label"] for r in rows], np.int64)
    result = {"model_trained_at": meta.get("trained_at"), "variant": meta.get("variant") or meta.get("recipe"),
              "encoder": meta.get("encoder"), "items_scored": len(rows)}
    if held.any():
        result["holdout"] = holdout_metrics(y[held], scores[held], settings)
        result["plots"] = write_plots(settings, family, y[held], scores[held], scores, y)
    else:
        result["holdout"] = None
        result["note"] = "no labelled holdout items: set train.holdout_fraction or add a test split"
    result["seconds"] = round(time.perf_counter() - started, 2)
    return result


def run_evaluate(settings: Settings, families: Sequence[str] | None = None,
                 log: Callable[[str], None] | None = None) -> dict:
    """The DVC stage: every trained challenger scored; metrics on the holdout."""
    cfg = settings.params.evaluate
    rows, role = item_roles(settings)
    counts = {k: sum(1 for v in role.values() if v == k) for k in sorted(set(role.values()))}
    held = [r for r in rows if role[r["id"]] == HOLDOUT]
    report: dict = {"evaluated_at": now_iso(), "items": len(rows), "roles": counts,
                    "holdout": {"items": len(held), "label_1": sum(r["label"] == 1 for r in held),
                                "label_0": sum(r["label"] == 0 for r in held)},
                    "families": {}}
    with open_engine(settings.params.scale) as engine:
        for family in families or cfg.families:
            if not (settings.layout.model(family) / "config.json").exists():
                report["families"][family] = {"skipped": f"no trained model in {settings.layout.model(family)}"}
                continue
            report["families"][family] = evaluate_family(settings, family, rows, role, engine)
            if log:
                h = report["families"][family]["holdout"]
                log(f"{family}: " + (f"holdout macro-F1 {h['macro_f1']:.3f}, AUROC {h['auroc']}" if h else "no holdout"))
    EvaluateReport.model_validate(report).write(settings.layout)
    return report
