"""params.yaml -> frozen, typed configuration; an unknown or mistyped key is an error.

Every stage reads only its own section, so DVC reruns exactly what a change touches.
Relative paths in the file are resolved against the folder that holds the file, so the
same code runs against any configuration (`mmd --params other.yaml …`). Secrets never
live here: a source names the environment variable that holds its key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mmd.evaluate.gates import GateConfig
from mmd.models.cmc.config import CMCConfig
from mmd.models.lmm.config import LMMConfig
from mmd.models.rgcl.config import RGCLConfig
from mmd.notify import NotifyConfig


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# --------------------------------------------------------------------------- paths
class PathsConfig(_Strict):
    data: str = "data"
    reports: str = "reports"


# --------------------------------------------------------------------------- http
class HttpConfig(_Strict):
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(3, ge=0, le=10)
    backoff_s: float = Field(0.5, ge=0)
    max_bytes: int = Field(20_000_000, gt=0)
    user_agent: str = "mmd/0.1 (+https://github.com/mmd-platform/mmd)"


class ImageConfig(_Strict):
    max_bytes: int = Field(10_000_000, gt=0)
    max_pixels: int = Field(40_000_000, gt=0)
    max_side: int = Field(20_000, gt=0)
    formats: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "BMP")


# --------------------------------------------------------------------------- sources
class MemeSpec(_Strict):
    """How one meme dataset's jsonl fields map onto an item."""

    id_field: str = "id"
    text_field: str = "text"
    image_field: str = "img"
    label_field: str = "label"
    # labels may be a list (HarMeme puts the verdict first, the target second)
    label_index: int | None = None
    # original label (as a string) -> binary target (1 = harmful / misinformation)
    labels: dict[str, int] = Field(default_factory=lambda: {"0": 0, "1": 1})
    # where image paths in the jsonl are relative to: the jsonl's folder or images_dir
    image_prefix_strip: str = ""


MEME_PRESETS: dict[str, MemeSpec] = {
    # HarMeme (Pramanick et al. 2021): {"id","image","labels":[verdict,target],"text"}
    "harmeme": MemeSpec(
        image_field="image",
        label_field="labels",
        label_index=0,
        labels={"not harmful": 0, "somewhat harmful": 1, "very harmful": 1},
    ),
    # Hateful Memes (Kiela et al. 2020): {"id","img":"img/42953.png","label","text"}
    "hateful_memes": MemeSpec(image_field="img", label_field="label", image_prefix_strip="img/"),
    # MAMI (SemEval-2022 task 5) in jsonl form: {"file_name","Text Transcription","misogynous"}
    "mami": MemeSpec(
        id_field="file_name",
        text_field="Text Transcription",
        image_field="file_name",
        label_field="misogynous",
    ),
    # the form the inbox and the demo generator use
    "generic": MemeSpec(image_field="image", label_field="label"),
}


class _SourceBase(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,63}$")
    enabled: bool = True


class ClaimReviewSource(_SourceBase):
    type: Literal["claimreview"]
    # a file, a folder of files, or an http(s) URL; the format is sniffed per file
    location: str


class FactCheckApiSource(_SourceBase):
    type: Literal["factcheck_api"]
    endpoint: str = "https://factchecktools.googleapis.com/v1alpha1/claims:search"
    query: str | None = None
    publisher: str | None = None
    language: str | None = None
    max_age_days: int | None = Field(None, gt=0)
    page_size: int = Field(50, gt=0, le=1000)
    max_pages: int = Field(20, gt=0)
    api_key_env: str = "GOOGLE_FACTCHECK_API_KEY"

    @model_validator(mode="after")
    def _needs_a_filter(self) -> "FactCheckApiSource":
        if not self.query and not self.publisher:
            raise ValueError("factcheck_api needs `query` or `publisher` (the API requires one)")
        return self


