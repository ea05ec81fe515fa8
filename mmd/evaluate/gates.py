"""The promotion gate: typed checks, one decision per model family.

A check is passed, failed, could not run (with the reason it could not), or skipped (it
does not apply: there is no champion to compare with yet). It never raises to say "no".
Each check is `enforce`d (its failure holds the challenger back; its not running holds it
too, since an unchecked model is not a checked one) or only `report`ed.

The checks, all thresholds in the `gate` section of params.yaml:
- validation: the pass rate of the newest validation run, and its batch-level checks;
- floors: absolute minimums on the holdout (accuracy, macro-F1, AUROC, and every class's
  F1, so a model that gave up on a class fails however good its average);
- champion: challenger >= champion + min_delta on the primary metric on the same holdout,
  and no class's F1 falling by more than max_class_f1_drop;
- drift (computed by `mmd.evaluate.drift`): the fresh batch against the champion's training
  reference (data and embeddings), the challenger's training set against the current real
  data (did synthetic selection follow the new data?), the challenger's scores.

The first model of a family has no champion: the champion-relative checks are skipped and
it is promoted when the others pass (the floors among them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

from mmd.config.gate import GateConfig

PASSED, FAILED, COULD_NOT_RUN, SKIPPED = "passed", "failed", "could_not_run", "skipped"
@dataclass
class Check:
    name: str
    status: str
    reasons: list[str]
    figures: dict = field(default_factory=dict)
    enforced: bool = True
    html: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Decision:
    family: str
    status: str                 # passed | failed | could_not_run
    action: str                 # promote | hold | keep (the challenger is the champion already)
    reasons: list[str]
    checks: list[Check]
    first_model: bool
    challenger: dict = field(default_factory=dict)
    champion: dict | None = None

    def to_dict(self) -> dict:
        return {**{k: v for k, v in asdict(self).items() if k != "checks"}, "checks": [c.to_dict() for c in self.checks]}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


# --------------------------------------------------------------------------- the checks
def validation_check(report: dict | None, cfg: GateConfig) -> Check:
    """The newest validation run (reports/validation.json): pass rate and batch-level checks."""
    if not report:
        return Check("validation", COULD_NOT_RUN, ["no validation report: run `mmd validate`"])
    rate = report.get("pass_rate")
    if rate is None:
        return Check("validation", COULD_NOT_RUN, ["the validation report has no pass rate"])
    figures = {"pass_rate": rate, "threshold": cfg.min_pass_rate, "in": report.get("in"),
               "accepted": report.get("accepted"), "quarantined": report.get("quarantined")}
    reasons = []
    if rate < cfg.min_pass_rate:
        reasons.append(f"validation pass rate {rate:.1%} is below {cfg.min_pass_rate:.1%}")
    failed = [b for b in report.get("batch_checks", []) if not b.get("success")]
    reasons += [f"batch check failed for {b.get('kind')}: {b.get('expectation')} (observed {b.get('observed')})"
                for b in failed]
    if reasons:
        return Check("validation", FAILED, reasons, figures)
    return Check("validation", PASSED, [f"pass rate {rate:.1%} >= {cfg.min_pass_rate:.1%}, batch checks pass"], figures)


def floors_check(metrics: dict | None, cfg: GateConfig) -> Check:
    """Absolute minimums on the holdout, every class's F1 included."""
    if not metrics:
        return Check("floors", COULD_NOT_RUN, ["the challenger has no holdout metrics (no labelled holdout items)"])
    if metrics["n"] < cfg.min_holdout:
        return Check("floors", COULD_NOT_RUN, [f"{metrics['n']} labelled holdout items, fewer than "
                                               f"gate.min_holdout = {cfg.min_holdout}"], {"n": metrics["n"]})
    floors = cfg.floors
    figures = {"n": metrics["n"], **{k: metrics[k] for k in ("accuracy", "macro_f1", "auroc")},
               "per_class_f1": {c: v["f1"] for c, v in metrics["per_class"].items()}, "floors": floors.model_dump()}
    if metrics["auroc"] is None:
        return Check("floors", COULD_NOT_RUN, ["AUROC is undefined: the holdout has one class only"], figures)
    reasons = [f"{k} {metrics[k]:.3f} is below the floor {getattr(floors, k):.3f}"
               for k in ("accuracy", "macro_f1", "auroc") if metrics[k] < getattr(floors, k)]
    reasons += [f"class '{c}' has collapsed: F1 {v['f1']:.3f} < {floors.class_f1:.3f}"
                for c, v in metrics["per_class"].items() if v["f1"] < floors.class_f1]
    if reasons:
        return Check("floors", FAILED, reasons, figures)
    return Check("floors", PASSED, [f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}, "
                                    f"AUROC {metrics['auroc']:.3f} and every class's F1 clear their floors"], figures)


