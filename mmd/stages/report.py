"""report: the moderators' page of the last gate decision (`mmd.report`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import ReportPage


def run(settings: Settings, log=None) -> ReportPage:
    from mmd.report import run_report

    run_report(settings)
    return ReportPage.read(settings.layout)
