"""The data plane's commands: ingest, validate, status, embed, index, synthesize, select, search, demo;
`mmd stage NAME` (what dvc.yaml runs) and `mmd dvc-yaml`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from mmd.cli.app import ParamsOpt, app, exits_on, log_to_terminal, settings_of


def _stage(params: Path, name: str, **kwargs):
    """Run a stage (its params sections only, as under DVC) and print its table."""
    settings = settings_of(params)  # a config error fails before anything else is imported
    from mmd import stages
    from mmd.tables import console, stage_table

    result = stages.get(name, settings.params.evaluate.families).run(settings, log_to_terminal(), **kwargs)
    console.print(stage_table(name, result))
    return settings, result


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a stage raises for bad input or a missing earlier output: printed, not a traceback."""
    from mmd.encoders import EncoderUnavailable
    from mmd.models.data import TrainingDataError
    from mmd.registry import RegistryError
    from mmd.store import StoreError
    from mmd.synth.scoring import SelectionError

    return (EncoderUnavailable, StoreError, SelectionError, TrainingDataError, RegistryError, FileNotFoundError,
            ValueError)


def _stage_errors() -> tuple[type[BaseException], ...]:
    from mmd.validate import ValidationFailed

    return (*_expected_errors(), ValidationFailed)


@app.command("stage")
def stage_command(name: str = typer.Argument(..., help="A stage of the cycle (dvc.yaml runs this)."),
                  params: Path = ParamsOpt) -> None:
    """Run one stage of the cycle with exactly the params sections its DVC stage declares."""
    from mmd.errors import EXIT_RETRYABLE, Retryable

    try:
        with exits_on(_stage_errors):
            _stage(params, name)
    except Retryable as exc:
        from mmd.tables import err

        err.print(f"[red]{exc}[/red] (transient: the scheduler retries)")
        raise typer.Exit(EXIT_RETRYABLE) from None


@app.command("dvc-yaml")
def dvc_yaml(params: Path = ParamsOpt, write: bool = typer.Option(False, "--write", help="Write dvc.yaml (and "
             "gpu/dvc.yaml) beside the params file instead of printing.")) -> None:
    """dvc.yaml from the stage table and the layout (mmd's own is generated so)."""
    from mmd.dvcfile import render_for, write as write_files

    settings = settings_of(params)
    code = (settings.root / "mmd" / "__init__.py").is_file()  # mmd's own repository: its code is a dependency
    if write:
        for path in write_files(settings, code):
            typer.echo(f"wrote {path}")
    else:
        sys.stdout.write(render_for(settings, code=code))


