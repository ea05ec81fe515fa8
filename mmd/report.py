"""The moderators' report: one self-contained HTML page per cycle.

What came in, what was quarantined and why, the drift figures, each family's gate
decision with its reasons, and the champion against the challenger. Figures are inlined
(base64 PNG) so the page reads the same as an e-mail body or a file; the detailed drift
reports are separate pages beside it (`drift/`), attached to the e-mail.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from mmd.config import Settings

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f5f5f5}.passed,.promote,.keep{color:#126b2f;font-weight:600}.failed{color:#a40e26;font-weight:600}
.could_not_run,.hold{color:#8a5a00;font-weight:600}.skipped{color:#777}.muted{color:#777;font-size:.9em}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else _e(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _img(path: str | None) -> str:
    if not path or not Path(path).is_file():
        return ""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{_e(Path(path).name)}" src="data:image/png;base64,{data}">'


def _intake(settings: Settings) -> str:
    from mmd.ingest import paths as ingest_paths
    from mmd.validate.run import paths as validate_paths

    ingest, validation = _read(ingest_paths(settings)["report"]), _read(validate_paths(settings)["report"])
    parts = ["<h2>What came in</h2>"]
    if ingest:
        parts.append(f'<p class="muted">ingest run {_e(ingest.get("started_at"))} to {_e(ingest.get("finished_at"))}; '
                     f'{_e(ingest.get("total_items"))} items held in all</p>')
        parts.append(_table(["source", "in", "accepted", "quarantined", "duplicates", "skipped", "error"],
                            [[_e(s["name"]), _e(s["in"]), _e(s["accepted"]), _e(s["quarantined"]), _e(s["duplicates"]),
                              _e(s["skipped"]), _e(s.get("error") or "")] for s in ingest.get("sources", [])]))
    else:
        parts.append("<p>No ingest report.</p>")
    parts.append("<h2>What was quarantined, and why</h2>")
    reasons = [[_e("ingest"), _e(s["name"]), _e(code), _e(n)] for s in ingest.get("sources", [])
               for code, n in sorted(s.get("quarantine_reasons", {}).items())]
    reasons += [[_e("validate"), "", _e(code), _e(n)] for code, n in sorted(validation.get("quarantine_reasons", {}).items())]
    parts.append(_table(["stage", "source", "reason", "records"], reasons) if reasons else "<p>Nothing.</p>")
    unknown = {k: v for s in ingest.get("sources", []) for k, v in s.get("unknown_ratings", {}).items()}
    if unknown:
        parts.append("<p>Verdicts not in the ratings table (items kept, unlabelled): "
                     + ", ".join(f"{_e(k)} ({v})" for k, v in sorted(unknown.items())) + "</p>")
    if validation:
        parts.append(f"<p>Validation: {_e(validation.get('accepted'))} of {_e(validation.get('in'))} rows pass "
                     f"({validation.get('pass_rate', 0):.1%}); quarantine records keep every rejected row with its reason "
                     f"under <code>data/*/quarantine.parquet</code>.</p>")
    return "".join(parts)


def _metric_cell(m: dict | None, key: str) -> str:
    if not m:
        return "n/a"
    ci = (m.get("ci") or {}).get(key)
    return _num(m.get(key)) + (f' <span class="muted">[{ci[0]:.3f}, {ci[1]:.3f}]</span>' if ci else "")


def _family(settings: Settings, family: str, d: dict, figures: dict) -> str:
    parts = [f'<h2>{_e(family.upper())}: <span class="{_e(d.get("status"))}">{_e(d.get("status"))}</span> '
             f'&rarr; <span class="{_e(d.get("action"))}">{_e(d.get("action"))}</span></h2>']
    version, after = d.get("version") or {}, d.get("champion_after")
    parts.append(f'<p>Challenger: version {_e(version.get("number"))} (trained {_e((d.get("challenger") or {}).get("trained_at"))}); '
                 f'champion now: {"version " + _e(after) if after is not None else "none"}.</p>')
    parts.append("<ul>" + "".join(f"<li>{_e(r)}</li>" for r in d.get("reasons", [])) + "</ul>")
    rows = []
    for c in d.get("checks", []):
        f = c.get("figures") or {}
        link = f' <a href="{_e(Path(c["html"]).relative_to(settings.reports_dir))}">report</a>' \
            if c.get("html") and Path(c["html"]).is_relative_to(settings.reports_dir) else ""
        rows.append([_e(c["name"]), f'<span class="{_e(c["status"])}">{_e(c["status"])}</span>',
                     "enforced" if c.get("enforced") else "reported", _num(f.get("score")), _num(f.get("threshold")),
                     "<br>".join(_e(r) for r in c.get("reasons", [])) + link])
    parts.append(_table(["check", "status", "mode", "figure", "threshold", "reasons"], rows))
    metrics = d.get("metrics") or {}
    chal, champ = metrics.get("challenger") or {}, metrics.get("champion") or {}
    names = list(settings.params.train.label_names)
    table = []
    for label, m in (("challenger, holdout", chal.get("holdout")), ("champion, holdout", champ.get("holdout")),
                     ("challenger, fresh batch", chal.get("fresh")), ("champion, fresh batch", champ.get("fresh"))):
        if label.startswith("champion") and not champ:
            continue
        table.append([_e(label), _e(m["n"]) if m else "0"] + [_metric_cell(m, k) for k in ("accuracy", "macro_f1", "auroc")]
                     + [_num(((m or {}).get("per_class") or {}).get(n, {}).get("f1")) for n in names])
    parts.append("<h3>Champion against challenger</h3>" + _table(
        ["model, items", "n", "accuracy", "macro-F1", "AUROC"] + [f"F1 {n}" for n in names], table))
    delta = d.get("delta")
    if delta and delta.get("delta") is not None:
        ci = delta.get("ci")
        parts.append(f"<p>{_e(delta['metric'])} challenger − champion: {delta['delta']:+.3f}"
                     + (f" (95% interval {ci[0]:+.3f} to {ci[1]:+.3f}, paired bootstrap)" if ci else "") + "</p>")
    fresh = d.get("fresh_batch") or {}
    parts.append(f'<p class="muted">Fresh batch: {_e(fresh.get("items"))} items ({_e(fresh.get("labelled"))} labelled) '
                 f'ingested after {_e(fresh.get("since") or "the beginning")}.</p>')
    parts.append(_img((figures or {}).get("evaluation")) + _img((figures or {}).get("scores")))
    return "".join(parts)


def render_cycle_report(settings: Settings, gate: dict) -> str:
    from mmd.evaluate.evaluate import paths as eval_paths

    evaluation = _read(eval_paths(settings)["report"])
    summary = _table(["family", "decision", "action", "champion now"],
                     [[_e(f), f'<span class="{_e(d.get("status"))}">{_e(d.get("status"))}</span>',
                       f'<span class="{_e(d.get("action"))}">{_e(d.get("action"))}</span>',
                       _e(d.get("champion_after", "none"))] for f, d in gate.get("families", {}).items()])
    body = [f"<h1>mmd cycle report, {_e(gate.get('gated_at'))}</h1>", summary, _intake(settings)]
    for family, d in gate.get("families", {}).items():
        figures = ((evaluation.get("families") or {}).get(family) or {}).get("plots")
        body.append(_family(settings, family, d, figures))
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>mmd cycle report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")


def write_cycle_report(settings: Settings, gate: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_cycle_report(settings, gate), encoding="utf-8")
    tmp.replace(path)
    return path


def send_cycle_report(settings: Settings, gate: dict, env=None):
    """The cycle report by e-mail (`notify` in params): the page as the body, the gate's JSON and each
    family's data- and embedding-drift pages attached; queued in the outbox when it cannot go out."""
    from mmd.gate import paths as gate_paths
    from mmd.notify import send_report

    page = Path(gate.get("report_html") or gate_paths(settings)["cycle"])
    body = page.read_text(encoding="utf-8") if page.is_file() else render_cycle_report(settings, gate)
    summary = ", ".join(f"{f} {d.get('action')}" for f, d in gate.get("families", {}).items()) or "no models"
    drift = gate_paths(settings)["drift"]
    attachments = [gate_paths(settings)["report"]] + sorted(
        p for f in gate.get("families", {}) for p in (drift / f"{f}-data.html", drift / f"{f}-embeddings.html")
        if p.is_file())
    # one message per gate decision: a resumed cycle whose gate DVC skipped does not mail it twice
    key = f"{settings.data_dir}|{gate.get('gated_at')}|{summary}"
    return send_report(settings.params.notify, settings.data_dir, body, summary, attachments, env=env, key=key)
