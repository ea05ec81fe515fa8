"""The promotion gate: for each family with an evaluated challenger, gather the evidence (`evidence`:
pure checks, typed), decide (`mmd.evaluate.gates.decide`), then act on the registry (`action`:
register, promote or hold, the model card). The moderators' report is a step of its own
(`mmd.report`), after this one.

Outputs: `<reports>/gate.json` (decisions, reasons and figures), `<reports>/drift/*.html` and the
registry under `<data>/registry`.
"""

from __future__ import annotations

from typing import Callable, Sequence

from mmd.config import Settings
from mmd.evaluate.gates import COULD_NOT_RUN, validation_check
from mmd.gate.action import act
from mmd.gate.evidence import Items, gather
from mmd.items import now_iso
from mmd.registry import Registry
from mmd.results import EvaluateReport, GateReport, ValidateReport
from mmd.scale.engine import open_engine


def run_gate(settings: Settings, families: Sequence[str] | None = None,
             log: Callable[[str], None] | None = None) -> dict:
    """The DVC stage: a decision per evaluated family, the registry updated, gate.json written."""
    at = settings.layout
    evaluation = EvaluateReport.read(at)
    if evaluation is None:
        raise FileNotFoundError(f"{at.evaluate_report} not found: run `mmd evaluate` first")
    validated = ValidateReport.read(at)
    validation = validation_check(validated.to_dict() if validated else None, settings.params.gate)
    items = Items(settings)
    registry = Registry(at.registry)
    for folder in (at.drift, at.registry):  # DVC outputs, even when nothing was written into them
        folder.mkdir(parents=True, exist_ok=True)
    report: dict = {"gated_at": now_iso(), "families": {}}
    with open_engine(settings.params.scale) as engine:  # the champions' scoring, sharded with `scale.engine: dask`
        for family in families or list(evaluation.families):
            ev = evaluation.families.get(family)
            if ev is None or ev.skipped:
                report["families"][family] = {"status": COULD_NOT_RUN, "action": "hold", "checks": [],
                                              "reasons": [ev.skipped if ev else f"{family} was not evaluated"]}
                continue
            evidence = gather(settings, family, items, registry, validation, engine)
            report["families"][family] = act(settings, family, evidence, items, registry, log)
    GateReport.model_validate(report).write(at)
    return report
