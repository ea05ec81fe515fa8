"""Binary detector metrics as the papers report them, plus calibration.

`classification_metrics(y, p)` gives accuracy, precision/recall/F1 per class (the CMC
paper's table reports both the fake and the real class), macro-F1, AUROC, the expected
calibration error and the Brier score, for scores p = P(label 1). `fit_temperature`
finds the temperature that makes softmax(logits / T) calibrated on held-out data
(Guo et al. 2017). `plot_evaluation` draws the ROC curve and the reliability diagram.
`bootstrap` adds percentile confidence intervals (items resampled with replacement), and
`paired_bootstrap` the interval of a difference between two models scored on the same items.
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


CI_METRICS = ("accuracy", "macro_f1", "auroc")


def _resampled(y: np.ndarray, p: np.ndarray, idx: np.ndarray, label_names: Sequence[str]) -> dict[str, float]:
    m = classification_metrics(y[idx], p[idx], label_names)
    out = {k: m[k] for k in CI_METRICS}
    out.update({f"f1_{name}": v["f1"] for name, v in m["per_class"].items()})
    return out


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _interval(values: list[float | None], confidence: float) -> list[float] | None:
    got = np.array([v for v in values if v is not None], dtype=np.float64)
    if len(got) < max(10, len(values) // 2):  # AUROC is undefined on one-class resamples
        return None
    lo, hi = np.percentile(got, [50 * (1 - confidence), 100 - 50 * (1 - confidence)])
    return [float(lo), float(hi)]


def bootstrap(y: Sequence[int], p: Sequence[float], label_names: Sequence[str] = ("real", "fake"),
              resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, list[float] | None]:
    """Percentile intervals of accuracy, macro-F1, AUROC and each class's F1 over `resamples`
    bootstrap draws of the items; {} when there is nothing to resample."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    if resamples <= 0 or len(y) < 2:
        return {}
    runs = [_resampled(y, p, idx, label_names) for idx in _draws(len(y), resamples, seed)]
    return {k: _interval([r[k] for r in runs], confidence) for k in runs[0]}


def paired_bootstrap(y: Sequence[int], p_new: Sequence[float], p_old: Sequence[float], metric: str = "macro_f1",
                     label_names: Sequence[str] = ("real", "fake"), resamples: int = 1000, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """The difference new − old of `metric` on the same items: point estimate, interval over paired
    draws (both models see the same resample), and the share of draws where new is not better."""
    y = np.asarray(y).astype(int)
    p_new, p_old = np.asarray(p_new, np.float64), np.asarray(p_old, np.float64)
    point = _resampled(y, p_new, np.arange(len(y)), label_names)[metric]
    base = _resampled(y, p_old, np.arange(len(y)), label_names)[metric]
    delta = None if point is None or base is None else float(point - base)
    if resamples <= 0 or len(y) < 2 or delta is None:
        return {"metric": metric, "delta": delta, "ci": None, "p_not_better": None}
    diffs = []
    for idx in _draws(len(y), resamples, seed):
        a, b = _resampled(y, p_new, idx, label_names)[metric], _resampled(y, p_old, idx, label_names)[metric]
        diffs.append(None if a is None or b is None else a - b)
    got = [d for d in diffs if d is not None]
    return {"metric": metric, "delta": delta, "ci": _interval(diffs, confidence),
            "p_not_better": float(np.mean(np.array(got) <= 0)) if got else None}


def confusion(y: Sequence[int], p: Sequence[float], threshold: float = 0.5) -> list[list[int]]:
    """[[tn, fp], [fn, tp]]: rows are the actual label, columns the predicted one."""
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p, dtype=np.float64) >= threshold).astype(int)
    return [[int(np.sum((y == a) & (pred == b))) for b in (0, 1)] for a in (0, 1)]


