"""Where everything lives: every path of every stage, in one place, and each stage's DVC view of them.

A path is a `Loc`: a folder root (`data` or `reports`, the params' `paths` section) and a path under
it, possibly with a `{family}` field. Code asks a `Layout` (built from the settings) for resolved
paths; `dvc.yaml` is generated from the same `Loc`s (`mmd.dvcfile`), so the two cannot disagree
(a test compares them).

`STAGE_IO` says, for every stage, what it reads (deps) and writes (outs, metrics, plots) and how DVC
should treat each output (persisted between runs, cached or left to git). The training stage of a
detector family is derived from the family (`train_io`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

Root = Literal["data", "reports"]


@dataclass(frozen=True)
class Loc:
    """A path under one of the two roots; `{family}` is filled by `of`."""

    root: Root
    rel: str

    def of(self, **fields: str) -> "Loc":
        return Loc(self.root, self.rel.format(**fields))

    @property
    def dvc(self) -> str:
        """As dvc.yaml writes it: `${paths.data}/…`, templated from the params file."""
        return f"${{paths.{self.root}}}/{self.rel}"


def _d(rel: str) -> Loc:
    return Loc("data", rel)


def _r(rel: str) -> Loc:
    return Loc("reports", rel)


# --------------------------------------------------------------------------- every path
# ingest
INGESTED = _d("ingested")
ITEMS_INGESTED = _d("ingested/items.parquet")
INGEST_QUARANTINE = _d("ingested/quarantine.parquet")
DUPLICATES = _d("ingested/duplicates.parquet")
INGEST_RAW = _d("ingested/raw")                       # raw inputs too large to keep inline
IMAGES = _d("images")                                 # content-addressed pictures of every item
STATE = _d("state")
WATERMARKS = _d("state/watermarks.json")
INGEST_REPORT = _r("ingest.json")
# validate
VALIDATED = _d("validated")
ITEMS = _d("validated/items.parquet")                 # what every later stage reads
VALIDATE_QUARANTINE = _d("validated/quarantine.parquet")
VALIDATE_RAW = _d("validated/raw")
VALIDATION_REPORT = _r("validation.json")
VALIDATION_HTML = _r("validation.html")
VALIDATION_DOCS = _r("validation-docs")              # Great Expectations' Data Docs of the last run
VALIDATE_STATE = _d("validated/state.json")          # which rules validated the snapshot (incremental runs)
# embed, index
VECTORS = _d("embeddings/items.parquet")
EMBED_CACHE = _d("embeddings/cache")
EMBED_QUARANTINE = _d("embeddings/quarantine.parquet")
EMBED_REPORT = _r("embed.json")
INDEXED = _d("embeddings/indexed.json")               # what the store holds (a content digest)
INDEX_REPORT = _r("index.json")
# synthesize, select
SYNTHETIC = _d("synthetic")
POOL = _d("synthetic/pool.parquet")
POOL_VECTORS = _d("synthetic/vectors.parquet")
ATTEMPTS = _d("synthetic/attempts.parquet")
SYNTHETIC_IMAGES = _d("synthetic/images")
SYNTHESIZE_REPORT = _r("synthesize.json")
SELECTED_DIR = _d("selected")
SELECTED = _d("selected/selected.parquet")
SELECTED_FEATURES = _d("selected/features.parquet")
SELECTION_SCORES = _d("selected/scores.parquet")
SELECT_REPORT = _r("select.json")
# train (per family)
MODEL = _d("models/{family}")                         # the newest trained model: the challenger
TRAIN_REPORT = _r("train_{family}.json")
TRAIN_PLOTS = _r("{family}")
ABLATION = _r("{family}-ablation.json")
ABLATION_TABLE = _r("{family}-ablation.md")
# evaluate
EVALUATION = _d("evaluation")
EVALUATION_SCORES = _d("evaluation/{family}.parquet")
EVALUATE_REPORT = _r("evaluate.json")
EVALUATE_PLOTS = _r("evaluate")
EVALUATE_ROC = _r("evaluate/roc")
EVALUATE_CONFUSION = _r("evaluate/confusion")
EVALUATE_FIGURES = _r("evaluate/figures")
# gate, report
REGISTRY = _d("registry")
GATE_STAGING = _d("gate")                             # what the gate files with a version before registering it
GATE_REPORT = _r("gate.json")
DRIFT = _r("drift")
CYCLE_REPORT = _r("cycle.html")
# the moderators: what they did (the app appends; an ingest output, so DVC sees a new vote and versions the log),
# the labels that train (the agreement rule applied by ingest), and the review queue a cycle writes after the gate
VOTES = _d("moderation/votes.jsonl")
MODERATED = _d("moderation/labels.parquet")
REVIEW = _d("review")
REVIEW_QUEUE = _d("review/queue.parquet")             # the items in front of moderators, with their state
REVIEW_SCORED = _d("review/scored.parquet")           # every item a review stage scored (what is fresh next time)
REVIEW_REPORT = _r("review.json")
# beside the stages
LABELS = _d("labels/labels.parquet")                  # moderators' labels (the RKC database grows with them)
LABEL_IMAGES = _d("labels/images")
PREDICTIONS = _d("predictions/{family}.parquet")
PREDICT_QUARANTINE = _d("predictions/quarantine.parquet")
CYCLE_LOCK = _d(".cycle.lock")
# what `dvc metrics show` / `diff` compare: a few figures per stage (the full reports are plain outputs)
METRICS = _r("metrics/{stage}.json")


class Layout:
    """The resolved paths of one params file: `layout.path(ITEMS)`, `layout.model("cmc")`, …"""

    def __init__(self, data: Path, reports: Path, store: Path, outbox: Path):
        self.data, self.reports = Path(data), Path(reports)
        self.store = Path(store)        # the embedded or local Qdrant's folder (index.path)
        self.outbox = Path(outbox)      # the e-mails (notify.outbox)

    def path(self, loc: Loc, **fields: str) -> Path:
        base = self.data if loc.root == "data" else self.reports
        return base / loc.rel.format(**fields)

    def __getattr__(self, name: str) -> Path:
        """`layout.items` for `layout.path(ITEMS)`: every upper-case Loc of this module, lower-cased."""
        loc = globals().get(name.upper())
        if isinstance(loc, Loc) and "{" not in loc.rel:
            return self.path(loc)
        raise AttributeError(name)

    def model(self, family: str) -> Path:
        return self.path(MODEL, family=family)

    def train_report(self, family: str) -> Path:
        return self.path(TRAIN_REPORT, family=family)

    def train_plots(self, family: str) -> Path:
        return self.path(TRAIN_PLOTS, family=family)

    def evaluation_scores(self, family: str) -> Path:
        return self.path(EVALUATION_SCORES, family=family)

    def predictions(self, family: str) -> Path:
        return self.path(PREDICTIONS, family=family)

    def relative(self, path: Path) -> str:
        """A path under the data or reports folder as a person reads it (`data/…`), else as it is."""
        path = Path(path)
        for base in (self.data, self.reports):
            if path.is_relative_to(base):
                return f"{base.name}/{path.relative_to(base).as_posix()}"
        return str(path)


# --------------------------------------------------------------------------- each stage's DVC view
Kind = Literal["outs", "metrics", "plots"]


@dataclass(frozen=True)
class Out:
    loc: Loc
    kind: Kind = "outs"
    persist: bool = False   # kept between runs: the stage adds to it (DVC would delete it first)
    cache: bool = True      # False: git keeps it (metrics, reports), DVC does not
    plot: tuple[tuple[str, str], ...] = ()  # x, y, title, template of a plot


@dataclass(frozen=True)
class StageIO:
    deps: tuple[Loc, ...]
    outs: tuple[Out, ...]
    code: tuple[str, ...] = ()      # the package's files the stage runs (deps in mmd's own dvc.yaml)
    always_changed: bool = False    # its input is outside DVC's sight (feeds, folders, a store)
    note: str = ""                  # why, for dvc.yaml's reader

    def paths(self, kind: Kind | None = None) -> list[Loc]:
        return [o.loc for o in self.outs if kind is None or o.kind == kind]


def _metrics(report: Loc, stage: str) -> tuple[Out, Out]:
    """A stage's full report (for people and the next stages) and its few figures, the DVC metrics: only the
    stages whose figures a person compares across cycles (validation, the holdout, the gate's decisions)
    declare them, so `dvc metrics show` stays one readable table; every other report is a plain file."""
    return Out(report, cache=False), Out(METRICS.of(stage=stage), "metrics", cache=False)


def _report(loc: Loc) -> Out:
    return Out(loc, cache=False)


STAGE_IO: dict[str, StageIO] = {
    "ingest": StageIO(
        deps=(), code=("mmd/ingest.py", "mmd/sources"), always_changed=True,
        outs=(Out(INGESTED, persist=True), Out(IMAGES, persist=True), Out(STATE, persist=True),
              Out(VOTES, persist=True), Out(MODERATED), _report(INGEST_REPORT)),
        note="sources are feeds and folders DVC cannot hash; ingest is incremental (watermarks),\n"
             "so it always runs and costs little when nothing is new"),
    "validate": StageIO(
        deps=(INGESTED, IMAGES), code=("mmd/validate",),
        outs=(Out(VALIDATED, persist=True), _report(VALIDATION_HTML), _report(VALIDATION_DOCS),
              *_metrics(VALIDATION_REPORT, "validate")),
        note="incremental: only rows not validated before are checked (all of them again when the\n"
             "validate section changes), so the snapshot is kept between runs (persist)"),
    "embed": StageIO(
        deps=(VALIDATED, IMAGES), code=("mmd/embed.py", "mmd/encoders"),
        outs=(Out(VECTORS), Out(EMBED_CACHE, persist=True), Out(EMBED_QUARANTINE, persist=True),
              _report(EMBED_REPORT)),
        note="the cache is versioned too: a rebuild elsewhere never re-encodes what is in it"),
    "index": StageIO(
        deps=(VECTORS,), code=("mmd/index.py", "mmd/store"),
        outs=(_report(INDEXED), _report(INDEX_REPORT)),
        note="Qdrant is an index, not a copy: every collection is rebuilt from DVC-tracked files\n"
             "(the embeddings, the synthetic pool), so DVC neither caches nor hashes the store; a stage\n"
             "that reads it first rebuilds a store that was wiped or moved. Its output says what it\n"
             "holds, not when."),
    "synthesize": StageIO(
        deps=(VALIDATED, INDEXED), code=("mmd/synth/generate.py", "mmd/synth/edits.py", "mmd/synth/render.py"),
        outs=(Out(SYNTHETIC, persist=True), _report(SYNTHESIZE_REPORT)),
        note="the pool keeps its history (persist); each run adds what new real items make"),
    "select": StageIO(
        deps=(SYNTHETIC, INDEXED), code=("mmd/synth/select.py", "mmd/synth/scoring.py"),
        outs=(Out(SELECTED_DIR), _report(SELECT_REPORT))),
    "evaluate": StageIO(
        deps=(VALIDATED, VECTORS, MODERATED), code=("mmd/evaluate/evaluate.py", "mmd/evaluate/metrics.py"),
        outs=(Out(EVALUATION), *_metrics(EVALUATE_REPORT, "evaluate"),
              Out(EVALUATE_ROC, "plots", cache=False,
                  plot=(("x", "fpr"), ("y", "tpr"), ("title", "ROC on the holdout"))),
              Out(EVALUATE_CONFUSION, "plots", cache=False,
                  plot=(("template", "confusion"), ("x", "predicted"), ("y", "actual"))),
              Out(EVALUATE_FIGURES, "plots", cache=False)),
        note="the challengers (the models just trained) scored on the fixed holdout, with bootstrap\n"
             "intervals: a function of versioned inputs only, so `dvc metrics diff` compares cycles"),
    "gate": StageIO(
        deps=(EVALUATION, EVALUATE_REPORT, VALIDATION_REPORT, SELECTED_DIR, MODERATED),
        code=("mmd/gate", "mmd/evaluate/gates.py", "mmd/evaluate/drift", "mmd/registry"),
        outs=(Out(REGISTRY, persist=True), _report(DRIFT), *_metrics(GATE_REPORT, "gate")),
        note="stateful on purpose: compares each challenger with the champion in the registry, checks\n"
             "drift, and promotes or holds; the registry keeps its history (persist) and is versioned"),
    "report": StageIO(
        deps=(GATE_REPORT, INGEST_REPORT, VALIDATION_REPORT, EVALUATE_REPORT), code=("mmd/report.py", "mmd/templates"),
        outs=(_report(CYCLE_REPORT),), note="the moderators' page of the gate's decisions"),
    "review": StageIO(
        deps=(VALIDATED, REGISTRY, VOTES), code=("mmd/review",),
        outs=(Out(REVIEW, persist=True), _report(REVIEW_REPORT)),
        note="the champions score what is new since the last queue update; the queue keeps its history\n"
             "(persist): every item once, with its state from the moderators' votes"),
}


def train_io(family: str, code: Sequence[str]) -> StageIO:
    """A detector family's training stage: real items, the selected synthetic set, the encoder's features."""
    return StageIO(
        deps=(VALIDATED, SELECTED_DIR, VECTORS, MODERATED), code=("mmd/models/data.py", *code),
        outs=(Out(MODEL.of(family=family)), _report(TRAIN_REPORT.of(family=family)),
              Out(TRAIN_PLOTS.of(family=family), "plots", cache=False)),
        note="frozen encoder features come from the embedding cache, so the embeddings are a dependency;\n"
             "moderators' labels (agreed ones, snapshot by ingest) relabel items or label new ones")


def stage_io(stage: str, families: Sequence[str] = (), family_code: dict[str, Sequence[str]] | None = None) -> StageIO:
    """The DVC view of a stage; `families`: the trained families, whose models evaluate reads."""
    if stage.startswith("train_"):
        family = stage[len("train_"):]
        return train_io(family, (family_code or {}).get(family, (f"mmd/models/{family}",)))
    io = STAGE_IO[stage]
    if stage == "evaluate":
        io = StageIO(io.deps + tuple(MODEL.of(family=f) for f in families), io.outs, io.code, io.always_changed,
                     io.note)
    return io


__all__ = [n for n, v in dict(globals()).items() if isinstance(v, Loc)] + [
    "Layout", "Loc", "Out", "StageIO", "STAGE_IO", "stage_io", "train_io"]