class MemeSource(_SourceBase):
    type: Literal["memes"]
    # one or more jsonl files, relative to the params file
    files: tuple[str, ...]
    images_dir: str
    preset: Literal["harmeme", "hateful_memes", "mami", "generic"] | None = "generic"
    spec: MemeSpec | None = None  # overrides the preset
    # split per file name stem when not given: train.jsonl -> train
    split_from_filename: bool = True

    def mapping(self) -> MemeSpec:
        if self.spec is not None:
            return self.spec
        return MEME_PRESETS[self.preset or "generic"]


class MediaEvalSource(_SourceBase):
    type: Literal["mediaeval"]
    file: str
    images_dir: str
    # posts whose images are all missing: keep them as text-only posts, or skip them
    missing_images: Literal["text_only", "skip"] = "text_only"
    labels: dict[str, int] = Field(default_factory=lambda: {"fake": 1, "real": 0})
    split: str | None = "train"


class InboxSource(_SourceBase):
    type: Literal["inbox"]
    path: str
    meme_preset: Literal["harmeme", "hateful_memes", "mami", "generic"] = "generic"
    mediaeval_missing_images: Literal["text_only", "skip"] = "text_only"


SourceConfig = Annotated[
    Union[ClaimReviewSource, FactCheckApiSource, MemeSource, MediaEvalSource, InboxSource],
    Field(discriminator="type"),
]


class IngestConfig(_Strict):
    sources: tuple[SourceConfig, ...] = ()
    http: HttpConfig = HttpConfig()
    images: ImageConfig = ImageConfig()
    # fact-check verdict wording (lower-cased, whitespace collapsed) -> binary target;
    # anything not in the table leaves the item unlabeled and is counted, never guessed
    ratings: dict[str, int] = Field(default_factory=dict)
    # a record larger than this (bytes of its text) is quarantined at the door
    max_text_bytes: int = Field(1_000_000, gt=0)
    # drop an item whose image bytes, text and label equal an accepted item's
    dedupe_by_image: bool = True
    # a repeat of an item of another split is reported per split pair ("test<-train") either
    # way; an item of a split named here is kept (accepted, the leak reported) instead of dropped
    keep_splits_whole: tuple[str, ...] = ()
    # every local file a source reads (inbox, folders, jsonl, tsv) is refused whole past this
    max_file_bytes: int = Field(100_000_000, gt=0)
    # JSON nesting deeper than this is refused before it is parsed (ClaimReview nests ~6)
    max_json_depth: int = Field(64, ge=2, le=500)
    # folders a local source may read from (relative to the params file); the params file's own
    # folder is always allowed. A location resolving (symlinks followed) elsewhere is refused.
    allowed_roots: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _unique_names(self) -> "IngestConfig":
        names = [s.name for s in self.sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"source names must be unique; repeated: {', '.join(dupes)}")
        for verdict, target in self.ratings.items():
            if target not in (0, 1):
                raise ValueError(f"ratings[{verdict!r}] must be 0 or 1, got {target}")
        return self


# --------------------------------------------------------------------------- validate
class KindRules(_Strict):
    text_min_chars: int = Field(1, ge=0)
    text_max_chars: int = Field(5_000, gt=0)
    image_required: bool = False
    url_required: bool = False
    # batch level: share of positive labels among labeled items must lie in [lo, hi]
    label_share: tuple[float, float] = (0.0, 1.0)


class ValidateConfig(_Strict):
    kinds: dict[Literal["fact_check", "meme", "post"], KindRules] = Field(
        default_factory=lambda: {
            "fact_check": KindRules(text_max_chars=2_000, url_required=True),
            "meme": KindRules(text_max_chars=2_000, image_required=True),
            "post": KindRules(text_max_chars=5_000),
        }
    )
    min_items: int = Field(1, ge=0)
    # the stage fails when fewer than this share of rows pass the row-level checks
    min_pass_rate: float = Field(0.5, ge=0, le=1)


