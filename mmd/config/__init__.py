"""params.yaml -> frozen, typed configuration; an unknown or mistyped key is an error.

Every stage reads only its own sections, so DVC reruns exactly what a change touches: a stage
runs with `Settings.for_stage(sections)`, whose params refuse any other section
(`UndeclaredSection`), and the same sections are its `params:` in dvc.yaml. Relative paths in
the file are resolved against the folder that holds the file, so the same code runs against
any configuration (`mmd --params other.yaml …`). Secrets never live here: a source names the
environment variable that holds its key.

The sections' models live beside this module (`ingest`, `stages`, `gate`, `cycle`, `app`, `scale`); each
detector family's section is its own (`mmd.models.families`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from mmd.config.app import AppConfig, ReviewConfig
from mmd.config.cycle import CycleConfig, DemoConfig, DeploymentConfig, NotifyConfig
from mmd.config.gate import DriftConfig, Floors, GateConfig
from mmd.config.ingest import (MEME_PRESETS, ClaimReviewSource, FactCheckApiSource, HttpConfig, ImageConfig,
                               InboxSource, IngestConfig, MediaEvalSource, MemeSource, MemeSpec, SourceConfig)
from mmd.config.scale import ScaleConfig
from mmd.config.stages import (CaptionEditConfig, DisSimParams, EmbedConfig, EvaluateConfig, Filter, HybridParams,
                               IndexConfig, KindRules, MemeRecomposeConfig, OpenClipConfig, OutOfContextConfig,
                               PrecomputedConfig, SelectConfig, SynthesizeConfig, TrainConfig, TrainSplits,
                               ValidateConfig)
from mmd.layout import Layout

# the section models, importable from here as before the split
__all__ = ["AppConfig", "CaptionEditConfig", "ClaimReviewSource", "ConfigError", "CoreParams", "CycleConfig", "DemoConfig",
           "DeploymentConfig", "DisSimParams", "DriftConfig", "EmbedConfig", "EvaluateConfig", "FactCheckApiSource",
           "Filter", "Floors", "GateConfig", "HttpConfig", "HybridParams", "ImageConfig", "InboxSource", "IndexConfig",
           "IngestConfig", "KindRules", "MEME_PRESETS", "MediaEvalSource", "MemeRecomposeConfig", "MemeSource",
           "MemeSpec", "NotifyConfig", "OpenClipConfig", "OutOfContextConfig", "Params", "PathsConfig",
           "PrecomputedConfig", "ReviewConfig", "ScaleConfig", "SelectConfig", "Settings", "SourceConfig",
           "SynthesizeConfig", "TrainConfig",
           "TrainSplits", "UndeclaredSection", "ValidateConfig", "load_settings", "merge_params", "params_model",
           "parse_params", "read_params_file", "section_names"]


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# --------------------------------------------------------------------------- paths
class PathsConfig(_Strict):
    data: str = "data"
    reports: str = "reports"


# --------------------------------------------------------------------------- root
class CoreParams(_Strict):
    """Every section but the detector families' (those come from `mmd.models.families`)."""

    paths: PathsConfig = PathsConfig()
    ingest: IngestConfig = IngestConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    embed: EmbedConfig = EmbedConfig()
    index: IndexConfig = IndexConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    select: SelectConfig = SelectConfig()
    demo: DemoConfig = DemoConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gate: GateConfig = GateConfig()
    notify: NotifyConfig = NotifyConfig()
    cycle: CycleConfig = CycleConfig()
    review: ReviewConfig = ReviewConfig()
    app: AppConfig = AppConfig()
    scale: ScaleConfig = ScaleConfig()

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _known_families(self) -> "CoreParams":
        from mmd.models.families import all_families

        unknown = [f for f in self.evaluate.families if f not in all_families()]
        if unknown:
            raise ValueError(f"evaluate.families names {unknown}: the families are {', '.join(all_families())}")
        return self


