"""embed: image, text and mixed vectors of the validated items, never encoding content twice (`mmd.embed`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import EmbedReport


def run(settings: Settings, log=None, show_progress: bool = True) -> EmbedReport:
    from mmd.embed import run_embed

    return EmbedReport.model_validate(run_embed(settings, show_progress=show_progress).to_dict())
