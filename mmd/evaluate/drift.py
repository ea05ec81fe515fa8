"""Drift checks for the promotion gate: tabular item features, embeddings, model scores.

Every check returns a `DriftCheck` (passed / failed / could_not_run, the figure the
decision was made on, its threshold, human reasons and per-column details); none of
them raises to say "drifted". The HTML is for people, `DriftCheck.to_dict()` (plain
JSON) is for the gate.

Choices
-------
* **Explicit statistical methods.** Evidently picks a method per column when none is
  given, and its choice depends on the size of the reference: up to 1,000 rows it
  runs tests (K-S, chi-square, Z: p-values, drift when p < 0.05), above 1,000 rows it
  switches to distances (Wasserstein, Jensen-Shannon: drift when the distance > 0.1).
  The same data would then pass or fail depending on how many rows were collected.
  We always pass `num_method` / `cat_method` and their thresholds (`DriftConfig`):
  numeric columns K-S, categorical columns chi-square by default, both at p < 0.05.
  Any other Evidently stattest can be named (`"wasserstein"`, `"psi"`,
  `"jensenshannon"`, ...; those are distances: drift when score >= threshold, so set
  the threshold with the method). The per-column verdict is Evidently's own.
* **Share rule.** `data_drift` fails when the share of drifted columns is *strictly
  greater* than `drift_share`. Evidently's own "dataset drift" (shown in the HTML)
  uses share >= drift_share, so at exactly the boundary the HTML says "drift" while the
  gate passes; the gate's rule is the one in `DriftCheck`.
* **Embeddings without t-SNE.** Evidently's `EmbeddingsDrift` metric runs the drift
  method and then, for its plot, a t-SNE of up to 2,500 points per side; the t-SNE
  dominates the run time (measured on 2 cores, 5,000 x 384-d per side: ~65 s for the
  metric, ~1 s for the "model" method alone; 1,000 rows: 8 s vs 0.15 s). We call the same
  drift method object (`evidently.legacy.metrics.data_drift.embedding_drift_methods`:
  `model`, `mmd`, `ratio`, `distance`) directly on a seeded sample of at most
  `max_rows` per side, and draw our own small page with a 2-D PCA projection (numpy
  SVD). `embedding_threshold` is the chosen method's own threshold. The default is
  `"mmd"` at 0.015 (the MMD^2 value, RBF kernel with the median heuristic): on
  same-distribution samples of 50 to 500 rows it never alarmed, where `"model"` (a
  domain classifier's ROC AUC on held-out rows, 0.55) alarmed in 7 of 48 trials, its
  AUROC being noisy on the batch sizes a cycle sees. Evidently's defaults for the others
  are model 0.55, ratio 0.2 (share of components
  drifted by normed Wasserstein > 0.1), distance 0.2 (euclidean distance between the
  means); set the threshold together with the method. The ratio and distance defaults
  are not scale-free: two samples of the same 32-d unit Gaussian (400 rows) already
  score ratio 0.25 and distance 0.39. For `"mmd"` the kernel matrix is
  (2 * max_rows)^2 floats: 128 MB at the default 2,000.
* **Lazy import.** Importing Evidently takes seconds; it happens inside the checks, so
  importing this module (e.g. for `DriftConfig`) stays cheap.
* **Determinism.** Samples come from `numpy.random.default_rng(cfg.seed)`; Evidently's
  stattests are deterministic and its embedding methods seed themselves.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import html as html_lib
import io
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

PASSED, FAILED, COULD_NOT_RUN = "passed", "failed", "could_not_run"

# Evidently stattests whose score is a p-value (drift when small); all others are
# distances / divergences (drift when large). Only used to word the reasons: the
# verdict itself is Evidently's.
P_VALUE_METHODS = frozenset(
    {"ks", "chisquare", "z", "anderson", "cramer_von_mises", "es", "fisher_exact", "g_test", "mannw",
     "t_test", "empirical_mmd", "TVD"}
)

DEFAULT_COLUMNS = ("text_length", "word_count", "label", "kind", "source", "language", "has_image",
                   "image_width", "image_height", "image_brightness")


class DriftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_method: str = "ks"
    num_threshold: float = 0.05
    cat_method: str = "chisquare"
    cat_threshold: float = 0.05
    drift_share: float = Field(0.5, ge=0.0, le=1.0)
    # mmd: the squared maximum mean discrepancy (RBF kernel, median heuristic), drift above
    # 0.015 (Evidently's default). Measured on two samples of one distribution (unit vectors,
    # 16-d and 512-d, 50 to 500 rows a side, 8 seeds each): no false alarm, where the domain
    # classifier ("model", ROC AUC > 0.55) raised 7 in 48, most at 50 to 150 rows.
    # Other methods' own thresholds: model 0.55, ratio 0.2, distance 0.2; set it with the method.
    embedding_method: Literal["model", "mmd", "ratio", "distance"] = "mmd"
    embedding_threshold: float = 0.015
    max_rows: int = Field(2000, ge=2)   # a side; mmd's kernel matrix is (2 * max_rows)^2 floats
    min_rows: int = Field(30, ge=2)
    seed: int = 0
    columns: tuple[str, ...] = DEFAULT_COLUMNS


@dataclass
class DriftCheck:
    name: str
    status: str  # "passed" | "failed" | "could_not_run"
    method: str
    score: float | None
    threshold: float | None
    reasons: list[str]
    details: dict = field(default_factory=dict)
    html: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def to_dict(self) -> dict:
        """Plain JSON types only: numpy scalars become Python numbers, NaN/inf become None."""
        return _json_safe(dataclasses.asdict(self))


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_json_safe(v) for v in obj.tolist()]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def _float(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


@contextlib.contextmanager
def _quiet():
    """Silence the warnings Evidently's stattests and sklearn print on ordinary data
    (chi-square's divide-by-zero for a category new in current, SGD convergence, ...)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from sklearn.exceptions import ConvergenceWarning

            warnings.simplefilter("ignore", ConvergenceWarning)
        except ImportError:  # pragma: no cover
            pass
        yield


def _could_not_run(name: str, method: str, threshold: float | None, why: str, **details: Any) -> DriftCheck:
    return DriftCheck(name=name, status=COULD_NOT_RUN, method=method, score=None, threshold=threshold,
                      reasons=[why], details=details)


def _fmt(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "nan"
    return f"{x:.3g}"


def _comparison(method: str, score: float | None, threshold: float, drifted: bool) -> str:
    """'ks p=0.001 < 0.05' / 'wasserstein score=0.3 >= 0.1' (the side the verdict fell on)."""
    if method in P_VALUE_METHODS:
        return f"{method} p={_fmt(score)} {'<' if drifted else '>='} {_fmt(threshold)}"
    return f"{method} score={_fmt(score)} {'>=' if drifted else '<'} {_fmt(threshold)}"


# ---------------------------------------------------------------------------------------
# Item rows -> a frame of the checked columns


def _image_brightness(path: Path) -> float:
    """Mean grey level (0..255) of the picture thumbnailed to 64 px; NaN when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("L", (64, 64))  # JPEG: decode at reduced size
            im.thumbnail((64, 64))
            return float(np.asarray(im.convert("L"), dtype=np.float64).mean())
    except Exception:  # unreadable, truncated, not an image, missing: all mean "no figure"
        return float("nan")


def _as_dict(row: Any) -> Mapping:
    if isinstance(row, Mapping):
        return row
    if dataclasses.is_dataclass(row):
        return dataclasses.asdict(row)
    if hasattr(row, "model_dump"):
        return row.model_dump()
    raise TypeError(f"item_frame takes dicts (or dataclasses), got {type(row).__name__}")


def _category(value: Any) -> str:
    return "unknown" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _label(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return "unknown"


def _size(value: Any) -> float:
    f = _float(value)
    return float("nan") if f is None else f


def item_frame(rows: Iterable[Any], data_dir: Path | None = None, image_stats: bool = True) -> pd.DataFrame:
    """Item rows -> one row each of the `DEFAULT_COLUMNS` features.

    text_length (chars) and word_count of the text; label as the category "0"/"1"/
    "unknown"; kind, source, language ("unknown" when missing); has_image "yes" when the
    item names an image path, else "no"; image_width / image_height (float, NaN without
    an image; taken from the row, or from the file when the row has none); and
    image_brightness, the mean grey level of the picture thumbnailed to 64 px (NaN when
    there is no image, it cannot be read, or image_stats=False).
    """
    records = []
    for raw in rows:
        row = _as_dict(raw)
        text = row.get("text") or ""
        image_path = row.get("image_path") or None
        width, height = _size(row.get("image_width")), _size(row.get("image_height"))
        brightness = float("nan")
        if image_path is not None and image_stats:
            path = Path(image_path)
            if not path.is_absolute() and data_dir is not None:
                path = Path(data_dir) / path
            brightness = _image_brightness(path)
            if math.isnan(width) or math.isnan(height):
                with contextlib.suppress(Exception):
                    from PIL import Image

                    with Image.open(path) as im:
                        width, height = float(im.size[0]), float(im.size[1])
        if image_path is None:
            width = height = float("nan")
        records.append({
            "text_length": float(len(text)),
            "word_count": float(len(text.split())),
            "label": _label(row.get("label")),
            "kind": _category(row.get("kind")),
            "source": _category(row.get("source")),
            "language": _category(row.get("language")),
            "has_image": "yes" if image_path is not None else "no",
            "image_width": width,
            "image_height": height,
            "image_brightness": brightness,
        })
    return pd.DataFrame.from_records(records, columns=list(DEFAULT_COLUMNS))


# ---------------------------------------------------------------------------------------
# Evidently reports


def save_html(snapshot_or_report: Any, path: Path) -> str:
    """Write an Evidently snapshot (the result of `Report.run`) as a standalone HTML page.

    Evidently 0.7's `Snapshot.save_html` only writes when given a *str*; a `Path`
    is silently ignored, hence the conversion here.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(snapshot_or_report, "get_html_str"):
        path.write_text(snapshot_or_report.get_html_str(as_iframe=False), encoding="utf-8")
    else:  # a legacy Report or anything else with save_html(str)
        snapshot_or_report.save_html(str(path))
    return str(path)


def _stattest_display(method: str, numeric: bool) -> str | None:
    from evidently.legacy.calculations.stattests.registry import get_registered_stattest
    from evidently.legacy.core import ColumnType

    try:
        kind = ColumnType.Numerical if numeric else ColumnType.Categorical
        return get_registered_stattest(method, kind).display_name
    except Exception:
        return None


def _value_drift_results(snapshot: Any) -> dict[str, dict]:
    """{column: {"method", "score", "threshold", "drifted"}} from the ValueDrift results.

    The verdict is Evidently's own (the metric's test, present with include_tests=True).
    """
    from evidently.legacy.tests.base_test import TestStatus

    out: dict[str, dict] = {}
    for result in snapshot.metric_results.values():
        location = result.metric_value_location
        params = dict(location.metric.params) if location is not None else {}
        if not str(params.get("type", "")).endswith(":ValueDrift"):
            continue
        column = params["column"]
        tests = list(result.tests or [])
        if not tests:
            raise RuntimeError(f"Evidently gave no drift verdict for column {column!r}")
        out[column] = {
            "method": params.get("method"),
            "score": _float(result.value),
            "threshold": _float(params.get("threshold")),
            "drifted": any(t.status == TestStatus.FAIL for t in tests),
        }
    return out


def _split_columns(frame: pd.DataFrame, columns: Iterable[str]) -> tuple[list[str], list[str]]:
    numeric, categorical = [], []
    for col in columns:
        dtype = frame[col].dtype
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            numeric.append(col)
        else:
            categorical.append(col)
    return numeric, categorical


def _prepare(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(frame)))
    for col in numeric:
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype(np.float64).to_numpy()
    for col in categorical:
        out[col] = frame[col].map(_category).astype(str).to_numpy()
    if "label" in out:  # the label share is that of labelled items: an unlabelled item is no third class
        out["label"] = out["label"].where(out["label"] != "unknown", np.nan)
    return out


def data_drift(reference: pd.DataFrame, current: pd.DataFrame, cfg: DriftConfig, name: str = "data_drift",
               html: Path | None = None) -> DriftCheck:
    """Per-column drift with the configured methods (Evidently's DataDriftPreset).

    Columns of `cfg.columns` absent from either frame, or entirely missing (all NaN) on
    either side, are skipped (details["skipped"], with details["skipped_why"]). The check
    fails when the share of drifted columns among the tested ones is > cfg.drift_share;
    could_not_run when a side has fewer than cfg.min_rows rows, no column is left, or
    Evidently raises.
    """
    method = (f"{cfg.num_method}/{cfg.cat_method} per column, share > {cfg.drift_share:g}")
    sizes = {"reference_rows": int(len(reference)), "current_rows": int(len(current))}
    if len(reference) < cfg.min_rows or len(current) < cfg.min_rows:
        return _could_not_run(
            name, method, cfg.drift_share,
            f"too few rows: reference {len(reference)}, current {len(current)} (need {cfg.min_rows} each)",
            **sizes)

    skipped_why: dict[str, str] = {}
    usable: list[str] = []
    for col in cfg.columns:
        if col not in reference.columns or col not in current.columns:
            skipped_why[col] = "not in " + ("either frame" if col not in reference.columns and col not in current.columns
                                            else "reference" if col not in reference.columns else "current")
        elif reference[col].isna().all() or current[col].isna().all():
            side = ("both sides" if reference[col].isna().all() and current[col].isna().all()
                    else "reference" if reference[col].isna().all() else "current")
            skipped_why[col] = f"all values missing on {side}"
        else:
            usable.append(col)
    numeric, categorical = _split_columns(reference, usable)
    common = {**sizes, "skipped": list(skipped_why), "skipped_why": skipped_why,
              "numeric_columns": numeric, "categorical_columns": categorical}
    if not usable:
        return _could_not_run(name, method, cfg.drift_share, "no usable column: " +
                              "; ".join(f"{c} {w}" for c, w in skipped_why.items()), **common)

    ref = _prepare(reference, numeric, categorical)
    cur = _prepare(current, numeric, categorical)
    try:
        with _quiet():
            from evidently import DataDefinition, Dataset, Report
            from evidently.presets import DataDriftPreset

            definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
            report = Report([DataDriftPreset(
                columns=usable, drift_share=cfg.drift_share,
                num_method=cfg.num_method, num_threshold=cfg.num_threshold,
                cat_method=cfg.cat_method, cat_threshold=cfg.cat_threshold,
            )], include_tests=True)
            snapshot = report.run(Dataset.from_pandas(cur, data_definition=definition),
                                  Dataset.from_pandas(ref, data_definition=definition))
            per_column = _value_drift_results(snapshot)
    except Exception as exc:  # the check could not be made; say why instead of raising
        return _could_not_run(name, method, cfg.drift_share,
                              f"Evidently raised {type(exc).__name__}: {exc}", **common)

    columns: dict[str, dict] = {}
    reasons: list[str] = []
    for col in usable:
        res = per_column[col]
        res["type"] = "numeric" if col in numeric else "categorical"
        res["method_name"] = _stattest_display(res["method"], col in numeric)
        columns[col] = res
        if res["drifted"]:
            reasons.append(f"{col} drifted ({_comparison(res['method'], res['score'], res['threshold'], True)})")
    drifted = [c for c in usable if columns[c]["drifted"]]
    share = len(drifted) / len(usable)
    failed = share > cfg.drift_share
    reasons.append(f"{len(drifted)} of {len(usable)} columns drifted (share {share:.2f} "
                   f"{'>' if failed else '<='} {cfg.drift_share:g})")
    check = DriftCheck(name=name, status=FAILED if failed else PASSED, method=method, score=share,
                       threshold=cfg.drift_share, reasons=reasons,
                       details={**common, "columns": columns, "drifted_columns": drifted,
                                "drifted_count": len(drifted), "tested_count": len(usable)})
    if html is not None:
        # ~0.1 s: the page is a fixed ~4 MB JS bundle plus the plots' data.
        check.html = save_html(snapshot, html)
    return check


def score_drift(reference: np.ndarray, current: np.ndarray, cfg: DriftConfig, name: str = "prediction_drift",
                html: Path | None = None) -> DriftCheck:
    """Drift of a model's scores (1-d) with cfg.num_method / cfg.num_threshold (Evidently
    ValueDrift on a "score" column). NaN scores are dropped before counting rows."""
    method = f"{cfg.num_method} on the score column"
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    sizes = {"reference_rows": int(ref.size), "current_rows": int(cur.size)}
    if ref.size < cfg.min_rows or cur.size < cfg.min_rows:
        return _could_not_run(name, method, cfg.num_threshold,
                              f"too few scores: reference {ref.size}, current {cur.size} (need {cfg.min_rows} each)",
                              **sizes)
    try:
        with _quiet():
            from evidently import DataDefinition, Dataset, Report
            from evidently.metrics import ValueDrift

            definition = DataDefinition(numerical_columns=["score"])
            report = Report([ValueDrift(column="score", method=cfg.num_method, threshold=cfg.num_threshold)],
                            include_tests=True)
            snapshot = report.run(Dataset.from_pandas(pd.DataFrame({"score": cur}), data_definition=definition),
                                  Dataset.from_pandas(pd.DataFrame({"score": ref}), data_definition=definition))
            res = _value_drift_results(snapshot)["score"]
    except Exception as exc:
        return _could_not_run(name, method, cfg.num_threshold, f"Evidently raised {type(exc).__name__}: {exc}",
                              **sizes)
    res["method_name"] = _stattest_display(res["method"], True)
    drifted = res["drifted"]
    reason = (f"score {'drifted' if drifted else 'did not drift'} "
              f"({_comparison(res['method'], res['score'], res['threshold'], drifted)})")
    check = DriftCheck(
        name=name, status=FAILED if drifted else PASSED, method=method, score=res["score"],
        threshold=cfg.num_threshold, reasons=[reason],
        details={**sizes, "columns": {"score": res},
                 "reference_mean": float(ref.mean()), "current_mean": float(cur.mean())})
    if html is not None:
        check.html = save_html(snapshot, html)
    return check


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


def _pca_png(ref: np.ndarray, cur: np.ndarray, title: str, max_points: int = 2000) -> str:
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
    ax.scatter(r2[:, 0], r2[:, 1], s=6, alpha=0.4, label="reference", color="tab:blue")
    ax.scatter(c2[:, 0], c2[:, 1], s=6, alpha=0.4, label="current", color="tab:red")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    ax.legend(loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _embedding_html(check: DriftCheck, png_b64: str, path: Path) -> str:
    e = html_lib.escape
    colour = {"passed": "#1a7f37", "failed": "#cf222e"}.get(check.status, "#9a6700")
    rows = [("status", check.status), ("method", check.method), ("score", _fmt(check.score)),
            ("threshold", _fmt(check.threshold))]
    rows += [(k, v) for k, v in check.details.items() if not isinstance(v, (dict, list))]
    table = "\n".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows)
    reasons = "\n".join(f"<li>{e(r)}</li>" for r in check.reasons)
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{e(check.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 10px;text-align:left}}.status{{color:{colour};font-weight:bold}}</style>
</head><body>
<h1>{e(check.name)}: <span class="status">{e(check.status)}</span></h1>
<ul>{reasons}</ul>
<table>{table}</table>
<h2>First two principal components</h2>
<img alt="PCA projection of reference and current" src="data:image/png;base64,{png_b64}">
</body></html>
"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return str(path)


def embedding_drift(reference: np.ndarray, current: np.ndarray, cfg: DriftConfig, name: str = "embedding_drift",
                    html: Path | None = None) -> DriftCheck:
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
    if html is not None:
        png = _pca_png(ref_s, cur_s, f"{name}: {check.status}")
        check.html = _embedding_html(check, png, html)
    return check


__all__ = ["DriftConfig", "DriftCheck", "item_frame", "data_drift", "embedding_drift", "score_drift", "save_html",
           "DEFAULT_COLUMNS", "PASSED", "FAILED", "COULD_NOT_RUN"]