@functools.cache
def _params_model(families: tuple[tuple[str, type[BaseModel]], ...]) -> type[CoreParams]:
    return create_model("Params", __base__=CoreParams, **{name: (cfg, cfg()) for name, cfg in families})


def params_model() -> type[CoreParams]:
    """The Params model: the core sections plus one per registered family."""
    from mmd.models.families import all_families

    return _params_model(tuple((f.name, f.config) for f in all_families().values()))


def Params(**sections) -> CoreParams:  # noqa: N802 - reads as the model it builds
    return params_model()(**sections)


def section_names() -> tuple[str, ...]:
    """Every section a params file may hold, as written there."""
    return tuple(f.alias or name for name, f in params_model().model_fields.items())


class UndeclaredSection(RuntimeError):
    """A stage read a params section its DVC stage does not declare: DVC would not rerun it when that changes."""


class _SectionGuard:
    """A stage's view of the params: its declared sections (and `paths`, which the layout resolves)."""

    def __init__(self, params: CoreParams, allowed: Iterable[str], stage: str):
        self._params, self._stage = params, stage
        self._allowed = frozenset(allowed) | {"paths"}
        self._sections = frozenset(section_names())

    def __getattr__(self, name: str):
        section = "validate" if name == "validate_" else name
        if section in self._sections and section not in self._allowed:
            raise UndeclaredSection(f"stage {self._stage!r} read params section {section!r}, which it does not "
                                    f"declare (it declares {', '.join(sorted(self._allowed - {'paths'}))})")
        return getattr(self._params, name)

    def sections(self, names: Iterable[str]) -> dict:
        """The named sections as plain JSON values (what a model's lineage records)."""
        return {n: getattr(self, "validate_" if n == "validate" else n).model_dump(mode="json") for n in names}


class Settings:
    """Params plus the folder they were read from: resolves every path in one place (`layout`)."""

    def __init__(self, params: CoreParams, root: Path, params_file: Path | None = None):
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

    @functools.cached_property
    def layout(self) -> Layout:
        p = self.params if not isinstance(self.params, _SectionGuard) else self.params._params
        outbox = Path(p.notify.outbox)
        return Layout(self.data_dir, self.reports_dir, self.data_dir / p.index.path,
                      outbox if outbox.is_absolute() else self.data_dir / outbox)

    def for_stage(self, stage: str, sections: Iterable[str]) -> "Settings":
        """The same settings, whose params refuse every section but `sections` (see UndeclaredSection)."""
        base = self.params._params if isinstance(self.params, _SectionGuard) else self.params
        view = Settings(_SectionGuard(base, sections, stage), self.root, self.params_file)  # type: ignore[arg-type]
        view.__dict__["layout"] = self.layout
        return view

    def sections(self, names: Iterable[str]) -> dict:
        """The named sections as plain JSON values."""
        params = self.params if isinstance(self.params, _SectionGuard) else _SectionGuard(self.params, names, "")
        return params.sections(names)


def _format_error(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key")
        else:
            lines.append(f"  {loc}: {e['msg']} (got {e.get('input')!r:.80})")
    return "\n".join(lines)


def parse_params(data: dict | None, source: str = "params") -> CoreParams:
    try:
        return params_model().model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None


def merge_params(base: dict, override: dict) -> dict:
    """Mappings merge key by key; anything else (lists included) is replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge_params(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_params_file(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A params file as a mapping, its `extends:` chain merged in (ConfigError naming the file when it cannot be)."""
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
    return merge_params(read_params_file(path.parent / base, seen + (path.resolve(),)), data)


def load_settings(path: str | Path = "params.yaml") -> Settings:
    """Read a params file; a missing file or a bad key raises ConfigError naming it.

    A file may start with `extends: other.yaml` (relative to itself) to take every
    section it does not set from that file; mappings merge, lists are replaced.
    """
    path = Path(path)
    data = read_params_file(path)
    return Settings(parse_params(data, str(path)), path.resolve().parent, path.resolve())
