"""The sections of the data-plane and training stages: validate, embed, index, synthesize, select, train,
evaluate."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


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
    # what computes the offline encoder's towers: onnxruntime (exported once per weights, cached outside
    # the project) or torch; auto: onnxruntime on a CPU where it is installed, else torch. Both give the
    # same vectors (within 1e-4 after normalisation) and share one embedding cache
    runtime: Literal["auto", "torch", "onnx"] = "auto"

    @model_validator(mode="after")
    def _onnx_is_offline_only(self) -> "EmbedConfig":
        if self.runtime == "onnx" and self.backend != "offline":
            raise ValueError(f"embed.runtime: onnx is for the offline backend, not {self.backend}; use auto or torch")
        return self


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
    # named splits carved like that too (e.g. [train] where every source names its items "train" and none
    # has a test split: without it such a project has no holdout, and its gate can never run its floors)
    holdout_from: tuple[str, ...] = ()
    synthetic: bool = True            # add the selected synthetic set (data/selected) to training
    label_names: tuple[str, str] = ("real", "fake")  # label 0, label 1 in metrics and tables
    seed: int = 0
    device: str = "auto"              # auto: a GPU when there is one
    # torch threads for training and scoring (evaluate, gate, predict); null: the cores given to the process
    threads: int | None = Field(None, gt=0)


# --------------------------------------------------------------------------- evaluate
class EvaluateConfig(_Strict):
    """Scoring the challengers on the fixed holdout (the evaluate stage)."""

    families: tuple[str, ...] = ("cmc", "rgcl")   # registered families (mmd.models.families)
    bootstrap: int = Field(1000, ge=0)          # resamples for the confidence intervals (0: none)
    confidence: float = Field(0.95, gt=0, lt=1)
    seed: int = 0
    histogram_bins: int = Field(20, ge=2)
