"""What every stage reports: one typed result per stage, which is also its report file.

A stage's library function returns its result and writes it to the report file the layout names
(`result.write(layout)`); a run through `dvc repro` reads it back (`Result.read(layout)`). Every
renderer (the cycle table, the CLI, the Prefect artifacts, the moderators' report, the e-mail)
takes these types, and each result knows its own headline figures (`figures()`).

Fields a renderer needs are typed; whatever else a stage records rides along (`extra="allow"`)
and stays in the report file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from mmd import layout as L


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True, protected_namespaces=())


def _num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}%" if isinstance(x, (int, float)) else "-"


class Metrics(_Open):
    """Classification metrics of one scorer on one set of items (`mmd.evaluate.metrics`)."""

    n: int = 0
    accuracy: float | None = None
    macro_f1: float | None = None
    auroc: float | None = None
    ece: float | None = None
    brier: float | None = None
    per_class: dict[str, dict[str, float]] = Field(default_factory=dict)
    ci: dict[str, list[float] | None] | None = None


def _round(x: Any) -> Any:
    return round(x, 4) if isinstance(x, float) else x


class StageResult(_Open):
    """The base: a report file under the layout, the figures of a summary row, and the few numbers
    `dvc metrics show` compares across cycles (`metrics()`, written beside the report)."""

    REPORT: ClassVar[L.Loc]
    STAGE: ClassVar[str] = ""  # set where the stage declares DVC metrics (reports/metrics/<stage>.json)

    def figures(self) -> str:
        return ""

    def metrics(self) -> dict[str, Any]:
        return {}

    def to_dict(self) -> dict:
        """What the report file holds: the fields the stage set (defaults it never touched stay out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    def write(self, layout: L.Layout, **fields: str) -> Path:
        from mmd.util import write_json

        path = layout.path(self.REPORT, **fields)
        write_json(path, self.to_dict())
        if self.STAGE:
            write_json(layout.path(L.METRICS, stage=self.STAGE),
                       {k: ({kk: _round(vv) for kk, vv in v.items()} if isinstance(v, dict) else _round(v))
                        for k, v in self.metrics().items()})
        return path

    @classmethod
    def read(cls, layout: L.Layout, **fields: str):
        """The last report of this stage, or None when it never ran."""
        path = layout.path(cls.REPORT, **fields)
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None


# --------------------------------------------------------------------------- the data plane
class Totals(_Open):
    in_: int = Field(0, alias="in")
    accepted: int = 0
    quarantined: int = 0
    duplicates: int = 0
    skipped: int = 0


class SourceSummary(Totals):
    name: str
    type: str
    reconciled: bool = True
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    unknown_ratings: dict[str, int] = Field(default_factory=dict)
    counters: dict[str, int] = Field(default_factory=dict)
    error: str | None = None


class IngestReport(StageResult):
    REPORT: ClassVar[L.Loc] = L.INGEST_REPORT
    started_at: str | None = None
    finished_at: str | None = None
    totals: Totals = Totals()
    reconciled: bool = True
    total_items: int = 0
    sources: list[SourceSummary] = Field(default_factory=list)
    moderation: dict[str, int] = Field(default_factory=dict)   # the moderators' votes and the labels agreed

    @property
    def accepted(self) -> int:
        return self.totals.accepted

    def figures(self) -> str:
        t = self.totals
        agreed = f"; {self.moderation['agreed']} moderators' labels" if self.moderation.get("agreed") else ""
        return (f"{t.in_} in: {t.accepted} accepted, {t.quarantined} quarantined, {t.duplicates} duplicates, "
                f"{t.skipped} skipped{agreed}")


class ValidateReport(StageResult):
    REPORT: ClassVar[L.Loc] = L.VALIDATION_REPORT
    STAGE: ClassVar[str] = "validate"
    in_: int = Field(0, alias="in")
    accepted: int = 0
    quarantined: int = 0
    reconciled: bool = True
    pass_rate: float | None = None
    passed: bool = True
    failures: list[str] = Field(default_factory=list)
    per_kind: dict[str, dict[str, int]] = Field(default_factory=dict)
    quarantine_reasons: dict[str, int] = Field(default_factory=dict)
    batch_checks: list[dict[str, Any]] = Field(default_factory=list)
    total_items: int = 0              # the validated snapshot after the run
    incremental: bool = False         # the run validated only the rows new since the last one

    def figures(self) -> str:
        new = " new" if self.incremental else ""
        return (f"{self.in_}{new} in: {self.accepted} pass ({_pct(self.pass_rate)}), {self.quarantined} quarantined; "
                f"{self.total_items} validated in all")

    def metrics(self) -> dict:
        return {"pass_rate": self.pass_rate, "quarantined": self.quarantined, "items": self.total_items}


class EmbedReport(StageResult):
    REPORT: ClassVar[L.Loc] = L.EMBED_REPORT
    encoder: str = ""
    items: int = 0
    embedded: int = 0
    quarantined: int = 0
    encoded_texts: int = 0
    encoded_images: int = 0
    cached_texts: int = 0
    cached_images: int = 0
    seconds: float = 0.0
    dim: int = 0

    def figures(self) -> str:
        return (f"{self.embedded} embedded; encoded {self.encoded_texts} texts and {self.encoded_images} images, "
                f"{self.cached_texts + self.cached_images} from the cache")


class IndexReport(StageResult):
    REPORT: ClassVar[L.Loc] = L.INDEX_REPORT
    backend: str = ""
    collection: str = ""
    encoder: str = ""
    total: int = 0
    upserted: int = 0
    deleted: int = 0
    unchanged: int = 0
    rebuilt: bool = False
    seconds: float = 0.0

    def figures(self) -> str:
        return f"{self.total} points: {self.upserted} upserted, {self.deleted} deleted, {self.unchanged} unchanged"


class SynthesizeReport(StageResult):
    REPORT: ClassVar[L.Loc] = L.SYNTHESIZE_REPORT
    encoder: str = ""
    pool_before: int = 0
    pool_after: int = 0
    new: int = 0
    seconds: float = 0.0
    generators: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def figures(self) -> str:
        return f"{self.new} new synthetic items, pool {self.pool_before} -> {self.pool_after}"


class SelectReport(StageResult):
    REPORT: ClassVar[L.Loc] = L.SELECT_REPORT
    method: str = ""
    ranked_by: str = ""
    k: int = 0
    selected: int = 0
    candidates: int = 0
    target: int = 0
    target_used: int = 0
    labels: dict[str, int] = Field(default_factory=dict)
    divergence_selected: float | None = None
    divergence_random: float | None = None
    seconds: float = 0.0

    def figures(self) -> str:
        return (f"{self.selected} of {self.candidates} selected ({self.ranked_by or self.method}); "
                f"divergence to real {_num(self.divergence_selected)} vs random {_num(self.divergence_random)}")


# --------------------------------------------------------------------------- detectors
class TrainReport(StageResult):
    """A family's training stage (`<reports>/train_<family>.json`). `val` and `test` hold the metrics of
    each scorer the model has (`{scorer: Metrics}`); `serves` names the one it predicts with."""

    REPORT: ClassVar[L.Loc] = L.TRAIN_REPORT
    model: str
    variant: str | None = None
    serves: str = ""
    trained_at: str | None = None
    seconds: float = 0.0
    temperature: float | None = None
    model_dir: str = ""
    val: dict[str, Metrics] = Field(default_factory=dict)
    test: dict[str, Metrics] = Field(default_factory=dict)
    plots: dict[str, str] = Field(default_factory=dict)

    def served(self, role: str = "val") -> Metrics | None:
        scored = getattr(self, role)
        return scored.get(self.serves) or next(iter(scored.values()), None)

    def figures(self) -> str:
        m = self.served() or Metrics()
        return f"{self.variant or self.model}: val macro-F1 {_num(m.macro_f1)} on {m.n or '-'} items"

    def write(self, layout: L.Layout, **fields: str) -> Path:
        return super().write(layout, family=self.model)

    @classmethod
    def read(cls, layout: L.Layout, family: str = "", **fields: str):
        return super().read(layout, family=family)


class FamilyEvaluation(_Open):
    model_trained_at: str | None = None
    variant: str | None = None
    encoder: str | None = None
    items_scored: int = 0
    holdout: Metrics | None = None
    plots: dict[str, str] = Field(default_factory=dict)
    note: str | None = None
    skipped: str | None = None
    seconds: float = 0.0


class EvaluateReport(StageResult):
    REPORT: ClassVar[L.Loc] = L.EVALUATE_REPORT
    STAGE: ClassVar[str] = "evaluate"
    evaluated_at: str | None = None
    items: int = 0
    roles: dict[str, int] = Field(default_factory=dict)
    holdout: dict[str, int] = Field(default_factory=dict)
    families: dict[str, FamilyEvaluation] = Field(default_factory=dict)

    def figures(self) -> str:
        fams = ", ".join(f"{f} macro-F1 {_num(v.holdout.macro_f1 if v.holdout else None)}"
                         for f, v in self.families.items())
        return f"holdout {self.holdout.get('items', 0)} items: {fams}"

    def metrics(self) -> dict:
        """Per family, the holdout figures a person compares across cycles."""
        return {f: {"accuracy": e.holdout.accuracy, "macro_f1": e.holdout.macro_f1, "auroc": e.holdout.auroc,
                    "ece": e.holdout.ece, "n": e.holdout.n}
                for f, e in self.families.items() if e.holdout is not None}


# --------------------------------------------------------------------------- the gate
class CheckResult(_Open):
    name: str
    status: str
    reasons: list[str] = Field(default_factory=list)
    figures: dict[str, Any] = Field(default_factory=dict)
    enforced: bool = True
    html: str | None = None


class FamilyDecision(_Open):
    """One family's gate decision: status passed | failed | could_not_run, action promote | hold | keep."""

    status: str
    action: str
    reasons: list[str] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    first_model: bool = False
    challenger: dict[str, Any] = Field(default_factory=dict)
    champion: dict[str, Any] | None = None
    champion_after: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    delta: dict[str, Any] | None = None
    fresh_batch: dict[str, Any] = Field(default_factory=dict)
    version: dict[str, Any] = Field(default_factory=dict)


class GateReport(StageResult):
    REPORT: ClassVar[L.Loc] = L.GATE_REPORT
    STAGE: ClassVar[str] = "gate"
    gated_at: str | None = None
    families: dict[str, FamilyDecision] = Field(default_factory=dict)

    def figures(self) -> str:
        return ", ".join(f"{f} {d.status} -> {d.action}" + (f" (champion v{d.champion_after})" if d.champion_after else "")
                         for f, d in self.families.items())

    def metrics(self) -> dict:
        return {f: {"promoted": int(d.action == "promote"), "champion": d.champion_after or 0}
                for f, d in self.families.items()}

    def summary(self) -> str:
        """`cmc promote, rgcl hold`: what an e-mail's subject and a commit message say."""
        return ", ".join(f"{f} {d.action}" for f, d in self.families.items()) or "no models"


class ReportPage(GateReport):
    """The report step: the moderators' page of the gate's decisions (its result is the decisions it shows)."""


    def figures(self) -> str:
        return f"the moderators' page of {len(self.families)} decision(s)"


class ReviewReport(StageResult):
    """The review stage: what the champions scored and what joined the moderators' queue."""

    REPORT: ClassVar[L.Loc] = L.REVIEW_REPORT
    reviewed_at: str | None = None
    items: int = 0
    fresh: int = 0                   # items no review stage had scored
    scored: int = 0
    added: int = 0                   # joined the queue this time
    reasons: dict[str, int] = Field(default_factory=dict)    # likely, uncertain, disagreement
    champions: dict[str, int] = Field(default_factory=dict)  # family -> the version that scored
    queue: int = 0
    states: dict[str, int] = Field(default_factory=dict)     # open, labelled, skipped
    note: str | None = None

    def figures(self) -> str:
        champs = ", ".join(f"{f} v{n}" for f, n in self.champions.items()) or "no champion"
        s = self.states
        return (f"{self.scored} fresh scored by {champs}; +{self.added} queued; queue {self.queue}: "
                f"{s.get('open', 0)} open, {s.get('labelled', 0)} labelled, {s.get('skipped', 0)} skipped")


RESULTS: dict[str, type[StageResult]] = {
    "ingest": IngestReport, "validate": ValidateReport, "embed": EmbedReport, "index": IndexReport,
    "synthesize": SynthesizeReport, "select": SelectReport, "evaluate": EvaluateReport, "gate": GateReport,
    "report": ReportPage, "review": ReviewReport,
}


def result_type(stage: str) -> type[StageResult]:
    return TrainReport if stage.startswith("train_") else RESULTS[stage]
