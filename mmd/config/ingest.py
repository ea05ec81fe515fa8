"""The `ingest` section: sources, fetching and image limits, the ratings table."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


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


class OcrConfig(_Strict):
    """Reading a picture's text (RapidOCR, models shipped with the package) for an item that has a picture but
    no text of its own: a meme dropped in without its caption, a post whose words are only in its image."""

    enabled: bool = True
    min_confidence: float = Field(0.5, ge=0, le=1)  # text boxes read with less confidence are left out
    max_chars: int = Field(2000, gt=0)
    threads: int = Field(1, gt=0)                    # onnxruntime threads of the OCR models


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


# Fact-check verdicts -> binary target (1 = misinformation), compared lower-cased with whitespace collapsed;
# half true / mostly true count as not misinformation, as in the LIAR binary split.
DEFAULT_RATINGS: dict[str, int] = {
    'false': 1,
    'pants on fire': 1,
    'pants on fire!': 1,
    'mostly false': 1,
    'barely true': 1,
    'misleading': 1,
    'false context': 1,
    'missing context': 1,
    'out of context': 1,
    'miscaptioned': 1,
    'fake': 1,
    'fabricated': 1,
    'manipulated': 1,
    'altered': 1,
    'altered photo': 1,
    'incorrect': 1,
    'inaccurate': 1,
    'wrong': 1,
    'partly false': 1,
    'distorts the facts': 1,
    'hoax': 1,
    'scam': 1,
    'four pinocchios': 1,
    'three pinocchios': 1,
    'true': 0,
    'mostly true': 0,
    'half true': 0,
    'correct': 0,
    'accurate': 0,
    'correct attribution': 0,
}


class IngestConfig(_Strict):
    sources: tuple[SourceConfig, ...] = ()
    http: HttpConfig = HttpConfig()
    images: ImageConfig = ImageConfig()
    ocr: OcrConfig = OcrConfig()
    # fact-check verdict wording (lower-cased, whitespace collapsed) -> binary target;
    # anything not in the table leaves the item unlabeled and is counted, never guessed
    ratings: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_RATINGS))
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
