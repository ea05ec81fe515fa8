"""ingest: pull what is new from every enabled source (`mmd.ingest`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import IngestReport


def run(settings: Settings, log=None, only: list[str] | None = None, show_progress: bool = True) -> IngestReport:
    from mmd.ingest import run_ingest

    return IngestReport.model_validate(run_ingest(settings, only=only, show_progress=show_progress).to_dict())
