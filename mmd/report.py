"""The moderators' report: one self-contained page per cycle (`<reports>/cycle.html`), a step of its own
after the gate, and the e-mail that carries it.

What came in, what was quarantined and why, each family's gate decision with its reasons and checks,
and the champion against the challenger, with the figures inlined (base64 PNG) so the page reads the
same as an e-mail body or a file. The detailed drift pages are separate files beside it (`drift/`).
"""

from __future__ import annotations

from pathlib import Path

from mmd.config import Settings
from mmd.pages import png_base64, write_page
from mmd.results import EvaluateReport, GateReport, IngestReport, ValidateReport


def _context(settings: Settings, gate: GateReport) -> dict:
    at = settings.layout
    ingest, validation = IngestReport.read(at), ValidateReport.read(at)
    evaluation = EvaluateReport.read(at) or EvaluateReport()
    reasons = [("ingest", s.name, code, n) for s in (ingest.sources if ingest else [])
               for code, n in sorted(s.quarantine_reasons.items())]
    reasons += [("validate", "", code, n) for code, n in sorted((validation.quarantine_reasons if validation else {}).items())]
    unknown = {k: v for s in (ingest.sources if ingest else []) for k, v in s.unknown_ratings.items()}
    figures = {f: [png for key in ("evaluation", "scores") if (png := png_base64((ev.plots or {}).get(key)))]
               for f, ev in evaluation.families.items()}
    # a check's own page, linked relative to this page (both live under the reports folder)
    links = {c.html: Path(c.html).relative_to(at.reports).as_posix()
             for d in gate.families.values() for c in d.checks
             if c.html and Path(c.html).is_relative_to(at.reports)}
    return {"gate": gate, "ingest": ingest, "validation": validation, "reasons": reasons, "unknown_ratings": unknown,
            "figures": figures, "links": links, "label_names": list(settings.params.train.label_names)}


def write_cycle_report(settings: Settings, gate: GateReport, path: Path | None = None) -> Path:
    return write_page(path or settings.layout.cycle_report, "cycle.html", **_context(settings, gate))


def run_report(settings: Settings) -> Path:
    """The report step: the page of the last gate decision."""
    gate = GateReport.read(settings.layout)
    if gate is None:
        raise FileNotFoundError(f"{settings.layout.gate_report} not found: run `mmd gate` first")
    return write_cycle_report(settings, gate)


def send_cycle_report(settings: Settings, gate: GateReport, env=None):
    """The cycle report by e-mail (`notify` in params): the page as the body, the gate's JSON and each
    family's data- and embedding-drift pages attached; queued in the outbox when it cannot go out."""
    from mmd.notify import send_report

    at = settings.layout
    page = at.cycle_report if at.cycle_report.is_file() else write_cycle_report(settings, gate)
    summary = gate.summary()
    attachments = [at.gate_report] + sorted(
        p for f in gate.families for p in (at.drift / f"{f}-data.html", at.drift / f"{f}-embeddings.html")
        if p.is_file())
    # one message per gate decision: a resumed cycle whose gate DVC skipped does not mail it twice
    key = f"{settings.data_dir}|{gate.gated_at}|{summary}"
    return send_report(settings.params.notify, settings.data_dir, page.read_text(encoding="utf-8"), summary, attachments,
                       env=env, key=key)
