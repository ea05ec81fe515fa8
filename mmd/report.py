"""The moderators' report: one self-contained page per cycle (`<reports>/cycle.html`), a step of its own
after the gate, and the e-mail that carries it.

What came in, what was quarantined and why, each family's gate decision with its reasons and checks,
and the champion against the challenger, with the figures inlined (base64 PNG) so the page reads the
same as an e-mail body or a file. The detailed drift pages are separate files beside it (`drift/`).
"""

from __future__ import annotations

from pathlib import Path

from mmd.app.urls import url_for
from mmd.config import Settings
from mmd.pages import num, pct, png_base64, render, write_page
from mmd.results import EvaluateReport, GateReport, IngestReport, ReviewReport, ValidateReport


def _context(settings: Settings, gate: GateReport, absolute: bool = False) -> dict:
    at = settings.layout
    ingest, validation = IngestReport.read(at), ValidateReport.read(at)
    evaluation = EvaluateReport.read(at) or EvaluateReport()
    reasons = [("ingest", s.name, code, n) for s in (ingest.sources if ingest else [])
               for code, n in sorted(s.quarantine_reasons.items())]
    reasons += [("validate", "", code, n) for code, n in sorted((validation.quarantine_reasons if validation else {}).items())]
    unknown = {k: v for s in (ingest.sources if ingest else []) for k, v in s.unknown_ratings.items()}
    figures = {f: [png for key in ("evaluation", "scores") if (png := png_base64((ev.plots or {}).get(key)))]
               for f, ev in evaluation.families.items()}
    # a check's own page: relative to this page (both live under the reports folder), or, in an e-mail,
    # the app's absolute URL of it (a mail client opens no relative link)
    links = {c.html: (url_for(settings, "report_file", path=rel) if absolute else rel)
             for d in gate.families.values() for c in d.checks
             if c.html and Path(c.html).is_relative_to(at.reports)
             for rel in [Path(c.html).relative_to(at.reports).as_posix()]}
    return {"gate": gate, "ingest": ingest, "validation": validation, "reasons": reasons, "unknown_ratings": unknown,
            "figures": figures, "links": links, "label_names": list(settings.params.train.label_names),
            "headline": {(f, c.name): headline(c) for f, d in gate.families.items() for c in d.checks},
            "app": app_links(settings, gate) if absolute else None,
            # the review stage runs after this page is written: only the e-mail, sent after it, is current
            "review": ReviewReport.read(at) if absolute else None}


def headline(check) -> tuple[str, str]:
    """A check's figure and the threshold it is held to, as two short texts (each check keeps other figures)."""
    f = check.figures or {}
    if check.name == "validation" and f.get("pass_rate") is not None:
        return pct(f["pass_rate"]), f">= {pct(f.get('threshold'))}"
    if check.name == "floors" and f.get("floors"):
        keys = [k for k in ("accuracy", "macro_f1", "auroc") if f.get(k) is not None]
        return (" / ".join(f"{k} {num(f[k])}" for k in keys),
                " / ".join(f">= {num(f['floors'].get(k))}" for k in keys))
    if check.name == "champion" and f.get("challenger") is not None:
        return (f"{f.get('metric')} {num(f['challenger'])}",
                f">= champion {num(f.get('champion'))} + {num(f.get('min_delta'))}")
    if f.get("score") is not None or f.get("threshold") is not None:
        return num(f.get("score")), num(f.get("threshold"))
    return "", ""


def app_links(settings: Settings, gate: GateReport) -> dict:
    """The app's pages a moderator opens from this cycle: the report, the queue, the models, each card."""
    cards = {}
    for family, d in gate.families.items():
        for what, number in (("challenger", (d.version or {}).get("number")), ("champion", d.champion_after)):
            if number is not None:
                cards[f"{family} {what} v{number}"] = url_for(settings, "card", family=family, version=number)
    return {"cycle": url_for(settings, "cycle_report"), "queue": url_for(settings, "queue"),
            "models": url_for(settings, "models"), "cards": cards}


def plain_text(settings: Settings, gate: GateReport) -> str:
    """The report for a mail client that shows no HTML: the decisions with their reasons and figures, the
    queue, and where to open each page."""
    at = settings.layout
    links = app_links(settings, gate)
    lines = [f"mmd cycle report, {gate.gated_at}", ""]
    for family, d in gate.families.items():
        lines.append(f"{family.upper()}: {d.status} -> {d.action} (challenger v{(d.version or {}).get('number', '?')}; "
                     f"champion now: {('v' + str(d.champion_after)) if d.champion_after is not None else 'none'})")
        lines += [f"  - {r}" for r in d.reasons]
        for c in d.checks:
            figure, threshold = headline(c)
            page = (f"  {url_for(settings, 'report_file', path=Path(c.html).relative_to(at.reports).as_posix())}"
                    if c.html and Path(c.html).is_relative_to(at.reports) else "")
            lines.append(f"    {c.name:<18} {c.status:<13} {figure} {threshold}".rstrip() + page)
        lines.append("")
    review = ReviewReport.read(at)
    if review:
        lines += [f"Review queue: {review.states.get('open', 0)} items open (+{review.added} this cycle): {links['queue']}", ""]
    lines += [f"The whole report: {links['cycle']}", f"The models, promote and roll back: {links['models']}"]
    lines += [f"Model card, {name}: {url}" for name, url in links["cards"].items()]
    return "\n".join(lines) + "\n"


def write_cycle_report(settings: Settings, gate: GateReport, path: Path | None = None) -> Path:
    """The page on disk (and in the app): its links are relative, so it opens from either."""
    return write_page(path or settings.layout.cycle_report, "cycle.html", **_context(settings, gate))


def run_report(settings: Settings) -> Path:
    """The report step: the page of the last gate decision."""
    gate = GateReport.read(settings.layout)
    if gate is None:
        raise FileNotFoundError(f"{settings.layout.gate_report} not found: run `mmd gate` first")
    return write_cycle_report(settings, gate)


def send_cycle_report(settings: Settings, gate: GateReport, env=None):
    """The cycle report by e-mail (`notify` in params): the page as the body with its links absolute (to the
    app at `app.base_url`), the report as plain text, the gate's JSON and each check's drift page attached;
    a page over the size caps is linked instead. Queued in the outbox when it cannot go out."""
    from mmd.notify import send_report

    at = settings.layout
    summary = gate.summary()
    body = render("cycle.html", **_context(settings, gate, absolute=True))
    pages = sorted({Path(c.html) for d in gate.families.values() for c in d.checks
                    if c.html and Path(c.html).is_file()})
    links = {p: url_for(settings, "report_file", path=p.relative_to(at.reports).as_posix())
             for p in [at.gate_report, *pages] if p.is_relative_to(at.reports)}
    # one message per gate decision: a resumed cycle whose gate DVC skipped does not mail it twice
    key = f"{settings.data_dir}|{gate.gated_at}|{summary}"
    return send_report(settings.params.notify, settings.data_dir, body, summary, [at.gate_report, *pages],
                       env=env, key=key, text=plain_text(settings, gate), links=links)
