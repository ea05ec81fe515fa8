"""A drift check's result (`DriftCheck`) and what every check shares."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np


PASSED, FAILED, COULD_NOT_RUN = "passed", "failed", "could_not_run"

# Evidently stattests whose score is a p-value (drift when small); all others are
# distances / divergences (drift when large). Only used to word the reasons: the
# verdict itself is Evidently's.
P_VALUE_METHODS = frozenset(
    {"ks", "chisquare", "z", "anderson", "cramer_von_mises", "es", "fisher_exact", "g_test", "mannw",
     "t_test", "empirical_mmd", "TVD"}
)




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
