"""Embedding drift with Evidently's embedding drift methods called directly (no t-SNE), and its page."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd

from mmd.config.gate import DriftConfig
from mmd.evaluate.drift.check import DriftCheck, FAILED, PASSED, _could_not_run, _float, _fmt, _quiet

# ---------------------------------------------------------------------------------------
# Embeddings


_EMBEDDING_DESCRIPTIONS = {
    "model": "model (domain classifier ROC AUC)",
    "mmd": "mmd (MMD^2, RBF kernel)",
    "ratio": "ratio (share of drifted components)",
    "distance": "distance (euclidean between means)",
}


def _embedding_method(cfg: DriftConfig):
    from evidently.legacy.metrics.data_drift import embedding_drift_methods as edm

    factory = {"model": edm.model, "mmd": edm.mmd, "ratio": edm.ratio, "distance": edm.distance}
    # bootstrap left off: the decision is the fixed threshold, as configured
    return factory[cfg.embedding_method](threshold=cfg.embedding_threshold)


def _sample(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) <= n:
        return x
    return x[np.sort(rng.choice(len(x), size=n, replace=False))]


def _pca_png(ref: np.ndarray, cur: np.ndarray, title: str, max_points: int = 2000,
             labels: tuple[str, str] = ("reference", "current")) -> str:
    """Both sets on the first two principal components of the two together (so a shift
    between them shows), as a base64 PNG."""
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    ref, cur = _sample(ref, max_points, rng), _sample(cur, max_points, rng)
    both = np.vstack([ref, cur])
    mean = both.mean(axis=0)
    _, _, vt = np.linalg.svd(both - mean, full_matrices=False)
    comps = vt[:2].T
    if comps.shape[1] < 2:  # 1-d vectors: plot against zero
        comps = np.hstack([comps, np.zeros((comps.shape[0], 2 - comps.shape[1]))])
    r2, c2 = (ref - mean) @ comps, (cur - mean) @ comps
    fig = Figure(figsize=(6, 5), dpi=90)
    ax = fig.add_subplot()
    ax.scatter(r2[:, 0], r2[:, 1], s=6, alpha=0.4, label=labels[0], color="tab:blue")
    ax.scatter(c2[:, 0], c2[:, 1], s=6, alpha=0.4, label=labels[1], color="tab:red")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _embedding_html(check: DriftCheck, png_b64: str, path: Path) -> str:
    from mmd.pages import write_page

    rows = [("status", check.status), ("method", check.method), ("score", _fmt(check.score)),
            ("threshold", _fmt(check.threshold))]
    rows += [(k, v) for k, v in check.details.items() if not isinstance(v, (dict, list))]
    sides = (check.details.get("reference_is"), check.details.get("current_is"))
    return str(write_page(path, "drift.html", check=check, rows=rows, png=png_b64, sides=sides if all(sides) else None))


def embedding_drift(reference: np.ndarray, current: np.ndarray, cfg: DriftConfig, name: str = "embedding_drift",
                    html: Path | None = None, sides: tuple[str, str] | None = None) -> DriftCheck:
    """Drift between two sets of (N, d) vectors with Evidently's embedding drift method
    `cfg.embedding_method` at `cfg.embedding_threshold`, on a seeded sample of at most
    `cfg.max_rows` per side (the method only; see the module docstring on t-SNE)."""
    method = _EMBEDDING_DESCRIPTIONS[cfg.embedding_method]
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    if ref.ndim != 2 or cur.ndim != 2:
        return _could_not_run(name, method, cfg.embedding_threshold,
                              f"embeddings must be 2-d (N, d): got shapes {ref.shape} and {cur.shape}")
    sizes = {"reference_rows": int(ref.shape[0]), "current_rows": int(cur.shape[0]),
             "reference_dim": int(ref.shape[1]), "current_dim": int(cur.shape[1])}
    if ref.shape[0] < cfg.min_rows or cur.shape[0] < cfg.min_rows:
        return _could_not_run(name, method, cfg.embedding_threshold,
                              f"too few rows: reference {ref.shape[0]}, current {cur.shape[0]} "
                              f"(need {cfg.min_rows} each)", **sizes)
    if ref.shape[1] != cur.shape[1]:
        return _could_not_run(name, method, cfg.embedding_threshold,
                              f"dimensions differ: reference {ref.shape[1]}, current {cur.shape[1]}", **sizes)
    if not (np.isfinite(ref).all() and np.isfinite(cur).all()):
        return _could_not_run(name, method, cfg.embedding_threshold, "embeddings contain NaN or inf", **sizes)

    rng = np.random.default_rng(cfg.seed)
    ref_s, cur_s = _sample(ref, cfg.max_rows, rng), _sample(cur, cfg.max_rows, rng)
    cols = [f"e{i}" for i in range(ref.shape[1])]
    try:
        with _quiet():
            drift_method = _embedding_method(cfg)
            # Evidently's signature is (current, reference); `model` adds a column to its inputs,
            # so each call gets fresh frames.
            score, drifted, evidently_name = drift_method(pd.DataFrame(cur_s, columns=cols),
                                                          pd.DataFrame(ref_s, columns=cols))
    except Exception as exc:
        return _could_not_run(name, method, cfg.embedding_threshold,
                              f"Evidently raised {type(exc).__name__}: {exc}", **sizes)
    score = _float(score)
    drifted = bool(drifted)
    check = DriftCheck(
        name=name, status=FAILED if drifted else PASSED, method=method, score=score,
        threshold=cfg.embedding_threshold,
        reasons=[f"embeddings {'drifted' if drifted else 'did not drift'} ({cfg.embedding_method} "
                 f"score={_fmt(score)} {'>' if drifted else '<='} {cfg.embedding_threshold:g})"],
        details={**sizes, "reference_sampled": int(len(ref_s)), "current_sampled": int(len(cur_s)),
                 "evidently_method": str(evidently_name), "seed": cfg.seed,
                 "mean_distance": float(np.linalg.norm(ref_s.mean(axis=0) - cur_s.mean(axis=0)))})
    if sides:
        check.details.update(reference_is=sides[0], current_is=sides[1])
    if html is not None:
        short = tuple(s if len(s) <= 40 else s[:39] + "…" for s in sides) if sides else ("reference", "current")
        png = _pca_png(ref_s, cur_s, f"{name}: {check.status}", labels=short)
        check.html = _embedding_html(check, png, html)
    return check