# --------------------------------------------------------------------------- embed
class OpenClipConfig(_Strict):
    model: str = "ViT-B-32"
    # a pretrained tag open_clip knows (needs the weights in the local cache offline)
    pretrained: str | None = "laion2b_s34b_b79k"
    # or a local checkpoint file; takes precedence over `pretrained`
    checkpoint: str | None = None


class PrecomputedConfig(_Strict):
    # .npy pair (`<stem>.ids.npy` beside it) or a Parquet table keyed by item id
    path: str | None = None
    id_column: str = "id"
    text_column: str = "text_vec"
    image_column: str = "image_vec"


class EmbedConfig(_Strict):
    backend: Literal["offline", "open_clip", "precomputed"] = "offline"
    open_clip: OpenClipConfig = OpenClipConfig()
    precomputed: PrecomputedConfig = PrecomputedConfig()
    # the mixed-modal vector: L2-normalised [w * text, (1 - w) * image], re-normalised
    text_weight: float = Field(0.5, ge=0, le=1)
    batch_size: int = Field(32, gt=0)
    num_workers: int = Field(1, ge=0)
    threads: int | None = Field(None, gt=0)
    device: str = "auto"


# --------------------------------------------------------------------------- index
class IndexConfig(_Strict):
    # embedded: Qdrant's engine in-process (qdrant-edge), persistent under <data>/<path>
    # local: qdrant-client's local mode under <data>/<path> (the server's API, slower)
    # server: a Qdrant server or cluster at `url`, API key from $<api_key_env>
    backend: Literal["embedded", "local", "server"] = "embedded"
    path: str = "qdrant"
    url: str | None = None
    api_key_env: str = "QDRANT_API_KEY"
    items_collection: str = "items"
    synthetic_collection: str = "synthetic"
    batch_size: int = Field(512, gt=0)

    @model_validator(mode="after")
    def _server_needs_url(self) -> "IndexConfig":
        if self.backend == "server" and not self.url:
            raise ValueError("index.backend = server needs index.url")
        return self


# --------------------------------------------------------------------------- synthesize
class OutOfContextConfig(_Strict):
    enabled: bool = True
    kinds: tuple[str, ...] = ("post", "fact_check")
    per_parent: int = Field(1, ge=0, le=20)
    # nearest neighbours a donor image is drawn from: near, so the mismatch is hard
    neighbours: int = Field(10, gt=0, le=200)
    # which half of the parent's vector finds the donor: its image (image -> image) or its
    # text (text -> image with a shared-space encoder such as CLIP, caption -> caption otherwise)
    retrieval: tuple[Literal["image", "text"], ...] = ("image", "text")
    # also pair a truthful caption with another truthful image of the same event (label 0)
    pristine: bool = True


class CaptionEditConfig(_Strict):
    enabled: bool = True
    kinds: tuple[str, ...] = ("post", "fact_check")
    per_parent: int = Field(1, ge=0, le=20)
    neighbours: int = Field(10, gt=0, le=200)
    spans: tuple[Literal["name", "number", "date", "place"], ...] = ("name", "number", "date", "place")


class MemeRecomposeConfig(_Strict):
    enabled: bool = True
    kinds: tuple[str, ...] = ("meme",)
    per_parent: int = Field(1, ge=0, le=20)
    neighbours: int = Field(10, gt=0, le=200)
    # share of recompositions onto a neutral template instead of another meme's picture
    template_share: float = Field(0.25, ge=0, le=1)
    image_size: int = Field(320, ge=64, le=2048)


class SynthesizeConfig(_Strict):
    seed: int = 0
    # items of these splits never parent a synthetic item, so nothing leaks into evaluation
    holdout_splits: tuple[str, ...] = ("test", "val", "validation", "dev")
    # new synthetic items per run at most; parents left over wait for the next run
    max_new_per_run: int = Field(20_000, ge=0)
    out_of_context: OutOfContextConfig = OutOfContextConfig()
    caption_edit: CaptionEditConfig = CaptionEditConfig()
    meme_recompose: MemeRecomposeConfig = MemeRecomposeConfig()


