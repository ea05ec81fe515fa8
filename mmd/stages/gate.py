"""gate: champion against challenger and drift; promote or hold; the moderators' report (`mmd.gate`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import GateReport


def run(settings: Settings, log=None) -> GateReport:
    from mmd.encoders.base import set_threads
    from mmd.gate import run_gate

    set_threads(settings.params.train.threads)
    return GateReport.model_validate(run_gate(settings, log=log))
