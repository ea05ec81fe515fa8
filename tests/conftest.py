"""Shared fixtures: a params file in a temporary folder, and the real datasets when present."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from mmd.config import Settings, load_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MMD_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def default_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


# a small, fast cycle (configs/small-cycle.yaml): the sections a whole-cycle test merges over the defaults
SMALL_CYCLE: dict[str, Any] = yaml.safe_load((REPO / "configs" / "small-cycle.yaml").read_text())


def small_cycle_params(**sections: dict) -> dict[str, Any]:
    """The default params with the small cycle's sections, then `sections`, merged in key by key."""
    from mmd.config import merge_params

    return merge_params(merge_params(default_params(), SMALL_CYCLE), sections)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Write a params file into tmp_path (defaults + overrides) and load it.

    `make_settings(sources=[...], ingest={...}, validate={...})`: `sources` replaces the
    source list; the other keyword arguments are merged into their sections.
    """

    def _make(sources: list[dict] | None = None, **sections: dict) -> Settings:
        params = default_params()
        if sources is not None:
            params["ingest"]["sources"] = sources
        for name, values in sections.items():
            params.setdefault(name, {}).update(values)
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return load_settings(path)

    return _make


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared/datasets, or a clean skip where it is absent (a user's machine)."""
    if not SHARED.is_dir():
        pytest.skip(f"real datasets not found at {SHARED}")
    return SHARED


TINY_OPEN_CLIP = "mmd-tiny-test"
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory) -> str:
    """A tiny random open_clip architecture, registered under TINY_OPEN_CLIP: seconds, not minutes."""
    import json

    import open_clip

    path = tmp_path_factory.mktemp("open_clip_cfg") / f"{TINY_OPEN_CLIP}.json"
    path.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(path)
    return TINY_OPEN_CLIP


def prepare_demo_project(root: Path, tiny_open_clip: str, demo: dict, **sections: dict) -> Settings:
    """A demo project in `root` embedded with the tiny open_clip: params (the defaults, the demo
    sizes, section overrides), the demo inbox, then ingest, validate, embed and index."""
    from mmd.demo import generate
    from mmd.embed import run_embed
    from mmd.index import run_index
    from mmd.ingest import run_ingest
    from mmd.validate import run_validate

    params = default_params()
    params["demo"].update(demo)
    params["embed"].update(backend="open_clip", open_clip={"model": tiny_open_clip, "pretrained": None}, batch_size=16)
    for name, values in sections.items():
        params.setdefault(name, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    settings = load_settings(root / "params.yaml")
    generate(settings.path("inbox"), settings.params.demo)
    run_ingest(settings, show_progress=False)
    run_validate(settings)
    run_embed(settings, show_progress=False)
    run_index(settings)
    return settings


@pytest.fixture(scope="session")
def demo_cycle(tmp_path_factory, tiny_open_clip) -> Path:
    """A demo project (tiny open_clip, the small cycle) after one whole cycle, review queue included:
    copy it (`shutil.copytree`) before changing it."""
    from mmd.cycle import cycle_stages, run_stage

    root = tmp_path_factory.mktemp("demo_cycle")
    small = {name: values for name, values in SMALL_CYCLE.items() if name != "demo"}
    settings = prepare_demo_project(root, tiny_open_clip, dict(memes=24, claims=12, posts=18), **small)
    for stage in cycle_stages(settings):
        run_stage(settings, stage.name, use_dvc=False)
    return root
