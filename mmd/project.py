"""A deployment's own project: `mmd init DIR` makes a git + DVC repository that runs the cycle.

What it writes:
- `params.yaml`: every section, complete (no `extends:`: DVC reads the params a stage depends on from
  this one file), from `--from FILE` (its `extends:` followed, its relative source paths made absolute)
  or the built-in defaults; `paths` point inside the project; `cycle.commit` is on, so every cycle
  commits `dvc.lock` and the reports;
- `dvc.yaml` (and `gpu/dvc.yaml`) generated for it (`mmd.dvcfile`; the stages run the installed
  `mmd`, so the package's files are not dependencies);
- `.dvc/` with a default remote (`--remote URL`, else `.dvc-storage/` inside the project), `.gitignore`,
  `.dvcignore`, an empty `inbox/` and a README;
- a first commit.

Then `python -m flows.retrain --params DIR/params.yaml` (or `make serve`'s deployments with that
parameter) runs every stage through `dvc repro` in DIR: a killed cycle resumes, `dvc push` stores the
data and models, and a clone with `dvc pull` reproduces them.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from mmd.config import ConfigError, load_settings, merge_params, parse_params, read_params_file
from mmd.util import atomic_write_text

EXAMPLE_SOURCES = """\
# Sources: fill in yours (see the README of mmd, "Pointing it at real sources"). Examples:
#   - {name: inbox, type: inbox, path: inbox}              # files dropped into DIR/inbox
#   - {name: datacommons, type: claimreview, location: https://storage.googleapis.com/datacommons-feeds/claimreview/latest/data.json}
#   - {name: harmeme, type: memes, preset: harmeme, files: [/data/harmeme/train.jsonl], images_dir: /data/harmeme/images}
#   - {name: mediaeval, type: mediaeval, file: /data/mediaeval/posts.tsv, images_dir: /data/mediaeval/images}
"""
GITIGNORE = "/.dvc-storage/\n/inbox/\n.prefect/\n__pycache__/\n*.tmp\n"
DVCIGNORE = ".dvc-storage/\n.prefect/\n"
README = """\
# {name}: an mmd deployment

Made by `mmd init`. Every stage of the cycle runs through `dvc repro` here; data and models are versioned
by DVC (remote: `{remote}`), `dvc.lock` and the reports by git (a commit per cycle).

```
mmd status --params params.yaml                        # sources, items, quarantine
python -m flows.retrain --params params.yaml           # one whole cycle (resumes where a killed one stopped)
python -m flows.deploy serve --params params.yaml      # the scheduled deployments (cycle.deployments)
dvc metrics show; dvc plots show                       # what the cycles measured
```

