"""A version's model card: Markdown (`card.md`) and the same as a page (`card.html`).

What it says: the version and its lineage, the training data, the metrics with their intervals, the
gate's decision, and the family's intended use and limitations (from its registration)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from mmd.pages import png_base64, render
from mmd.registry.provenance import Version

LIMITATIONS = [
    "Trained only on the data listed above; other languages, platforms, topics or meme formats may score "
    "worse than the metrics shown, and the synthetic share of the training data is stated above.",
    "Scores are calibrated on the validation split; that calibration drifts as fresh data drifts.",
    "A decision aid, not a substitute for human review: every flag goes to a moderator or fact-checker.",
]


CONFIG_ESSENTIALS = ("variant", "recipe", "base_model", "scorer", "finetuned", "temperature", "label_names",
                     "best_epoch", "best_epochs")


# evaluate's plots (EvaluateReport.families[f].plots key) -> the file kept beside the version
FIGURES = {"evaluation": "holdout-evaluation.png", "scores": "holdout-scores.png"}
FIGURE_CAPTIONS = {"holdout-evaluation.png": "On the holdout: ROC, reliability of the calibrated scores, score "
                                             "histograms per class, confusion matrix",
                   "holdout-scores.png": "Scores on the holdout"}


def _md(value: Any) -> str:
    """A value as inline Markdown text: HTML escaped, Markdown's special characters backslashed
    (not `_`: Python-Markdown ignores it inside words, and names stay greppable), one line, so a
    caller's string cannot open a tag, a link, code or a new table row."""
    text = " ".join(_fmt(value).split())
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`*\[\]|])", r"\\\1", text)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _code(value: Any) -> str:
    """Hex strings (digests, commits) as code; anything else as escaped text."""
    return f"`{value}`" if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{6,}", value) else _md(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; cells must already be escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _metrics_lines(metrics: dict) -> list[str]:
    """Top-level scalars as one table; each split (a dict) as a table of its scalars with their
    confidence intervals ("ci"), then its per-class table ("per_class")."""
    lines: list[str] = []
    scalars = {k: v for k, v in metrics.items() if _is_scalar(v)}
    if scalars:
        lines += _table(["Metric", "Value"], [[_md(k), _md(v)] for k, v in scalars.items()])
    for split, values in metrics.items():
        if not isinstance(values, dict):
            continue
        lines += [f"### {_md(split)}", ""]
        ci = values.get("ci") if isinstance(values.get("ci"), dict) else {}
        rows = []
        for name, value in values.items():
            if _is_scalar(value):
                interval = ci.get(name)
                shown = (f"[{_fmt(interval[0])}, {_fmt(interval[1])}]"
                         if isinstance(interval, (list, tuple)) and len(interval) == 2 else "—")
                rows.append([_md(name), _md(value), shown])
        if rows:
            lines += _table(["Metric", "Value", "Confidence interval"], rows)
        per_class = values.get("per_class")
        if isinstance(per_class, dict) and per_class:
            columns = sorted({k for v in per_class.values() if isinstance(v, dict) for k in v if _is_scalar(v[k])})
            lines += _table(["Class", *(_md(c) for c in columns)],
                            [[_md(name), *(_md(v.get(c)) for c in columns)]
                             for name, v in per_class.items() if isinstance(v, dict)])
    return lines or ["No metrics recorded.", ""]


def _data_lines(data: Any, label_names: list | None) -> list[str]:
    if not isinstance(data, dict) or not data:
        return ["No training data summary in config.json.", ""]
    splits = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines: list[str] = []
    if splits:
        columns = sorted({k for v in splits.values() for k in v if _is_scalar(v[k])},
                         key=lambda c: (c != "items", c))

        def title(column: str) -> str:
            m = re.fullmatch(r"label_(\d+)", column)
            if m and label_names and int(m.group(1)) < len(label_names):
                return _md(f"{column} ({label_names[int(m.group(1))]})")
            return _md(column)

        lines += _table(["Split", *(title(c) for c in columns)],
                        [[_md(name), *(_md(v.get(c)) for c in columns)] for name, v in splits.items()])
    lines += [f"- {_md(k)}: {_md(v)}" for k, v in data.items() if not isinstance(v, dict)]
    return lines + [""]


def _decision_lines(decision: dict) -> list[str]:
    lines = [f"**Status:** {_md(decision.get('status'))}", ""]
    reasons = decision.get("reasons") or []
    lines += [f"- {_md(r)}" for r in reasons] or ["- no reasons given"]
    lines.append("")
    checks = [c for c in decision.get("checks") or [] if isinstance(c, dict)]
    if checks:
        lines += _table(["Check", "Status", "Score", "Threshold", "Reasons"],
                        [[_md(c.get("name")), _md(c.get("status")), _md(c.get("score")), _md(c.get("threshold")),
                          _md("; ".join(map(str, c.get("reasons") or [])) or None)] for c in checks])
    return lines


def _family(name: str):
    from mmd.models.families import all_families

    return all_families().get(name)


def render_card(version: Version, config: dict, evaluation: dict | None = None,
                decision: dict | None = None) -> str:
    """The model card's Markdown."""
    lin = version.lineage
    essentials = {k: config[k] for k in CONFIG_ESSENTIALS if k in config}
    if isinstance(config.get("rgcl"), dict):
        essentials["predict_with"] = config["rgcl"].get("predict_with")
    lines = [f"# {_md(version.name)} — model card", ""]
    lines += _table(["Field", "Value"], [
        ["Family", _md(version.family)],
        ["Version", f"v{version.number}"],
        ["Digest", f"`{version.digest[:12]}`"],
        ["Registered", _md(version.created_at)],
        ["Trained", _md(config.get("trained_at") or lin.get("trained_at"))],
        ["Encoder", _md(config.get("encoder") or lin.get("encoder"))],
        *[[_md(k.replace("_", " ").capitalize()), _md(v)] for k, v in essentials.items()],
    ])
    lines += ["## Lineage", ""]
    known = [("Data version", "data_version"), ("dvc.lock hash", "dvc_lock"), ("Params hash", "params_hash"),
             ("Code commit", "code_commit"), ("Uncommitted changes", "code_dirty"), ("Model digest", "model_digest")]
    rows = [[name, _code(lin.get(key))] for name, key in known]
    shown = {key for _, key in known} | {"params", "data", "encoder", "trained_at"}
    rows += [[_md(k), _code(v)] for k, v in lin.items() if k not in shown and _is_scalar(v)]
    lines += _table(["Field", "Value"], rows)
    lines += ["## Training data", ""] + _data_lines(config.get("data", lin.get("data")), config.get("label_names"))
    lines += ["## Metrics", ""]
    if evaluation is None:
        lines += ["Registered metrics (from training):", ""]
    lines += _metrics_lines(evaluation if evaluation is not None else version.metrics)
    shown = [(name, what) for name, what in FIGURE_CAPTIONS.items() if (Path(version.path) / name).is_file()]
    lines += [f"![{what}]({name})\n" for name, what in shown]
    if decision is not None:
        lines += ["## Gate decision", ""] + _decision_lines(decision)
    family = _family(version.family)
    lines += ["## Intended use", "", _md(family.intended_use if family else ""), "", "## Limitations", ""]
    lines += [f"- {text}" for text in LIMITATIONS + list(family.limitations if family else ())]
    return "\n".join(lines) + "\n"


def card_page(version: Version, text: str) -> str:
    """The card's Markdown as a page."""
    import markdown

    body = markdown.markdown(text, extensions=["tables"], output_format="html")
    # the figures inlined, so the page reads the same as a file, in the app or attached
    for name in FIGURE_CAPTIONS:
        if f'src="{name}"' in body and (png := png_base64(Path(version.path) / name)):
            body = body.replace(f'src="{name}"', f'src="data:image/png;base64,{png}"')
    return render("card.html", title=f"{version.name} model card", body=body)
