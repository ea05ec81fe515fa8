"""`mmd …`: one thin command per stage; each reads its params section and calls the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from mmd.config import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Keep multimodal misinformation and hateful-meme detectors fresh.")
# logs and CI are not terminals: give tables room rather than folding every cell
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file to run against.")


def _settings(params: Path) -> Settings:
    try:
        return load_settings(params)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _ingest_table(result) -> Table:
    t = Table(title="ingest", show_lines=False)
    for col in ("source", "in", "accepted", "quarantined", "duplicates", "skipped", "reconciled", "top reasons"):
        t.add_column(col, justify="right" if col not in ("source", "top reasons") else "left")
    for s in result.sources:
        reasons = ", ".join(f"{k}×{v}" for k, v in s.reasons.most_common(3))
        if s.unknown_ratings:
            reasons += f"{', ' if reasons else ''}unknown ratings×{sum(s.unknown_ratings.values())}"
        t.add_row(s.name, str(s.seen), str(s.accepted), str(s.quarantined), str(s.duplicates), str(s.skipped),
                  "yes" if s.reconciled else "[red]NO[/red]", reasons)
    return t


def _validation_table(result) -> Table:
    t = Table(title="validate")
    for col in ("kind", "in", "accepted", "quarantined"):
        t.add_column(col, justify="left" if col == "kind" else "right")
    for kind, v in sorted(result.per_kind.items()):
        t.add_row(kind, str(v["in"]), str(v["accepted"]), str(v["quarantined"]))
    t.add_row("[b]all[/b]", str(result.total), str(result.accepted), str(result.quarantined))
    return t


@app.command()
def ingest(
    params: Path = ParamsOpt,
    source: Optional[list[str]] = typer.Option(None, "--source", "-s", help="Only these sources (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Pull what is new from every enabled source into the items snapshot."""
    from mmd.ingest import run_ingest

    settings = _settings(params)
    try:
        result = run_ingest(settings, only=source, show_progress=not quiet)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print(_ingest_table(result))
    console.print(f"{result.accepted} new items; {result.total_items} in {result.items_path}")


@app.command()
def validate(params: Path = ParamsOpt) -> None:
    """Run the Great Expectations suites; failing rows go to the quarantine with reasons."""
    from mmd.validate import ValidationFailed, run_validate

    settings = _settings(params)
    try:
        result = run_validate(settings)
    except ValidationFailed as exc:
        err.print(f"[red]{exc}[/red]")
        err.print(f"report: {settings.reports_dir / 'validation.html'}")
        raise typer.Exit(1) from None
    console.print(_validation_table(result))
    console.print(f"pass rate {result.pass_rate:.1%}; report {result.html_path}")


@app.command()
def status(params: Path = ParamsOpt, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Per source: items, watermark, quarantine reasons."""
    from mmd.status import collect_status

    info = collect_status(_settings(params))
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        return
    t = Table(title="sources")
    for col in ("source", "type", "enabled", "items", "last run", "watermark", "quarantined", "top reasons"):
        t.add_column(col)
    for s in info["sources"]:
        reasons = ", ".join(f"{k}×{v}" for k, v in list(s["quarantine_reasons"].items())[:3])
        t.add_row(s["name"], s["type"], "yes" if s["enabled"] else "no", str(s["items"]), s["last_run"] or "never",
                  s["watermark"] or "-", str(s["quarantined"]), reasons)
    console.print(t)
    v = info["validation"]
    if v:
        console.print(f"validation: {'passed' if v['passed'] else 'FAILED'}, {v['accepted']}/{v['in']} accepted")
    console.print(f"items: {info['items']}  data: {info['data_dir']}")


@app.command()
def demo(
    params: Path = ParamsOpt,
    fresh: bool = typer.Option(False, "--fresh", help="Regenerate the demo inbox even if it is there."),
) -> None:
    """The main job on the embedded defaults: fill the inbox with demo data, then run every stage."""
    from mmd.demo import generate
    from mmd.ingest import run_ingest
    from mmd.validate import ValidationFailed, run_validate

    settings = _settings(params)
    inboxes = [s for s in settings.params.ingest.sources if s.type == "inbox" and s.enabled]
    if not inboxes:
        err.print("[red]the demo needs an enabled source of type inbox in the params[/red]")
        raise typer.Exit(2)
    inbox = settings.path(inboxes[0].path)
    if fresh or not (inbox / "demo").exists():
        corpus = generate(inbox, settings.params.demo)
        console.print(f"demo inbox: {corpus.memes} memes, {corpus.claims} claims, {corpus.posts} posts "
                      f"(+{corpus.broken} broken on purpose) in {corpus.root}")
    result = run_ingest(settings, show_progress=sys.stderr.isatty())
    console.print(_ingest_table(result))
    try:
        vres = run_validate(settings)
    except ValidationFailed as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(_validation_table(vres))
    out = Table(title="outputs", show_header=False)
    out.add_column("what")
    out.add_column("where")
    out.add_row("items (all ingested)", str(result.items_path))
    out.add_row("items (validated)", str(vres.items_path))
    out.add_row("quarantine (ingest)", str(result.quarantine_path))
    out.add_row("quarantine (validate)", str(vres.quarantine_path))
    out.add_row("validation report", str(vres.html_path))
    out.add_row("ingest metrics", str(settings.reports_dir / "ingest.json"))
    console.print(out)


def main() -> None:  # pragma: no cover
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
