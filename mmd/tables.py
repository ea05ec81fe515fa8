"""The summary tables a person reads on the terminal: one per stage result, and the cycle's.

Every table takes a stage's typed result (`mmd.results`), so the CLI, `make demo` and anything else
print the same thing.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from mmd.config import Settings
from mmd.results import (EmbedReport, EvaluateReport, GateReport, IndexReport, IngestReport, ReviewReport,
                         SelectReport, SynthesizeReport, TrainReport, ValidateReport)

# logs and CI are not terminals: give tables room rather than folding every cell
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)


def _table(title: str, columns: list[str], left: tuple[str, ...] = ()) -> Table:
    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right")
    return t


def _f3(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def ingest(r: IngestReport) -> Table:
    t = _table("ingest", ["source", "in", "accepted", "quarantined", "duplicates", "skipped", "reconciled",
                          "top reasons"], left=("source", "top reasons"))
    for s in r.sources:
        top = sorted(s.quarantine_reasons.items(), key=lambda kv: -kv[1])[:3]
        reasons = ", ".join(f"{k}×{v}" for k, v in top)
        if s.unknown_ratings:
            reasons += f"{', ' if reasons else ''}unknown ratings×{sum(s.unknown_ratings.values())}"
        t.add_row(s.name, str(s.in_), str(s.accepted), str(s.quarantined), str(s.duplicates), str(s.skipped),
                  "yes" if s.reconciled else "[red]NO[/red]", reasons)
    return t


def validate(r: ValidateReport) -> Table:
    t = _table("validate", ["kind", "in", "accepted", "quarantined"], left=("kind",))
    for kind, v in sorted(r.per_kind.items()):
        t.add_row(kind, str(v["in"]), str(v["accepted"]), str(v["quarantined"]))
    t.add_row("[b]all[/b]", str(r.in_), str(r.accepted), str(r.quarantined))
    return t


def embed(r: EmbedReport) -> Table:
    t = _table(f"embed ({r.encoder})", ["items", "embedded", "quarantined", "encoded texts", "encoded images",
                                        "from cache", "seconds"])
    t.add_row(str(r.items), str(r.embedded), str(r.quarantined), str(r.encoded_texts), str(r.encoded_images),
              str(r.cached_texts + r.cached_images), f"{r.seconds:.1f}")
    return t


def index(r: IndexReport) -> Table:
    t = _table(f"index ({r.backend}: {r.collection})", ["points", "upserted", "deleted", "unchanged", "rebuilt",
                                                       "seconds"])
    t.add_row(str(r.total), str(r.upserted), str(r.deleted), str(r.unchanged), "yes" if r.rebuilt else "no",
              f"{r.seconds:.1f}")
    return t


def synthesize(r: SynthesizeReport) -> Table:
    t = _table(f"synthesize (pool {r.pool_before} -> {r.pool_after})",
               ["generator", "new parents", "attempted", "produced", "deferred", "labels", "no output / skipped"],
               left=("generator", "labels", "no output / skipped"))
    for name, g in r.generators.items():
        why = g.get("skipped") or ", ".join(f"{k}×{v}" for k, v in (g.get("no_output") or {}).items())
        labels = ", ".join(f"{k}: {v}" for k, v in (g.get("labels") or {}).items())
        t.add_row(name, str(g.get("parents")), str(g.get("attempted")), str(g.get("produced")), str(g.get("deferred")),
                  labels, why)
    return t


def select(r: SelectReport) -> Table:
    t = _table(f"select ({r.method}, ranked by {r.ranked_by})",
               ["k", "selected", "candidates", "real target", "labels", "divergence to real", "random's", "seconds"],
               left=("labels",))
    t.add_row(str(r.k), str(r.selected), str(r.candidates), f"{r.target_used}/{r.target}",
              ", ".join(f"{k}: {v}" for k, v in r.labels.items()), _f3(r.divergence_selected),
              _f3(r.divergence_random), f"{r.seconds:.1f}")
    return t


def train(r: TrainReport) -> Table:
    t = _table(f"train {r.model}" + (f" ({r.variant})" if r.variant else ""),
               ["split", "scorer", "items", "accuracy", "macro-F1", "AUROC", "ECE"])
    for role in ("val", "test"):
        for scorer, m in getattr(r, role).items():
            t.add_row(role, scorer + (" (serves)" if scorer == r.serves else ""), str(m.n), _f3(m.accuracy),
                      _f3(m.macro_f1), _f3(m.auroc), _f3(m.ece))
    return t


def evaluate(r: EvaluateReport) -> Table:
    t = _table(f"evaluate: holdout of {r.holdout.get('items', 0)} items",
               ["model", "items", "accuracy", "macro-F1", "AUROC", "95% CI macro-F1"])
    for family, e in r.families.items():
        m = e.holdout
        if not m:
            t.add_row(family, "-", "-", "-", "-", e.skipped or e.note or "")
            continue
        ci = (m.ci or {}).get("macro_f1")
        t.add_row(family, str(m.n), _f3(m.accuracy), _f3(m.macro_f1), _f3(m.auroc),
                  f"{ci[0]:.3f} to {ci[1]:.3f}" if ci else "-")
    return t


def decisions(r: GateReport) -> Table:
    t = _table("gate", ["model", "decision", "action", "champion", "reasons"],
               left=("model", "decision", "action", "champion", "reasons"))
    for family, d in r.families.items():
        t.add_row(family, d.status, d.action, "-" if d.champion_after is None else f"v{d.champion_after}",
                  "\n".join(d.reasons))
    return t


def review(r: ReviewReport) -> Table:
    t = _table("review", ["fresh", "scored by", "queued", "likely", "uncertain", "disagreement", "queue", "open",
                          "labelled", "skipped"], left=("scored by",))
    t.add_row(str(r.fresh), ", ".join(f"{f} v{n}" for f, n in r.champions.items()) or (r.note or "-"), str(r.added),
              *(str(r.reasons.get(k, 0)) for k in ("likely", "uncertain", "disagreement")), str(r.queue),
              *(str(r.states.get(k, 0)) for k in ("open", "labelled", "skipped")))
    return t


BY_STAGE = {"ingest": ingest, "validate": validate, "embed": embed, "index": index, "synthesize": synthesize,
            "select": select, "evaluate": evaluate, "gate": decisions, "report": decisions, "review": review}


def stage_table(stage: str, result) -> Table:
    return (train if stage.startswith("train_") else BY_STAGE[stage])(result)


def cycle_tables(settings: Settings, ran: dict) -> list[Table]:
    """A retrain cycle's summary: one row per stage with its figures, the gate's decisions, and where
    every output (the report and the e-mail among them) is."""
    from mmd.cycle import summary_rows

    t = _table("cycle", ["stage", "how", "status", "seconds", "figures"], left=("stage", "how", "status", "figures"))
    for r in summary_rows(ran):
        t.add_row(r["stage"], r["how"], r["status"], f"{r['seconds']:.1f}", r["figures"])
    mail, version = ran.get("email") or {}, ran.get("version") or {}
    t.add_row("email", "", "queued" if mail.get("queued") else "sent" if mail.get("sent") else "-", "",
              "; ".join(mail.get("errors") or []) or f"{len(mail.get('sent') or [])} sent, "
              f"{len(mail.get('queued') or [])} waiting in the outbox")
    t.add_row("version", "", "pushed" if version.get("pushed") else "-", "",
              version.get("skipped") or f"remote {version.get('remote') or '-'}, commit {version.get('commit') or '-'}")
    out = Table(title="outputs", show_header=False)
    out.add_column("what")
    out.add_column("where")
    at = settings.layout
    for what, where in (
        ("items (validated)", at.items),
        ("quarantine (ingest, validate)", f"{at.ingest_quarantine}, {at.validate_quarantine}"),
        ("validation report", at.validation_html),
        ("embeddings", at.vectors),
        (f"vector store ({settings.params.index.backend})", at.store),
        ("synthetic pool, selected set", f"{at.pool}, {at.selected}"),
        ("models", ", ".join(str(at.model(f)) for f in settings.params.evaluate.families)),
        ("holdout evaluation", f"{at.evaluate_report}, {at.evaluate_plots}/"),
        ("gate decisions, drift", f"{at.gate_report}, {at.drift}/"),
        ("model registry", at.registry),
        ("moderators' report", at.cycle_report),
        ("review queue (mmd app)", at.review_queue),
        ("e-mail to moderators", mail.get("path") or mail.get("outbox") or "-"),
    ):
        out.add_row(what, str(where))
    gate = ran.get("gate")
    gate = gate.result if gate is not None else None
    return [t] + ([decisions(gate)] if gate is not None and gate.families else []) + [out]
