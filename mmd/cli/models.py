"""The detectors' commands: train, predict, evaluate, gate, report; the registry (models, promote, rollback);
moderators' labels."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from mmd.cli.app import ParamsOpt, app, exits_on, log_to_terminal, settings_of
from mmd.cli.data import _expected_errors, _stage


def _family(name: str) -> str:
    from mmd.models.families import all_families

    if name not in all_families():
        from mmd.tables import err

        err.print(f"[red]unknown model {name!r}: one of {', '.join(all_families())}[/red]")
        raise typer.Exit(2)
    return name


@app.command()
def train(
    params: Path = ParamsOpt,
    model: str = typer.Option("cmc", "--model", help="Which detector family (cmc, rgcl, lmm, or a plug-in)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="A CMC variant (default: cmc.variant)."),
    ablation: bool = typer.Option(False, "--ablation", help="Train every variant in cmc.ablation and write the table."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds for --ablation."),
) -> None:
    """Train a detector on the real items plus the selected synthetic set; save it with its metrics."""
    from mmd.models.cmc.config import VARIANTS
    from mmd.models.lmm.model import LMMUnavailable
    from mmd.tables import console, err

    family = _family(model)
    if variant is not None and (family != "cmc" or variant not in VARIANTS):
        err.print(f"[red]--variant is one of CMC's: {', '.join(VARIANTS)}[/red]")
        raise typer.Exit(2)
    if ablation:
        from mmd.layout import ABLATION_TABLE
        from mmd.models.cmc.ablation import run_ablation

        settings = settings_of(params)
        with exits_on(_expected_errors):
            result = run_ablation(settings, seeds=[int(x) for x in seeds.split(",")] if seeds else None,
                                  log=log_to_terminal())
        table = settings.layout.path(ABLATION_TABLE, family="cmc")
        console.print(f"ablation scored on {result['scored_on']} ({len(result['seeds'])} seed(s)):")
        console.print(table.read_text())
        console.print(f"table: {table}")
        return
    with exits_on(LMMUnavailable, code=2), exits_on(_expected_errors):
        _, r = _stage(params, f"train_{family}", **({"variant": variant} if variant else {}))
    console.print(f"model: {r.model_dir}  ({r.seconds:.0f}s" + (f", temperature {r.temperature:.2f})"
                                                             if r.temperature is not None else ")"))


@app.command()
def predict(
    params: Path = ParamsOpt,
    model: str = typer.Option("cmc", "--model", help="Which detector family."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help=".jsonl (text, image, id) or .parquet items; "
                                         "default: the validated items."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Parquet of scores (default under data/predictions)."),
) -> None:
    """Calibrated scores (P(misinformation / harmful)) of the detector in service for new items."""
    from rich.table import Table

    from mmd.models.predict import run_predict
    from mmd.tables import console

    with exits_on(_expected_errors):  # each model's ModelMismatch is a ValueError
        r = run_predict(settings_of(params), _family(model), input, output)
    t = Table(title=f"predict {r.model} ({r.variant})")
    for col in ("items", "predicted 1", "mean score", "quarantined", "missing images", "accuracy", "macro-F1"):
        t.add_column(col, justify="right")
    m = r.metrics or {}
    t.add_row(str(r.items), str(r.predicted_1), f"{r.mean_score:.3f}", str(r.quarantined), str(r.missing_images),
              f"{m['accuracy']:.3f}" if m else "-", f"{m['macro_f1']:.3f}" if m else "-")
    console.print(t)
    console.print(f"scores: {r.output}")


@app.command()
def evaluate(params: Path = ParamsOpt) -> None:
    """Score the newly trained detectors (the challengers) on the fixed holdout, with confidence intervals."""
    from mmd.tables import console

    with exits_on(_expected_errors):
        settings, _ = _stage(params, "evaluate")
    console.print(f"metrics: {settings.layout.evaluate_report}")


@app.command()
def gate(params: Path = ParamsOpt) -> None:
    """Champion against challenger and drift; promote or hold; then the moderators' report."""
    from mmd.tables import console

    with exits_on(_expected_errors):
        settings, _ = _stage(params, "gate")
        from mmd.report import run_report

        page = run_report(settings)
    console.print(f"report: {page}")


@app.command()
def review(params: Path = ParamsOpt) -> None:
    """The champions score what is new since the last queue update; the likeliest and the most uncertain
    items join the moderators' review queue (what `mmd app` shows)."""
    from mmd.tables import console

    with exits_on(_expected_errors):
        settings, _ = _stage(params, "review")
    console.print(f"queue: {settings.layout.review_queue}")


def _registry(params: Path):
    from mmd.registry import Registry

    return Registry(settings_of(params).layout.registry)


