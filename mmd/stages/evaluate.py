"""evaluate: the challengers scored on the fixed holdout, with confidence intervals (`mmd.evaluate`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import EvaluateReport


def run(settings: Settings, log=None) -> EvaluateReport:
    from mmd.encoders.base import set_threads
    from mmd.evaluate.evaluate import run_evaluate

    set_threads(settings.params.train.threads)
    return EvaluateReport.model_validate(run_evaluate(settings, log=log))
