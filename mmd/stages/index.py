"""index: the embedded items and the synthetic pool into the vector store (`mmd.index`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import IndexReport


def run(settings: Settings, log=None, rebuild: bool = False) -> IndexReport:
    from mmd.index import run_index

    return IndexReport.model_validate(run_index(settings, rebuild=rebuild).to_dict())
