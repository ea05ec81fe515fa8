"""train_<family>: train a detector family on the real items plus the selected synthetic set."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import TrainReport


def run(settings: Settings, log=None, family: str = "cmc", **options) -> TrainReport:
    """`options`: the family's own (CMC's `variant`)."""
    from mmd.encoders.base import set_threads
    from mmd.models.families import get

    set_threads(settings.params.train.threads)
    return TrainReport.model_validate(get(family).load("train")(settings, log=log, **options))
