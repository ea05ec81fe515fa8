"""The stages of a cycle: one table, in order, and one way to run a stage.

Each stage is a thin module here (`run(settings, log=None) -> result`): it calls the library and
returns the stage's typed result (`mmd.results`). The table says which params sections a stage
reads: `dvc.yaml` declares exactly those (`mmd.dvcfile`), and the stage runs with settings that
refuse any other (`Settings.for_stage`), so a stage cannot come to depend on a knob DVC does not
watch. A detector family's training stage (`train_<family>`) comes from its registration in
`mmd.models.families`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable, Sequence

from mmd.config import Settings
from mmd.layout import StageIO, stage_io
from mmd.results import StageResult, result_type

Log = Callable[[str], None] | None


@dataclass(frozen=True)
class Stage:
    name: str
    module: str                  # the stage's module: `run(settings, log=None)` (and `family=` for training)
    params: tuple[str, ...]      # the params sections it reads: its DVC `params:`
    family: str | None = None
    gpu: bool = False            # declared in gpu/dvc.yaml, run where a GPU is

    @property
    def result(self) -> type[StageResult]:
        return result_type(self.name)

    def run(self, settings: Settings, log: Log = None, **options) -> StageResult:
        """Run the stage with settings that hold only its sections; `options` are its module's own (the CLI's)."""
        run = importlib.import_module(self.module).run
        if self.family:
            options["family"] = self.family
        return run(settings.for_stage(self.name, self.params), log=log, **options)

    def last(self, settings: Settings) -> StageResult | None:
        """The report this stage left last time (what a run through DVC returns)."""
        return self.result.read(settings.layout, family=self.family or "")

    def io(self, families: Sequence[str] = ()) -> StageIO:
        from mmd.models.families import all_families

        code = {name: f.code for name, f in all_families().items()}
        return stage_io(self.name, families, code)


# the data plane, then (per family) training, then the decision; each reads only these sections
BEFORE_TRAINING = (
    # review: its agreement rule decides which moderators' labels ingest passes on to training
    Stage("ingest", "mmd.stages.ingest", ("ingest", "review")),
    Stage("validate", "mmd.stages.validate", ("validate",)),
    # scale: where the work runs (one process, or shards on Dask workers); the outputs are the same
    Stage("embed", "mmd.stages.embed", ("embed", "scale")),
    Stage("index", "mmd.stages.index", ("index",)),
    Stage("synthesize", "mmd.stages.synthesize", ("synthesize", "embed", "index")),
    Stage("select", "mmd.stages.select", ("select", "index", "scale")),
)
_AFTER = ("evaluate", "gate", "report", "review")
# what scoring a model reads beside its own section (the encoder, the store RKC searches, the holdout)
SCORING = ("train", "embed", "index")


def train_stage(family: str) -> Stage:
    from mmd.models.families import get

    f = get(family)
    return Stage(f"train_{family}", "mmd.stages.train", tuple(dict.fromkeys(("train", "embed", family, *f.reads))),
                 family=family, gpu=f.gpu)


def after_training(families: Sequence[str]) -> tuple[Stage, ...]:
    from mmd.models.families import get

    sections = tuple(dict.fromkeys(s for f in families for s in (f, *get(f).reads)))
    # scale: where the champions and challengers are scored (one process, or shards on Dask workers)
    return (Stage("evaluate", "mmd.stages.evaluate", tuple(dict.fromkeys(("evaluate", *SCORING, *sections, "scale")))),
            Stage("gate", "mmd.stages.gate",
                  tuple(dict.fromkeys(("gate", "evaluate", "select", *SCORING, *sections, "scale")))),
            Stage("report", "mmd.stages.report", ("train",)),
            Stage("review", "mmd.stages.review",
                  tuple(dict.fromkeys(("review", "evaluate", *SCORING, *sections, "scale")))))


def cycle_stages(families: Sequence[str]) -> list[Stage]:
    """One retrain cycle, in order: the data plane, a training stage per family, evaluate, gate, report, review."""
    return [*BEFORE_TRAINING, *(train_stage(f) for f in families), *after_training(families)]


def get(name: str, families: Sequence[str] = ()) -> Stage:
    """A stage by name; evaluate and gate read the sections of `families` (the cycle's)."""
    from mmd.models.families import all_families

    if name.startswith("train_") and name[len("train_"):] in all_families():
        return train_stage(name[len("train_"):])
    for stage in (*BEFORE_TRAINING, *after_training(families)):
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}: one of {', '.join(s.name for s in BEFORE_TRAINING)}, train_<family>, "
                   f"{', '.join(_AFTER)}")