@app.command()
def ingest(
    params: Path = ParamsOpt,
    source: Optional[list[str]] = typer.Option(None, "--source", "-s", help="Only these sources (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Pull what is new from every enabled source into the items snapshot."""
    from mmd.errors import EXIT_RETRYABLE, Retryable
    from mmd.tables import console

    with exits_on(ValueError, code=2), exits_on(Retryable, code=EXIT_RETRYABLE):
        settings, r = _stage(params, "ingest", only=source, show_progress=not quiet)
    console.print(f"{r.totals.accepted} new items; {r.total_items} in {settings.layout.items_ingested}")


@app.command()
def validate(params: Path = ParamsOpt) -> None:
    """Run the Great Expectations suites; failing rows go to the quarantine with reasons."""
    from mmd.tables import console, err
    from mmd.validate import ValidationFailed

    try:
        settings, r = _stage(params, "validate")
    except ValidationFailed as exc:
        err.print(f"[red]{exc}[/red]")
        err.print(f"report: {settings_of(params).layout.validation_html}")
        raise typer.Exit(1) from None
    console.print(f"pass rate {r.pass_rate:.1%}; report {settings.layout.validation_html}")


@app.command()
def status(params: Path = ParamsOpt, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Per source: items, watermark, quarantine reasons."""
    settings = settings_of(params)  # a config error fails before anything else is imported
    from rich.table import Table

    from mmd.status import collect_status
    from mmd.tables import console

    info = collect_status(settings)
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
def embed(params: Path = ParamsOpt, quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")) -> None:
    """Encode validated items (image, text, mixed vectors); cached content is never encoded twice."""
    from mmd.encoders import EncoderUnavailable

    with exits_on(EncoderUnavailable, code=2):
        _stage(params, "embed", show_progress=not quiet)


@app.command()
def index(
    params: Path = ParamsOpt,
    rebuild: bool = typer.Option(False, "--rebuild", help="Drop the collections and rebuild them from the embeddings."),
) -> None:
    """Upsert new and changed items into the vector store; remove items that left."""
    from mmd.store import StoreError

    with exits_on(StoreError, FileNotFoundError):
        _stage(params, "index", rebuild=rebuild)


@app.command()
def synthesize(params: Path = ParamsOpt) -> None:
    """Generate synthetic items from what is new among the real ones into the pool (with provenance)."""
    with exits_on(_expected_errors):
        _stage(params, "synthesize")


@app.command()
def select(
    params: Path = ParamsOpt,
    method: Optional[str] = typer.Option(None, "--method", "-m", help="random, semsim, dissim or hybrid (default: params)."),
    k: Optional[int] = typer.Option(None, "--k", "-k", help="How many to select (default: params)."),
) -> None:
    """Select the k synthetic items closest to the live real distribution in the store."""
    with exits_on(_expected_errors):
        _stage(params, "select", method=method, k=k)


@app.command()
def search(
    text: str = typer.Argument("", help="Query text."),
    image: Optional[Path] = typer.Option(None, "--image", help="Query image."),
    k: int = typer.Option(10, "-k", help="How many hits."),
    kind: Optional[str] = typer.Option(None, help="Only this kind (fact_check, meme, post)."),
    label: Optional[int] = typer.Option(None, help="Only this label (0 or 1)."),
    params: Path = ParamsOpt,
) -> None:
    """Top hits for a text and/or an image, with scores, for a moderator to look at."""
    from rich.table import Table

    from mmd.search import search_items
    from mmd.tables import console, err

    if not text and image is None:
        err.print("[red]give a query text, an --image, or both[/red]")
        raise typer.Exit(2)
    filters = {k_: v for k_, v in (("kind", kind), ("label", label)) if v is not None}
    with exits_on(_expected_errors):
        hits = search_items(settings_of(params), text, image, k, filters or None)
    t = Table(title=f"top {k} for {text!r}" + (f" + {image.name}" if image else ""))
    for col in ("#", "score", "kind", "label", "source", "id", "text", "image"):
        t.add_column(col)
    for n, h in enumerate(hits, 1):
        p = h.payload
        t.add_row(str(n), f"{h.score:.3f}", str(p.get("kind")), str(p.get("label")), str(p.get("source")), h.id,
                  (p.get("text") or "")[:70].replace("\n", " "), str(p.get("image_path") or ""))
    console.print(t)


@app.command()
def demo(
    params: Path = ParamsOpt,
    fresh: bool = typer.Option(False, "--fresh", help="Regenerate the demo inbox even if it is there."),
    batch: int = typer.Option(0, "--batch", min=0, help="N > 0: a later batch of new demo items (inbox/demo-batchN)."),
) -> None:
    """Write the synthetic demo inbox. `make demo` then runs one whole cycle on it (python -m flows.demo);
    `mmd demo --batch 1` adds a fresh batch, so the next cycle has something to gate against the champion."""
    from mmd.config import ConfigError
    from mmd.demo import write_demo_inbox
    from mmd.tables import console

    with exits_on(ConfigError, code=2):
        corpus = write_demo_inbox(settings_of(params), fresh, batch)
    if corpus is not None:
        console.print(f"demo inbox: {corpus.memes} memes, {corpus.claims} claims, {corpus.posts} posts "
                      f"(+{corpus.broken} broken on purpose) in {corpus.root}")


@app.command()
def init(
    folder: Path = typer.Argument(..., help="The new project's folder (created)."),
    from_: Optional[Path] = typer.Option(None, "--from", help="A params file to start from (its extends: followed, "
                                         "its source paths made absolute); default: the built-in defaults."),
    remote: Optional[str] = typer.Option(None, "--remote", help="The DVC remote (default: .dvc-storage/ inside)."),
) -> None:
    """A deployment's own git + DVC project: params.yaml, the generated dvc.yaml, a DVC remote, a README."""
    from mmd.config import ConfigError
    from mmd.project import init_project
    from mmd.tables import console

    with exits_on(ConfigError, code=2), exits_on(RuntimeError, FileNotFoundError):
        project = init_project(folder, from_, remote)
    console.print(f"project {project.root}: params {project.params_file}, DVC remote {project.remote}, "
                  f"commit {project.commit[:12]}")
    console.print(f"next: edit ingest.sources in {project.params_file}, then "
                  f"python -m flows.retrain --params {project.params_file}")
