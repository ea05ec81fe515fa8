"""The one list of detector families. Adding a detector is its folder plus one `register` call.

A family names its params section (a pydantic model, read by `mmd.config`), its training
stage (`train_<name>`: settings -> the stage's report), and its predictor (a saved model folder
-> calibrated scores), as `module:function` strings imported only when used, so that serving
never imports training and `mmd --help` imports neither. `evaluate.families` in params.yaml
picks which families a cycle trains, gates and serves.

Families outside this package register themselves through the `mmd.families` entry-point group
(a callable returning a `Family`), so a DVC stage's own process finds them too.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel

from mmd.models.cmc.config import CMCConfig
from mmd.models.lmm.config import LMMConfig
from mmd.models.rgcl.config import RGCLConfig


@dataclass(frozen=True)
class Family:
    name: str
    config: type[BaseModel]     # the params section named `name`
    train: str                  # "module:function": (settings, log=None) -> the training report (a dict)
    predictor: str              # "module:function": (settings, folder, collection=None) -> a Predictor
    about: str = ""
    reads: tuple[str, ...] = ()  # other params sections its training stage reads
    code: tuple[str, ...] = ()   # its source files, DVC dependencies in mmd's own dvc.yaml
    gpu: bool = False            # its stage is in gpu/dvc.yaml: it runs where a GPU is
    variant_key: str = "variant"  # the key of its config.json that names what it predicts with
    intended_use: str = ""       # for its model cards
    limitations: tuple[str, ...] = ()

    def load(self, attr: str) -> Callable[..., Any]:
        module, _, function = getattr(self, attr).partition(":")
        return getattr(importlib.import_module(module), function)


_FAMILIES: dict[str, Family] = {}
_plugins_loaded = False


def register(family: Family) -> Family:
    """Add (or replace) a family; `mmd.config` accepts its section from then on."""
    if not family.name.isidentifier() or family.name in {"train", "paths", "evaluate", "gate"}:
        raise ValueError(f"{family.name!r} cannot name a family (it must be an identifier and not a core section)")
    _FAMILIES[family.name] = family
    return family


def unregister(name: str) -> None:
    _FAMILIES.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group="mmd.families"):
        register(ep.load()())


def all_families() -> dict[str, Family]:
    _load_plugins()
    return dict(_FAMILIES)


def get(name: str) -> Family:
    families = all_families()
    if name not in families:
        raise KeyError(f"unknown model family {name!r}: one of {', '.join(families)}")
    return families[name]


register(Family(
    "cmc", CMCConfig, "mmd.models.cmc.stage:train_stage", "mmd.models.cmc.predictor:load_predictor",
    about="CMC: text and image networks with cross-modal distillation, then BLOCK fusion (Wei et al. 2022)",
    code=("mmd/models/cmc",),
    intended_use="Scores text + image posts for likely misinformation, to rank them for fact-checkers and "
                 "moderators. CMC (Wei et al., ICASSP 2022): text and image networks on frozen encoder features "
                 "distil into each other with a contrastive cross-modal loss, then a BLOCK fusion layer combines "
                 "them."))
register(Family(
    "rgcl", RGCLConfig, "mmd.models.rgcl.stage:train_stage", "mmd.models.rgcl.predictor:load_predictor",
    about="RGCL: retrieval-guided contrastive learning with a retrieval kNN classifier (Mei et al. 2024)",
    reads=("index",), code=("mmd/models/rgcl",), variant_key="predict_with",
    intended_use="Scores memes and posts for hateful or misleading content, to rank them for moderators. RGCL "
                 "(Mei et al., ACL 2024): retrieval-guided contrastive learning; the retrieval kNN classifier (RKC) "
                 "votes over a database of labelled examples that grows with moderators' labels.",
    limitations=("Predictions depend on the retrieval database as well as the weights: a label added to the "
                 "database changes later scores without a new version.",)))
register(Family(
    "lmm", LMMConfig, "mmd.models.lmm.stage:train_stage", "mmd.models.lmm.predictor:load_predictor",
    about="LoRA fine-tuning of a vision-language model (LMM-RGCL, Mei et al. 2025; or yes/no)",
    reads=("rgcl",), code=("mmd/models/lmm",), gpu=True, variant_key="recipe",
    intended_use="Scores memes and posts for hateful or misleading content, to rank them for moderators. A "
                 "vision-language model fine-tuned with LoRA adapters (and, in the LMM-RGCL recipe, a "
                 "retrieval-guided head on its hidden states).",
    limitations=("The base model is not copied into the version: it is loaded again by name, so serving needs "
                 "the same base model weights.",)))
