"""validate: the Great Expectations suites per kind; failing rows to the quarantine (`mmd.validate`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import ValidateReport


def run(settings: Settings, log=None) -> ValidateReport:
    from mmd.validate import run_validate

    return ValidateReport.model_validate(run_validate(settings).to_dict())