Edit `params.yaml` (sources under `ingest.sources`), then `mmd dvc-yaml --write` if you change
`evaluate.families`. Secrets (API keys, the SMTP password) come from the environment, never from here.
"""

# fields that hold a path, per source type (a URL location is left alone)
_SOURCE_PATHS = {"claimreview": ("location",), "memes": ("files", "images_dir"), "mediaeval": ("file", "images_dir"),
                 "inbox": ("path",)}


@dataclass
class Project:
    root: Path
    params_file: Path
    remote: str
    commit: str


def rebase_paths(data: dict, base: Path, root: Path) -> dict:
    """The params' paths that point outside the data folder (sources, precomputed vectors, a checkpoint, a
    local LMM), moved from `base` (the folder of the file they came from) to the project `root`: relative to it
    when they lie inside it, else absolute."""
    def _absolute(value: str, base: Path) -> str:
        if "://" in value:
            return value
        full = (base / value).resolve()
        return full.relative_to(root).as_posix() if full.is_relative_to(root) else str(full)

    out = dict(data)
    sources = []
    for source in (out.get("ingest") or {}).get("sources") or []:
        source = dict(source)
        for key in _SOURCE_PATHS.get(source.get("type"), ()):
            if isinstance(source.get(key), str):
                source[key] = _absolute(source[key], base)
            elif isinstance(source.get(key), list):
                source[key] = [_absolute(v, base) for v in source[key]]
        sources.append(source)
    if sources:
        out["ingest"] = {**out["ingest"], "sources": sources}
    if (out.get("ingest") or {}).get("allowed_roots"):
        out["ingest"] = {**out["ingest"], "allowed_roots": [_absolute(v, base) for v in out["ingest"]["allowed_roots"]]}
    embed = dict(out.get("embed") or {})
    for section, key in (("precomputed", "path"), ("open_clip", "checkpoint")):
        if isinstance((embed.get(section) or {}).get(key), str):
            embed[section] = {**embed[section], key: _absolute(embed[section][key], base)}
    if embed:
        out["embed"] = embed
    lmm = dict(out.get("lmm") or {})
    if isinstance(lmm.get("model"), str) and (base / lmm["model"]).is_dir():  # a local folder, not a hub id
        lmm["model"] = _absolute(lmm["model"], base)
        out["lmm"] = lmm
    return out


def _git(root: Path, *args: str) -> str:
    from mmd.cycle import _run, _tool

    return _run([_tool("git"), *args], root, f"git {args[0]}").stdout.strip()


def _dvc(root: Path, *args: str) -> str:
    from mmd.cycle import _run, _tool

    return _run([_tool("dvc"), *args], root, f"dvc {args[0]}").stdout.strip()


def init_project(folder: Path, base: Path | None = None, remote: str | None = None) -> Project:
    """Write the project (see the module docstring); ConfigError when `folder` holds one already or
    `base` is not a params file mmd can read."""
    from mmd.dvcfile import write as write_dvc_yaml

    root = Path(folder).resolve()
    if (root / "params.yaml").exists() or (root / "dvc.yaml").exists():
        raise ConfigError(f"{root} already holds a params.yaml or dvc.yaml: mmd init makes a new project")
    data = rebase_paths(read_params_file(Path(base)), Path(base).resolve().parent, root) if base else {}
    data = merge_params(data, {"paths": {"data": "data", "reports": "reports"}, "cycle": {"commit": True}})
    params = parse_params(data, str(base or "the built-in defaults"))  # refuse a bad file before writing anything
    root.mkdir(parents=True, exist_ok=True)
    dumped = params.model_dump(mode="json", by_alias=True)
    text = "# params of an mmd deployment (mmd init): every section, complete; relative paths are relative to this file\n"
    if not dumped["ingest"]["sources"]:
        text += EXAMPLE_SOURCES
    atomic_write_text(root / "params.yaml", text + yaml.safe_dump(dumped, sort_keys=False, allow_unicode=True))
    (root / "inbox").mkdir(exist_ok=True)
    (root / ".gitignore").write_text(GITIGNORE)
    (root / ".dvcignore").write_text(DVCIGNORE)
    if not (root / ".git").exists():
        _git(root, "init", "-q")
    if not (root / ".dvc").exists():
        _dvc(root, "init", "-q")
    _dvc(root, "config", "core.analytics", "false")
    _dvc(root, "config", "core.autostage", "true")
    remote = remote or str(root / ".dvc-storage")
    _dvc(root, "remote", "add", "-d", "-f", "storage", remote)
    write_dvc_yaml(load_settings(root / "params.yaml"), code=False)
    (root / "README.md").write_text(README.format(name=root.name, remote=remote))
    _git(root, "add", "-A")
    who = ["-c", "user.name=mmd", "-c", f"user.email={params.notify.sender}"]
    has_identity = subprocess.run(["git", "config", "--get", "user.email"], cwd=root, capture_output=True).returncode == 0
    _git(root, *([] if has_identity else who), "commit", "-q", "-m", "mmd init")
    return Project(root, root / "params.yaml", remote, _git(root, "rev-parse", "HEAD"))