def roc_points(y: Sequence[int], p: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, threshold) at every distinct score; empty with one class."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    if not 0 < y.sum() < len(y):
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = np.argsort(-p, kind="stable")
    ys, ps = y[order], p[order]
    last = np.r_[np.nonzero(np.diff(ps))[0], len(ps) - 1]  # the last item of each run of equal scores
    tps, fps = np.cumsum(ys)[last], np.cumsum(1 - ys)[last]
    return (np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]], np.r_[np.inf, ps[last]])


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The T > 0 minimising the cross-entropy of softmax(logits / T) on (logits, y): one parameter, so it
    moves confidence without changing any prediction. 1.0 when there is nothing to fit on.

    The targets are Platt's: a class of n examples gets (n + 1) / (n + 2) on its own label, not 1. With
    hard targets a validation split the model separates (a small one often is) drives T to its lower
    bound and every score to 0 or 1; with these the fit stays finite and the scores stay probabilities."""
    from scipy.optimize import minimize_scalar
    from scipy.special import log_softmax

    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y).astype(int)
    if len(y) == 0 or len(np.unique(y)) < 2:
        return 1.0
    k = logits.shape[1]
    counts = np.bincount(y, minlength=k)
    own = (counts[y] + 1) / (counts[y] + 2)
    targets = np.repeat(((1 - own) / (k - 1))[:, None], k, axis=1)
    targets[np.arange(len(y)), y] = own

    def loss(log_t: float) -> float:
        return float(-(targets * log_softmax(logits / np.exp(log_t), axis=1)).sum(axis=1).mean())

    res = minimize_scalar(loss, bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded")
    return float(np.exp(res.x))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, title: str = "") -> Path:
    """Title, layout, write the PNG (its folder made), free the figure."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_evaluation(y: np.ndarray, p: np.ndarray, path: Path, title: str = "") -> Path:
    """ROC curve and reliability diagram side by side, as one PNG."""
    plt = _pyplot()

    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
    if 0 < y.sum() < len(y):
        fpr, tpr, _ = roc_points(y, p)
        ax1.plot(fpr, tpr, label=f"AUROC {auroc(y, p):.3f}")
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
    return _save(fig, path, title)


def plot_history(history: list[dict], path: Path, title: str = "") -> Path:
    """Training and validation loss per epoch, one line per stage."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for stage in dict.fromkeys(h["stage"] for h in history):
        rows = [h for h in history if h["stage"] == stage]
        ax.plot([h["epoch"] for h in rows], [h["train_loss"] for h in rows], label=f"{stage} train")
        ax.plot([h["epoch"] for h in rows], [h["val_loss"] for h in rows], "--", label=f"{stage} validation")
    ax.set(xlabel="epoch", ylabel="loss", title=title or "training")
    ax.legend()
    return _save(fig, path)


def plot_scores(series: dict[str, tuple[np.ndarray, np.ndarray]], path: Path, title: str = "", bins: int = 20) -> Path:
    """Score histograms per label (one panel per model: {name: (labels, scores)}), and each model's
    confusion matrix at 0.5 under it, as one PNG."""
    plt = _pyplot()

    names = list(series)
    fig, axes = plt.subplots(2, len(names), figsize=(4.5 * len(names), 7), squeeze=False)
    edges = np.linspace(0, 1, bins + 1)
    for col, name in enumerate(names):
        y, p = (np.asarray(a) for a in series[name])
        ax = axes[0][col]
        for label, colour in ((0, "tab:blue"), (1, "tab:red")):
            ax.hist(p[y == label], bins=edges, alpha=0.6, color=colour, label=f"label {label} ({int(np.sum(y == label))})")
        if np.any(y < 0):
            ax.hist(p[y < 0], bins=edges, histtype="step", color="grey", label=f"unlabelled ({int(np.sum(y < 0))})")
        ax.set(xlabel="score = P(label 1)", ylabel="items", title=name)
        ax.legend(fontsize=8)
        known = y >= 0
        cm = np.array(confusion(y[known], p[known]))
        ax = axes[1][col]
        ax.imshow(cm, cmap="Blues")
        for (a, b), v in np.ndenumerate(cm):
            ax.text(b, a, str(v), ha="center", va="center")
        ax.set(xticks=[0, 1], yticks=[0, 1], xlabel="predicted", ylabel="actual", title="confusion at 0.5")
    return _save(fig, path, title)