@app.command()
def models(
    params: Path = ParamsOpt,
    family: Optional[str] = typer.Argument(None, help="A family (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The registry: versions, the champion, and the history (when, what, why)."""
    from rich.table import Table

    from mmd.registry import RegistryError
    from mmd.tables import console

    reg = _registry(params)
    with exits_on(RegistryError):
        families = [family] if family else reg.families()
        history = reg.history(family)
        if as_json:
            print(json.dumps({"champions": {f: (c.number if (c := reg.champion(f)) else None) for f in families},
                              "versions": {f: [v.to_dict() for v in reg.versions(f)] for f in families},
                              "history": history}, indent=2, default=str))
            return
        t = Table(title="models")
        for col in ("model", "version", "created", "trained", "holdout macro-F1", "holdout (items, id)",
                    "champion then, same holdout", "champion"):
            t.add_column(col)
        holdouts = set()
        for f in families:
            champion = reg.champion(f)
            for v in reg.versions(f):
                m = (v.metrics or {}).get("holdout") or {}
                hid = (v.metrics or {}).get("holdout_id")
                holdouts.add((f, hid))
                # the gate scored the champion of the day on this version's holdout: the comparison that holds
                then = ((_evaluation(v).get("champion") or {}))
                t.add_row(f, f"v{v.number}", v.created_at, str(v.lineage.get("trained_at")),
                          "-" if not m else f"{m['macro_f1']:.3f}",
                          "-" if not m else f"{m.get('n')}, {hid or 'not recorded'}",
                          f"v{then['version']}: {then['holdout']['macro_f1']:.3f}" if (then.get("holdout") or {}).get(
                              "macro_f1") is not None else "-",
                          "yes" if champion and champion.number == v.number else "")
        console.print(t)
        if len(holdouts) > len(families):
            console.print("Versions with another holdout id were measured on other items: compare their macro-F1 "
                          "only through 'champion then, same holdout' (the gate's paired comparison).")
        h = Table(title="history")
        for col in ("when", "model", "event", "version", "from", "by", "why"):
            h.add_column(col)
        for e in history:
            h.add_row(e["at"], e["family"], e["event"], str(e.get("version") or "-"), str(e.get("from_version") or "-"),
                      str(e.get("by") or ""), e.get("reason") or "")
        console.print(h)


def _evaluation(version) -> dict:
    """The gate's evaluation.json of a version (its figures and the champion's on the same holdout)."""
    try:
        return json.loads((version.path / "evaluation.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _who() -> str:
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return f"cli:uid {os.getuid()}"


@app.command()
def promote(
    family: str = typer.Argument(..., help="A family."),
    version: int = typer.Option(..., "--version", "-v", help="The registered version to put in service."),
    reason: str = typer.Option(..., "--reason", help="Why: it is kept in the history."),
    params: Path = ParamsOpt,
) -> None:
    """Put a registered version in service by hand (the gate's decision is overridden; the history says so)."""
    from mmd.registry import RegistryError
    from mmd.tables import console

    reg = _registry(params)
    with exits_on(RegistryError):
        v = reg.promote(family, version, reason, by=_who())
    console.print(f"{family}: v{v.number} is the champion ({v.path})")


@app.command()
def rollback(
    family: str = typer.Argument(..., help="A family."),
    to: Optional[int] = typer.Option(None, "--to", help="A version number (default: the previous champion)."),
    reason: str = typer.Option("", "--reason", help="Why: it is kept in the history."),
    params: Path = ParamsOpt,
) -> None:
    """Put the previous champion (or --to VERSION) back in service."""
    from mmd.registry import RegistryError
    from mmd.tables import console

    reg = _registry(params)
    with exits_on(RegistryError):
        v = reg.rollback(family, to, reason or "rolled back by hand", by=_who())
    console.print(f"{family}: back to v{v.number} ({v.path})")


label_app = typer.Typer(help="Labels from moderators: they join the RGCL retrieval database at once.")
app.add_typer(label_app, name="label")


@label_app.command("add")
def label_add(
    params: Path = ParamsOpt,
    text: Optional[str] = typer.Option(None, "--text", help="The item's text."),
    image: Optional[Path] = typer.Option(None, "--image", help="The item's picture."),
    label: Optional[int] = typer.Option(None, "--label", help="1 = harmful / misinformation, 0 = not."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="A .jsonl of {text, image, label[, id]}."),
    by: str = typer.Option("cli", "--by", help="Who labelled (kept with the label)."),
) -> None:
    """Add labelled items to the RKC database of the RGCL model in service, without retraining."""
    from mmd.models.rgcl.labels import add_labels
    from mmd.tables import console, err

    if input is not None:
        rows = []
        for n, line in enumerate(input.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    err.print(f"[red]{input}:{n}: not JSON ({exc.msg}); nothing was added[/red]")
                    raise typer.Exit(2)
        base = input.resolve().parent
        for r in rows:
            if r.get("image"):
                r["image"] = str(base / r["image"])
    elif text is not None and label is not None:
        rows = [{"text": text, "image": str(image) if image else None, "label": label}]
    else:
        err.print("[red]give --text and --label (and optionally --image), or --input FILE.jsonl[/red]")
        raise typer.Exit(2)
    with exits_on(_expected_errors):
        r = add_labels(settings_of(params), rows, by)
    console.print(f"added {r['added']} labelled item(s); the RKC database holds {r['database']} ({r['labels_file']})")