# --------------------------------------------------------------------------- select
class DisSimParams(_Strict):
    epsilon: float = Field(0.05, gt=0)
    sample: int = Field(10_000, gt=0)
    max_iter: int = Field(1000, gt=0)
    tol: float = Field(1e-5, gt=0)
    chunk: int = Field(4096, gt=0)


class HybridParams(_Strict):
    # rrf: reciprocal rank fusion of both rankings; proxy: per target, whichever method's
    # selection lands closer (Sinkhorn divergence) to a held-out share of the real target
    mode: Literal["rrf", "proxy"] = "proxy"
    holdout: float = Field(0.3, gt=0, lt=1)


class SelectConfig(_Strict):
    method: Literal["random", "semsim", "dissim", "hybrid"] = "hybrid"
    k: int = Field(500, ge=1)
    # the real distribution to select against: a filter on the items collection
    # ({field: value or [values]} over kind, source, label, split), empty = every real item
    target: dict[str, str | int | list[str] | list[int]] = Field(default_factory=dict)
    # and on the synthetic pool (e.g. {generator: out_of_context})
    candidates: dict[str, str | int | list[str] | list[int]] = Field(default_factory=dict)
    max_target: int = Field(10_000, gt=0)  # a uniform sample of the target beyond this
    seed: int = 0
    dissim: DisSimParams = DisSimParams()
    hybrid: HybridParams = HybridParams()


# --------------------------------------------------------------------------- train
Filter = dict[str, str | int | list[str] | list[int]]


class TrainSplits(_Strict):
    """Which item splits validate and test; every other labelled item trains."""

    val: tuple[str, ...] = ("val", "validation", "dev")
    test: tuple[str, ...] = ("test",)


class TrainConfig(_Strict):
    """What every detector trains and is scored on (read by each training stage)."""

    # which real labelled items, a filter over item fields (e.g. {source: mediaeval}); {} = all
    items: Filter = Field(default_factory=dict)
    splits: TrainSplits = TrainSplits()
    # with no val split, this share of the training items validates, carved by image
    # (items sharing a picture stay on one side), by group (event) or by item
    val_fraction: float = Field(0.15, gt=0, lt=1)
    val_group_by: Literal["image", "group", "id"] = "image"
    # labelled items with no split of their own: this share, carved like val (by picture) with a
    # fixed salt, is the evaluation holdout; no detector trains on it, in any cycle
    holdout_fraction: float = Field(0.2, ge=0, lt=1)
    synthetic: bool = True            # add the selected synthetic set (data/selected) to training
    label_names: tuple[str, str] = ("real", "fake")  # label 0, label 1 in metrics and tables
    seed: int = 0
    device: str = "auto"              # auto: a GPU when there is one


# --------------------------------------------------------------------------- evaluate
class EvaluateConfig(_Strict):
    """Scoring the challengers on the fixed holdout (the evaluate stage)."""

    families: tuple[Literal["cmc", "rgcl", "lmm"], ...] = ("cmc", "rgcl")
    bootstrap: int = Field(1000, ge=0)          # resamples for the confidence intervals (0: none)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    histogram_bins: int = Field(20, ge=2)


# --------------------------------------------------------------------------- demo
class DemoConfig(_Strict):
    seed: int = 0
    memes: int = Field(60, ge=0)
    claims: int = Field(40, ge=0)
    posts: int = Field(40, ge=0)


# --------------------------------------------------------------------------- cycle
_CRON = re.compile(r"@(yearly|annually|monthly|weekly|daily|hourly)|[0-9*,/\-A-Za-z?]+(\s+[0-9*,/\-A-Za-z?]+){4}")


