"""`mmd …`: one thin command per stage; each reads its params section and calls the library."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.console import Console
from rich.table import Table

from mmd.config import ConfigError, Settings, load_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Keep multimodal misinformation and hateful-meme detectors fresh.")
# logs and CI are not terminals: give tables room rather than folding every cell
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

ParamsOpt = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file to run against.")


@contextlib.contextmanager
def _exits_on(*errors: type[BaseException], code: int = 1) -> Iterator[None]:
    """Expected failures (bad input, a missing stage output) print their message and exit with `code`."""
    try:
        yield
    except errors as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(code) from None


def _settings(params: Path) -> Settings:
    with _exits_on(ConfigError, code=2):
        return load_settings(params)


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
    with _exits_on(ValueError, code=2):
        result = run_ingest(settings, only=source, show_progress=not quiet)
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
def embed(params: Path = ParamsOpt, quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars.")) -> None:
    """Encode validated items (image, text, mixed vectors); cached content is never encoded twice."""
    from mmd.embed import run_embed
    from mmd.encoders import EncoderUnavailable

    with _exits_on(EncoderUnavailable, code=2):
        r = run_embed(_settings(params), show_progress=not quiet)
    console.print(_embed_table(r))


def _embed_table(r) -> Table:
    t = Table(title=f"embed ({r.encoder})")
    for col in ("items", "embedded", "quarantined", "encoded texts", "encoded images", "from cache", "seconds"):
        t.add_column(col, justify="right")
    t.add_row(str(r.items), str(r.embedded), str(r.quarantined), str(r.encoded_texts), str(r.encoded_images),
              str(r.cached_texts + r.cached_images), f"{r.seconds:.1f}")
    return t


def _index_table(r) -> Table:
    t = Table(title=f"index ({r.backend}: {r.collection})")
    for col in ("points", "upserted", "deleted", "unchanged", "rebuilt", "seconds"):
        t.add_column(col, justify="right")
    t.add_row(str(r.total), str(r.upserted), str(r.deleted), str(r.unchanged), "yes" if r.rebuilt else "no", f"{r.seconds:.1f}")
    return t


@app.command()
def index(
    params: Path = ParamsOpt,
    rebuild: bool = typer.Option(False, "--rebuild", help="Drop the collections and rebuild them from the embeddings."),
) -> None:
    """Upsert new and changed items into the vector store; remove items that left."""
    from mmd.index import run_index
    from mmd.store import StoreError

    with _exits_on(StoreError, FileNotFoundError):
        r = run_index(_settings(params), rebuild=rebuild)
    console.print(_index_table(r))


@app.command()
def synthesize(params: Path = ParamsOpt) -> None:
    """Generate synthetic items from what is new among the real ones into the pool (with provenance)."""
    from mmd.encoders import EncoderUnavailable
    from mmd.store import StoreError
    from mmd.synth.generate import run_synthesize

    with _exits_on(EncoderUnavailable, StoreError, FileNotFoundError, ValueError):
        r = run_synthesize(_settings(params))
    console.print(_synthesize_table(r))


def _synthesize_table(r) -> Table:
    t = Table(title=f"synthesize (pool {r.pool_before} -> {r.pool_after})")
    for col in ("generator", "new parents", "attempted", "produced", "deferred", "labels", "no output / skipped"):
        t.add_column(col, justify="left" if col in ("generator", "labels", "no output / skipped") else "right")
    for name, g in r.generators.items():
        why = g.skipped or ", ".join(f"{k}×{v}" for k, v in g.to_dict()["no_output"].items())
        labels = ", ".join(f"{k}: {v}" for k, v in g.to_dict()["labels"].items())
        t.add_row(name, str(g.parents), str(g.attempted), str(g.produced), str(g.deferred), labels, why)
    return t


@app.command()
def select(
    params: Path = ParamsOpt,
    method: Optional[str] = typer.Option(None, "--method", "-m", help="random, semsim, dissim or hybrid (default: params)."),
    k: Optional[int] = typer.Option(None, "--k", "-k", help="How many to select (default: params)."),
) -> None:
    """Select the k synthetic items closest to the live real distribution in the store."""
    from mmd.store import StoreError
    from mmd.synth.scoring import SelectionError
    from mmd.synth.select import run_select

    with _exits_on(SelectionError, StoreError, FileNotFoundError):
        r = run_select(_settings(params), method=method, k=k)
    console.print(_select_table(r))


def _select_table(r) -> Table:
    t = Table(title=f"select ({r.method}, ranked by {r.ranked_by})")
    for col in ("k", "selected", "candidates", "real target", "labels", "divergence to real", "random's", "seconds"):
        t.add_column(col, justify="left" if col == "labels" else "right")
    t.add_row(str(r.k), str(r.selected), str(r.candidates), f"{r.target_used}/{r.target}",
              ", ".join(f"{k}: {v}" for k, v in r.labels.items()), f"{r.divergence_selected:.4f}",
              f"{r.divergence_random:.4f}", f"{r.seconds:.1f}")
    return t


@app.command()
def train(
    params: Path = ParamsOpt,
    model: str = typer.Option("cmc", "--model", help="Which detector: cmc, rgcl or lmm."),
    variant: Optional[str] = typer.Option(None, "--variant", help="A CMC variant (default: cmc.variant)."),
    ablation: bool = typer.Option(False, "--ablation", help="Train every variant in cmc.ablation and write the table."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds for --ablation."),
) -> None:
    """Train a detector on the real items plus the selected synthetic set; save it with its metrics."""
    from mmd.encoders import EncoderUnavailable
    from mmd.models.cmc.config import VARIANTS
    from mmd.models.cmc.train import paths as cmc_paths, run_ablation, run_train_cmc
    from mmd.models.data import TrainingDataError

    if model not in ("cmc", "rgcl", "lmm"):
        err.print(f"[red]unknown model {model!r}: cmc, rgcl or lmm[/red]")
        raise typer.Exit(2)
    if variant is not None and variant not in VARIANTS:
        err.print(f"[red]unknown variant {variant!r}: one of {', '.join(VARIANTS)}[/red]")
        raise typer.Exit(2)
    settings = _settings(params)
    log = (lambda m: err.print(m)) if sys.stderr.isatty() else None
    with _exits_on(TrainingDataError, EncoderUnavailable, FileNotFoundError, ValueError):
        if ablation:
            seed_list = [int(x) for x in seeds.split(",")] if seeds else None
            result = run_ablation(settings, seeds=seed_list, log=log)
            console.print(f"ablation scored on {result['scored_on']} ({len(result['seeds'])} seed(s)):")
            console.print(cmc_paths(settings)["ablation_table"].read_text())
            console.print(f"table: {cmc_paths(settings)['ablation_table']}")
            return
        if model == "lmm":
            from mmd.models.lmm.model import LMMUnavailable
            from mmd.models.lmm.train import run_train_lmm

            with _exits_on(LMMUnavailable, code=2):
                report = run_train_lmm(settings, log=log)
            console.print(f"train lmm ({report['recipe']} on {report['base_model']}) in {report['seconds']:.0f}s: "
                          f"{report['model_dir']}")
            return
        if model == "rgcl":
            from mmd.models.rgcl.train import run_train_rgcl
            from mmd.store import StoreError

            with _exits_on(StoreError):
                report = run_train_rgcl(settings, log=log)
        else:
            report = run_train_cmc(settings, variant, log=log)
    name = f"train {model}" + (f" ({report['variant']})" if model == "cmc" else "")
    t = Table(title=name)
    for col in ("split", "scorer", "items", "accuracy", "macro-F1", "AUROC", "ECE"):
        t.add_column(col, justify="right")
    for role in ("val", "test"):
        scored = report.get(role)
        if not scored:
            continue
        for scorer, m in (scored.items() if model == "rgcl" else [(model, scored)]):
            t.add_row(role, scorer, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}",
                      "-" if m["auroc"] is None else f"{m['auroc']:.3f}", f"{m['ece']:.3f}")
    console.print(t)
    console.print(f"model: {report['model_dir']}  (temperature {report['temperature']:.2f}, {report['seconds']:.0f}s)")


@app.command()
def predict(
    params: Path = ParamsOpt,
    model: str = typer.Option("cmc", "--model", help="Which detector: cmc, rgcl or lmm."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help=".jsonl (text, image, id) or .parquet items; "
                                         "default: the validated items."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Parquet of scores (default under data/predictions)."),
) -> None:
    """Calibrated scores (P(misinformation / harmful)) of a trained detector for new items."""
    from mmd.encoders import EncoderUnavailable
    from mmd.models.predict import run_predict
    from mmd.store import StoreError

    # each model's ModelMismatch is a ValueError
    with _exits_on(EncoderUnavailable, StoreError, FileNotFoundError, ValueError):
        r = run_predict(_settings(params), model, input, output)
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
    from mmd.encoders import EncoderUnavailable
    from mmd.evaluate.evaluate import paths as eval_paths, run_evaluate
    from mmd.store import StoreError

    settings = _settings(params)
    with _exits_on(EncoderUnavailable, StoreError, FileNotFoundError, ValueError):
        report = run_evaluate(settings)
    t = Table(title=f"evaluate: holdout of {report['holdout']['items']} items")
    for col in ("model", "items", "accuracy", "macro-F1", "AUROC", "95% CI macro-F1"):
        t.add_column(col, justify="right")
    for family, r in report["families"].items():
        m = r.get("holdout")
        if not m:
            t.add_row(family, "-", "-", "-", "-", r.get("skipped") or r.get("note", ""))
            continue
        ci = (m.get("ci") or {}).get("macro_f1")
        t.add_row(family, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['macro_f1']:.3f}",
                  "-" if m["auroc"] is None else f"{m['auroc']:.3f}", f"{ci[0]:.3f} to {ci[1]:.3f}" if ci else "-")
    console.print(t)
    console.print(f"metrics: {eval_paths(settings)['report']}")


def _decision_table(report: dict) -> Table:
    t = Table(title="gate")
    for col in ("model", "decision", "action", "champion", "reasons"):
        t.add_column(col)
    for family, d in report["families"].items():
        t.add_row(family, d["status"], d["action"], "-" if d.get("champion_after") is None else f"v{d['champion_after']}",
                  "\n".join(d.get("reasons", [])))
    return t


@app.command()
def gate(params: Path = ParamsOpt) -> None:
    """Champion against challenger and drift; promote or hold; write the moderators' report."""
    from mmd.encoders import EncoderUnavailable
    from mmd.registry import RegistryError
    from mmd.store import StoreError

    from mmd.gate import run_gate

    settings = _settings(params)
    with _exits_on(EncoderUnavailable, StoreError, RegistryError, FileNotFoundError, ValueError):
        report = run_gate(settings)
    console.print(_decision_table(report))
    console.print(f"report: {report['report_html']}")


