"""Data drift (the item columns) and prediction drift (the scores), with Evidently's stattests."""

from __future__ import annotations

import re
from html import escape as html_escape
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from mmd.config.gate import DriftConfig
from mmd.evaluate.drift.check import FAILED, PASSED, DriftCheck, _comparison, _could_not_run, _float, _quiet
from mmd.evaluate.drift.frame import _category

# ---------------------------------------------------------------------------------------
# Evidently reports


def sides_banner(sides: tuple[str, str] | None) -> str:
    """One line naming what each side of a drift page is (Evidently's pages say only "reference" and "current")."""
    if not sides:
        return ""
    ref, cur = (html_escape(s) for s in sides)
    return ('<div style="font:14px sans-serif;padding:8px 12px;background:#f3f4f6;border-bottom:1px solid #ccc">'
            f'<b>Reference</b>: {ref} &nbsp;&middot;&nbsp; <b>Current</b>: {cur}</div>')


def save_html(snapshot_or_report: Any, path: Path, sides: tuple[str, str] | None = None) -> str:
    """Write an Evidently snapshot (the result of `Report.run`) as a standalone HTML page, with a line at
    the top naming its two sides when `sides` (reference, current) is given.

    Evidently 0.7's `Snapshot.save_html` only writes when given a *str*; a `Path`
    is silently ignored, hence `get_html_str`.
    """
    from mmd.util import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page = snapshot_or_report.get_html_str(as_iframe=False)
    if sides:
        m = re.search(r"<body[^>]*>", page, flags=re.IGNORECASE)
        at = m.end() if m else 0
        page = page[:at] + sides_banner(sides) + page[at:]
    atomic_write_text(path, page)
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
               html: Path | None = None, sides: tuple[str, str] | None = None) -> DriftCheck:
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
        check.html = save_html(snapshot, html, sides)
    if sides:
        check.details.update(reference_is=sides[0], current_is=sides[1])
    return check


def score_drift(reference: np.ndarray, current: np.ndarray, cfg: DriftConfig, name: str = "prediction_drift",
                html: Path | None = None, sides: tuple[str, str] | None = None) -> DriftCheck:
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
        check.html = save_html(snapshot, html, sides)
    if sides:
        check.details.update(reference_is=sides[0], current_is=sides[1])
    return check
