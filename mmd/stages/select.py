"""select: the synthetic items closest to the live real distribution (`mmd.synth.select`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import SelectReport


def run(settings: Settings, log=None, method: str | None = None, k: int | None = None) -> SelectReport:
    from mmd.synth.select import run_select

    return SelectReport.model_validate(run_select(settings, method=method, k=k).to_dict())