class DeploymentConfig(_Strict):
    """One scheduled deployment of a flow (flows/deploy.py)."""

    flow: Literal["ingest", "retrain"]
    cron: str | None = None             # a cron expression in `cycle.timezone`; None: run only when triggered
    paused: bool = False                # registered with its schedule paused
    parameters: dict[str, Any] = Field(default_factory=dict)  # the flow's parameters, e.g. {params: configs/x.yaml}
    description: str = ""

    @model_validator(mode="after")
    def _cron_shape(self) -> "DeploymentConfig":
        # the shape only (Prefect checks the values when it registers the schedule)
        if self.cron is not None and not _CRON.fullmatch(self.cron.strip()):
            raise ValueError(f"cron {self.cron!r} is not five cron fields (minute hour day month weekday) nor a @macro")
        return self


class CycleConfig(_Strict):
    """The scheduled loop (flows/): when it runs and what a cycle does around its stages."""

    dvc: Literal["auto", "on", "off"] = "auto"   # stages through `dvc repro`; auto: in a DVC project
    wait: bool = False                  # a cycle that finds another running is refused (false) or waits (true)
    push: Literal["auto", "on", "off"] = "auto"  # `dvc push` after a cycle; auto: when DVC has a default remote
    commit: bool = False                # git-commit dvc.lock, metrics and reports after a cycle (what a clone reproduces)
    timezone: str = "UTC"               # of the cron schedules
    deployments: dict[str, DeploymentConfig] = Field(default_factory=lambda: {
        "ingest-hourly": DeploymentConfig(flow="ingest", cron="0 * * * *"),
        "retrain-nightly": DeploymentConfig(flow="retrain", cron="30 2 * * *"),
    })

    @model_validator(mode="after")
    def _known_timezone(self) -> "CycleConfig":
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        return self


# --------------------------------------------------------------------------- root
class Params(_Strict):
    paths: PathsConfig = PathsConfig()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    embed: EmbedConfig = EmbedConfig()
    index: IndexConfig = IndexConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    select: SelectConfig = SelectConfig()
    demo: DemoConfig = DemoConfig()
    train: TrainConfig = TrainConfig()
    cmc: CMCConfig = CMCConfig()
    rgcl: RGCLConfig = RGCLConfig()
    lmm: LMMConfig = LMMConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    notify: NotifyConfig = NotifyConfig()
    cycle: CycleConfig = CycleConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Settings:
    """Params plus the folder they were read from: resolves every path in one place."""

    def __init__(self, params: Params, root: Path, params_file: Path | None = None):
        self.params = params
        self.root = root.resolve()
        self.params_file = params_file

    def path(self, value: str | Path) -> Path:
        p = Path(value)
        return p if p.is_absolute() else (self.root / p).resolve()

    @property
    def data_dir(self) -> Path:
        return self.path(self.params.paths.data)

    @property
    def reports_dir(self) -> Path:
        return self.path(self.params.paths.reports)


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key")
        else:
            lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r:.80})")
    return "\n".join(lines)


def parse_params(data: dict | None, source: str = "params") -> Params:
    try:
        return Params.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def merge_params(base: dict, override: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge_params(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    from mmd.safe_read import MAX_YAML_BYTES, InputRefused, load_yaml, read_capped

    if not path.exists():
        raise ConfigError(f"{path}: no such params file")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: `extends` loops back to itself")
    # messages name the file and the kind of problem, never its content: `extends` may name any file
    try:
        text = read_capped(path, MAX_YAML_BYTES).decode("utf-8")
        data = load_yaml(text)
    except InputRefused as exc:
        raise ConfigError(f"{path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}), so not a params file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or Path(base).suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"{path}: `extends` must name a .yaml or .yml params file")
    # the base's own relative paths are not rebased: a file that extends another states its paths
    return merge_params(_read(path.parent / base, seen + (path.resolve(),)), data)


def load_settings(path: str | Path = "params.yaml") -> Settings:
    """Read a params file; a missing file or a bad key raises ConfigError naming it.

    A file may start with `extends: other.yaml` (relative to itself) to take every
    section it does not set from that file; mappings merge, lists are replaced.
    """
    path = Path(path)
    data = _read(path)
    return Settings(parse_params(data, str(path)), path.resolve().parent, path.resolve())