def champion_check(challenger: dict | None, champion: dict | None, cfg: GateConfig, delta: dict | None = None,
                   champion_error: str | None = None, first_model: bool = False) -> Check:
    """Challenger >= champion + min_delta on the primary metric, on the same holdout; no class collapses
    against the champion. `delta`: the paired-bootstrap figures of the difference, reported."""
    if first_model:
        return Check("champion", SKIPPED, ["no champion yet: the first model of the family is promoted on the floors"])
    if champion_error:
        return Check("champion", COULD_NOT_RUN, [f"the champion could not be scored: {champion_error}"])
    if not challenger or not champion:
        return Check("champion", COULD_NOT_RUN, ["no holdout metrics for " + ("the challenger" if not challenger
                                                                                else "the champion")])
    if challenger["n"] < cfg.min_holdout:
        return Check("champion", COULD_NOT_RUN, [f"{challenger['n']} labelled holdout items, fewer than "
                                                 f"gate.min_holdout = {cfg.min_holdout}"])
    m = cfg.primary_metric
    new, old = challenger[m], champion[m]
    if new is None or old is None:
        return Check("champion", COULD_NOT_RUN, [f"{m} is undefined on this holdout (one class only)"])
    figures = {"metric": m, "challenger": new, "champion": old, "min_delta": cfg.min_delta, "delta": new - old,
               "paired_bootstrap": delta or {},
               "per_class_f1": {c: {"challenger": v["f1"], "champion": champion["per_class"][c]["f1"]}
                                for c, v in challenger["per_class"].items()}}
    reasons = []
    if new < old + cfg.min_delta:
        reasons.append(f"{m} {new:.3f} is not at least the champion's {old:.3f} + {cfg.min_delta:.3f}")
    for c, v in challenger["per_class"].items():
        drop = champion["per_class"][c]["f1"] - v["f1"]
        if drop > cfg.max_class_f1_drop:
            reasons.append(f"class '{c}' F1 falls by {drop:.3f} against the champion "
                           f"({champion['per_class'][c]['f1']:.3f} -> {v['f1']:.3f}), more than {cfg.max_class_f1_drop:.3f}")
    ci = (delta or {}).get("ci")
    note = f" (95% CI of the difference {_fmt(ci[0])} to {_fmt(ci[1])})" if ci else ""
    if reasons:
        return Check("champion", FAILED, [r + note if i == 0 else r for i, r in enumerate(reasons)], figures)
    return Check("champion", PASSED, [f"{m} {new:.3f} against the champion's {old:.3f}{note}; no class falls "
                                      f"by more than {cfg.max_class_f1_drop:.3f}"], figures)


def from_drift(result) -> Check:
    """A DriftCheck (mmd.evaluate.drift) as a gate check."""
    figures = {"method": result.method, "score": result.score, "threshold": result.threshold, **result.details}
    return Check(result.name, result.status, list(result.reasons), figures, html=result.html)


# --------------------------------------------------------------------------- the decision
def decide(family: str, checks: Sequence[Check], cfg: GateConfig, first_model: bool,
           challenger: dict | None = None, champion: dict | None = None) -> Decision:
    """Failed if an enforced check failed; could not run if none failed but one could not run;
    else passed. Passed means promote (when gate.promote), anything else means hold."""
    kept: list[Check] = []
    for c in checks:
        mode = cfg.mode(c.name)
        if mode == "off":
            continue
        c.enforced = mode == "enforce"
        kept.append(c)
    enforced = [c for c in kept if c.enforced]
    failed = [c for c in enforced if c.status == FAILED]
    unrun = [c for c in enforced if c.status == COULD_NOT_RUN]
    if failed:
        status = FAILED
        reasons = [f"{c.name}: {r}" for c in failed for r in c.reasons]
    elif unrun:
        status = COULD_NOT_RUN
        reasons = [f"{c.name} could not run: {r}" for c in unrun for r in c.reasons]
    else:
        status = PASSED
        ran = [c.name for c in enforced if c.status == PASSED]
        reasons = [f"every enforced check passed ({', '.join(ran)})"]
        if first_model:
            reasons.append("first model of the family: no champion to beat")
    action = "promote" if status == PASSED and cfg.promote else "hold"
    if status == PASSED and not cfg.promote:
        reasons.append("gate.promote is false: decided and reported, the champion left in place")
    return Decision(family, status, action, reasons, kept, first_model, challenger or {}, champion)
