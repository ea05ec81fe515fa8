"""ingest: pull what is new from every enabled source (`mmd.ingest`), and the labels moderators agreed on
(`mmd.review.votes.snapshot`, under `review.require_agreement`), which training reads."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import IngestReport


def run(settings: Settings, log=None, only: list[str] | None = None, show_progress: bool = True) -> IngestReport:
    from mmd.ingest import run_ingest
    from mmd.review.votes import snapshot

    from mmd.errors import Retryable

    try:
        result = run_ingest(settings, only=only, show_progress=show_progress)
    except Retryable:  # a source that is down (retried) does not hold the moderators' labels back
        snapshot(settings.layout, settings.params.review.require_agreement)
        raise
    moderation = snapshot(settings.layout, settings.params.review.require_agreement)
    report = IngestReport.model_validate(result.to_dict())
    report.moderation = moderation
    report.write(settings.layout)
    return report
