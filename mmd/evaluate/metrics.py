"""Binary detector metrics as the papers report them, plus calibration.

`classification_metrics(y, p)` gives accuracy, precision/recall/F1 per class (the CMC
paper's table reports both the fake and the real class), macro-F1, AUROC, the expected
calibration error and the Brier score, for scores p = P(label 1). `fit_temperature`
finds the temperature that makes softmax(logits / T) calibrated on held-out data
(Guo et al. 2017). `plot_evaluation` draws the ROC curve and the reliability diagram.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def _prf(y: np.ndarray, pred: np.ndarray, cls: int) -> dict:
    tp = int(np.sum((pred == cls) & (y == cls)))
    fp = int(np.sum((pred == cls) & (y != cls)))
    fn = int(np.sum((pred != cls) & (y == cls)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": int(np.sum(y == cls))}


def auroc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None when only one class is present."""
    y = np.asarray(y).astype(int)
    pos, neg = int(y.sum()), int(len(y) - y.sum())
    if pos == 0 or neg == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """ECE of the predicted class's confidence, equal-width bins (as in Guo et al.)."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    if len(y) == 0:
        return 0.0
    pred = (p >= 0.5).astype(int)
    conf = np.where(pred == 1, p, 1 - p)
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(float((pred[m] == y[m]).mean()) - float(conf[m].mean()))
    return float(ece)


def classification_metrics(y: Sequence[int], p: Sequence[float], label_names: Sequence[str] = ("real", "fake"),
                           threshold: float = 0.5) -> dict:
    """Metrics of scores p = P(label 1) against labels y (0/1), predicting 1 at p >= threshold."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in shape")
    pred = (p >= threshold).astype(int)
    per_class = {str(label_names[c]): _prf(y, pred, c) for c in (0, 1)}
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "per_class": per_class,
        "macro_f1": float(np.mean([v["f1"] for v in per_class.values()])),
        "auroc": auroc(y, p),
        "ece": expected_calibration_error(y, p),
        "brier": float(np.mean((p - y) ** 2)) if len(y) else 0.0,
        "threshold": threshold,
    }


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T > 0 minimising the NLL of softmax(logits / T) on (logits, y): one parameter, so it
    moves confidence without changing any prediction. 1.0 when there is nothing to fit on."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y).astype(int)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return 1.0

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[np.arange(len(y)), y].mean())

    res = minimize_scalar(nll, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return float(np.exp(res.x))


def plot_evaluation(y: np.ndarray, p: np.ndarray, path: Path, title: str = "") -> Path:
    """ROC curve and reliability diagram side by side, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    if 0 < y.sum() < len(y):
        order = np.argsort(-p, kind="stable")
        tps = np.cumsum(y[order]) / y.sum()
        fps = np.cumsum(1 - y[order]) / (len(y) - y.sum())
        ax1.plot(np.r_[0, fps], np.r_[0, tps], label=f"AUROC {auroc(y, p):.3f}")
        ax1.legend(loc="lower right")
    ax1.plot([0, 1], [0, 1], ":", color="grey")
    ax1.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
    xs = [p[which == b].mean() for b in range(10) if (which == b).any()]
    ys = [y[which == b].mean() for b in range(10) if (which == b).any()]
    ax2.plot([0, 1], [0, 1], ":", color="grey")
    ax2.plot(xs, ys, "o-", label=f"ECE {expected_calibration_error(y, p):.3f}")
    ax2.set(xlabel="predicted P(label 1)", ylabel="observed share of label 1", title="reliability")
    ax2.legend(loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_history(history: list[dict], path: Path, title: str = "") -> Path:
    """Training and validation loss per epoch, one line per stage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for stage in dict.fromkeys(h["stage"] for h in history):
        rows = [h for h in history if h["stage"] == stage]
        ax.plot([h["epoch"] for h in rows], [h["train_loss"] for h in rows], label=f"{stage} train")
        ax.plot([h["epoch"] for h in rows], [h["val_loss"] for h in rows], "--", label=f"{stage} validation")
    ax.set(xlabel="epoch", ylabel="loss", title=title or "training")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