def _registry(params: Path):
    from mmd.registry import Registry, registry_root

    return Registry(registry_root(_settings(params)))


@app.command()
def models(
    params: Path = ParamsOpt,
    family: Optional[str] = typer.Argument(None, help="cmc, rgcl or lmm (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The registry: versions, the champion, and the history (when, what, why)."""
    from mmd.registry import RegistryError

    reg = _registry(params)
    with _exits_on(RegistryError):
        families = [family] if family else reg.families()
        history = reg.history(family)
        if as_json:
            print(json.dumps({"champions": {f: (c.number if (c := reg.champion(f)) else None) for f in families},
                              "versions": {f: [v.to_dict() for v in reg.versions(f)] for f in families},
                              "history": history}, indent=2, default=str))
            return
        t = Table(title="models")
        for col in ("model", "version", "created", "trained", "holdout macro-F1", "champion"):
            t.add_column(col)
        for f in families:
            champion = reg.champion(f)
            for v in reg.versions(f):
                m = (v.metrics or {}).get("holdout") or {}
                t.add_row(f, f"v{v.number}", v.created_at, str(v.lineage.get("trained_at")),
                          "-" if not m else f"{m['macro_f1']:.3f}", "yes" if champion and champion.number == v.number else "")
        console.print(t)
        h = Table(title="history")
        for col in ("when", "model", "event", "version", "from", "by", "why"):
            h.add_column(col)
        for e in history:
            h.add_row(e["at"], e["family"], e["event"], str(e.get("version") or "-"), str(e.get("from_version") or "-"),
                      str(e.get("by") or ""), e.get("reason") or "")
        console.print(h)


@app.command()
def promote(
    family: str = typer.Argument(..., help="cmc, rgcl or lmm."),
    version: int = typer.Option(..., "--version", "-v", help="The registered version to put in service."),
    reason: str = typer.Option(..., "--reason", help="Why: it is kept in the history."),
    params: Path = ParamsOpt,
) -> None:
    """Put a registered version in service by hand (the gate's decision is overridden; the history says so)."""
    from mmd.registry import RegistryError

    reg = _registry(params)
    with _exits_on(RegistryError):
        v = reg.promote(family, version, reason, by=f"cli:{os.environ.get('USER', 'unknown')}")
    console.print(f"{family}: v{v.number} is the champion ({v.path})")


@app.command()
def rollback(
    family: str = typer.Argument(..., help="cmc, rgcl or lmm."),
    to: Optional[int] = typer.Option(None, "--to", help="A version number (default: the previous champion)."),
    reason: str = typer.Option("", "--reason", help="Why: it is kept in the history."),
    params: Path = ParamsOpt,
) -> None:
    """Put the previous champion (or --to VERSION) back in service."""
    from mmd.registry import RegistryError

    reg = _registry(params)
    with _exits_on(RegistryError):
        v = reg.rollback(family, to, reason or "rolled back by hand", by=f"cli:{os.environ.get('USER', 'unknown')}")
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
    """Add labelled items to the RKC database of the trained RGCL model, without retraining."""
    from mmd.encoders import EncoderUnavailable
    from mmd.models.rgcl.train import add_labels
    from mmd.store import StoreError

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
    with _exits_on(EncoderUnavailable, StoreError, FileNotFoundError, ValueError):
        r = add_labels(_settings(params), rows, by)
    console.print(f"added {r['added']} labelled item(s); the RKC database holds {r['database']} ({r['labels_file']})")


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
    from mmd.encoders import EncoderUnavailable
    from mmd.search import search_items
    from mmd.store import StoreError

    if not text and image is None:
        err.print("[red]give a query text, an --image, or both[/red]")
        raise typer.Exit(2)
    filters = {k_: v for k_, v in (("kind", kind), ("label", label)) if v is not None}
    with _exits_on(StoreError, EncoderUnavailable, FileNotFoundError, ValueError):
        hits = search_items(_settings(params), text, image, k, filters or None)
    t = Table(title=f"top {k} for {text!r}" + (f" + {image.name}" if image else ""))
    for col in ("#", "score", "kind", "label", "source", "id", "text", "image"):
        t.add_column(col)
    for n, h in enumerate(hits, 1):
        p = h.payload
        t.add_row(str(n), f"{h.score:.3f}", str(p.get("kind")), str(p.get("label")), str(p.get("source")), h.id,
                  (p.get("text") or "")[:70].replace("\n", " "), str(p.get("image_path") or ""))
    console.print(t)


def write_demo_inbox(settings: Settings, fresh: bool = False, batch: int = 0) -> None:
    """The demo corpus in the params' first inbox source (kept when it is there, unless `fresh`);
    ConfigError when the params have no enabled inbox source."""
    from mmd.demo import generate

    inboxes = [s for s in settings.params.ingest.sources if s.type == "inbox" and s.enabled]
    if not inboxes:
        raise ConfigError(f"{settings.params_file}: the demo needs an enabled source of type inbox in the params")
    inbox = settings.path(inboxes[0].path)
    folder = inbox / ("demo" if batch == 0 else f"demo-batch{batch}")
    if fresh or not folder.exists():
        corpus = generate(inbox, settings.params.demo, batch=batch)
        console.print(f"demo inbox: {corpus.memes} memes, {corpus.claims} claims, {corpus.posts} posts "
                      f"(+{corpus.broken} broken on purpose) in {corpus.root}")


@app.command()
def demo(
    params: Path = ParamsOpt,
    fresh: bool = typer.Option(False, "--fresh", help="Regenerate the demo inbox even if it is there."),
    batch: int = typer.Option(0, "--batch", min=0, help="N > 0: a later batch of new demo items (inbox/demo-batchN)."),
) -> None:
    """Write the synthetic demo inbox. `make demo` then runs one whole cycle on it (python -m flows.demo);
    `mmd demo --batch 1` adds a fresh batch, so the next cycle has something to gate against the champion."""
    settings = _settings(params)
    with _exits_on(ConfigError, code=2):
        write_demo_inbox(settings, fresh, batch)


def cycle_tables(settings: Settings, ran: dict) -> list[Table]:
    """A retrain cycle's summary: one row per stage with its figures, the gate's decisions, and where
    every output (the report and the e-mail among them) is."""
    from mmd.cycle import summary_rows
    from mmd.embed import paths as embed_paths
    from mmd.evaluate.evaluate import model_dir, paths as eval_paths
    from mmd.gate import paths as gate_paths
    from mmd.ingest import paths as ingest_paths
    from mmd.synth.generate import paths as synth_paths
    from mmd.synth.select import paths as select_paths
    from mmd.validate.run import paths as validate_paths

    t = Table(title="cycle")
    for col in ("stage", "how", "status", "seconds", "figures"):
        t.add_column(col, justify="right" if col == "seconds" else "left")
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
    validated, evaluated, gated = validate_paths(settings), eval_paths(settings), gate_paths(settings)
    for what, where in (
        ("items (validated)", validated["items"]),
        ("quarantine (ingest, validate)", f"{ingest_paths(settings)['quarantine']}, {validated['quarantine']}"),
        ("validation report", validated["html"]),
        ("embeddings", embed_paths(settings)["vectors"]),
        (f"vector store ({settings.params.index.backend})", settings.data_dir / settings.params.index.path),
        ("synthetic pool, selected set", f"{synth_paths(settings)['pool']}, {select_paths(settings)['selected']}"),
        ("models", ", ".join(str(model_dir(settings, f)) for f in settings.params.evaluate.families)),
        ("holdout evaluation", f"{evaluated['report']}, {evaluated['plots']}/"),
        ("gate decisions, drift", f"{gated['report']}, {gated['drift']}/"),
        ("model registry", gated["registry"]),
        ("moderators' report", gated["cycle"]),
        ("e-mail to moderators", mail.get("path") or mail.get("outbox") or "-"),
    ):
        out.add_row(what, str(where))
    gate = (ran.get("gate") or {}).get("report") or {}
    return [t] + ([_decision_table(gate)] if gate.get("families") else []) + [out]


def main() -> None:  # pragma: no cover
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
