"""The layout is the one place paths live: dvc.yaml is generated from it and checked here, every stage
reads only the params sections its DVC stage declares, and the package keeps its shape (no import
cycles, no module over about 400 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from mmd.config import UndeclaredSection, load_settings
from mmd.dvcfile import render_for

from .conftest import REPO


def test_dvc_yaml_is_what_the_layout_and_the_stage_table_generate():
    settings = load_settings(REPO / "params.yaml")
    assert (REPO / "dvc.yaml").read_text() == render_for(settings), "run `mmd dvc-yaml --write`"
    gpu = REPO / "gpu" / "dvc.yaml"
    assert (gpu.read_text() if gpu.exists() else "") == render_for(settings, gpu=True), "run `mmd dvc-yaml --write`"


def test_each_dvc_stage_declares_the_sections_its_stage_reads_and_the_paths_it_touches():
    from mmd import stages

    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    families = load_settings(REPO / "params.yaml").params.evaluate.families
    for stage in stages.cycle_stages(families):
        if stage.gpu:
            continue
        declared = dvc[stage.name]
        assert declared["params"] == list(stage.params), stage.name
        assert declared["cmd"] == f"mmd stage {stage.name}"
        outs = [next(iter(o)) if isinstance(o, dict) else o for kind in ("outs", "metrics", "plots")
                for o in declared.get(kind, [])]
        assert outs == [o.loc.dvc for kind in ("outs", "metrics", "plots") for o in stage.io(families).outs
                        if o.kind == kind]


def test_a_stage_that_reads_an_undeclared_section_fails(make_settings):
    settings = make_settings()
    view = settings.for_stage("embed", ("embed",))
    assert view.params.embed.backend == "offline" and view.params.paths.data == "data"
    with pytest.raises(UndeclaredSection, match="stage 'embed' read params section 'train'"):
        view.params.train
    with pytest.raises(UndeclaredSection, match="'validate'"):
        view.params.validate_
    assert view.layout.vectors == settings.layout.vectors


def _modules(package: Path) -> dict[str, Path]:
    out = {}
    for p in package.rglob("*.py"):
        parts = list(p.relative_to(package.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every mmd module `name` imports, at module level or inside a function (any import is an edge)."""
    found = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = name.split(".") if is_pkg else name.split(".")[:-1]
            mod = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module or ""
            subs = [f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in modules]
            targets = subs if len(subs) == len(node.names) else [mod, *subs]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_import_cycle_inside_mmd():
    modules = _modules(REPO / "mmd")
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    cycles, state = [], {}

    def visit(m: str, trail: list[str]) -> None:
        state[m] = "open"
        for n in sorted(graph[m]):
            if state.get(n) == "open":
                cycles.append(trail[trail.index(n):] + [n])
            elif n not in state:
                visit(n, trail + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles


def test_no_module_of_mmd_is_over_about_400_lines():
    long = {str(p.relative_to(REPO)): n for p in (REPO / "mmd").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 420}
    assert not long, long


def test_a_family_that_needs_a_gpu_gets_its_stage_in_gpu_dvc_yaml(make_settings):
    settings = make_settings(evaluate={"families": ["cmc", "lmm"]})
    root, gpu = render_for(settings), yaml.safe_load(render_for(settings, gpu=True))["stages"]
    assert "train_lmm" not in yaml.safe_load(root)["stages"] and "${paths.data}/models/lmm" in root  # evaluate reads it
    assert gpu["train_lmm"]["wdir"] == ".." and gpu["train_lmm"]["params"] == ["train", "embed", "lmm", "rgcl"]
