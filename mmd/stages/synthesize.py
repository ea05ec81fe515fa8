"""synthesize: new synthetic items from the real items that are new, into the pool (`mmd.synth.generate`)."""

from __future__ import annotations

from mmd.config import Settings
from mmd.results import SynthesizeReport


def run(settings: Settings, log=None) -> SynthesizeReport:
    from mmd.synth.generate import run_synthesize

    return SynthesizeReport.model_validate(run_synthesize(settings).to_dict())
