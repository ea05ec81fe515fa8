"""A registered version, and what it came from: its files' digest, the code commit, dvc.lock, the params."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from mmd.items import sha256_hex

GIT_TIMEOUT_S = 5
# written by the registry beside a model, not part of it
METADATA_FILES = ("version.json", "card.md", "card.html")


class RegistryError(ValueError):
    """An unknown family or version, nothing to roll back to, a damaged alias, a bad model folder."""


def _files(folder: Path, exclude: Iterable[str] = ()) -> list[tuple[str, Path]]:
    """(relative posix path, path) of every file under `folder`, sorted; `exclude` names top-level entries."""
    skip = set(exclude)
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if rel.parts[0] in skip or not path.is_file():
            continue
        found.append((rel.as_posix(), path))
    return sorted(found)


def model_digest(model_dir: Path, *, exclude: Iterable[str] = ()) -> str:
    """sha256 over every file's relative path, size and contents: the same model gives the same digest
    wherever it lies. `exclude`: top-level names to leave out (a version folder's metadata and extras)."""
    h = hashlib.sha256()
    for rel, path in _files(Path(model_dir), exclude):
        h.update(f"{rel}\0{path.stat().st_size}\0".encode("utf-8"))
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _git(root: Path, *args: str) -> str | None:
    """stdout of `git <args>` in root, or None: no git, not a repository, an error, too slow."""
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=GIT_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _read_config(model_dir: Path) -> dict:
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RegistryError(f"no readable config.json in {model_dir}: {e}") from e
    if not isinstance(config, dict):
        raise RegistryError(f"{model_dir}/config.json is not a JSON object")
    return config


def lineage(root: Path, model_dir: Path, params_sections: dict) -> dict:
    """What a version came from: the code commit of `root` (None when git or the repository is
    unavailable) and whether tracked files had uncommitted changes, the dvc.lock hash, the
    parameters and their hash, the encoder, the training time, the model digest and the data summary."""
    root = Path(root)
    head = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--untracked-files=no") if head else None
    lock = root / "dvc.lock"
    config = _read_config(model_dir)
    return {
        "code_commit": head.strip() if head else None,
        "code_dirty": bool(status.strip()) if status is not None else None,
        "dvc_lock": sha256_hex(lock.read_bytes()) if lock.is_file() else None,
        "params_hash": sha256_hex(json.dumps(params_sections, sort_keys=True, default=str)),
        "params": params_sections,
        "encoder": config.get("encoder"),
        "trained_at": config.get("trained_at"),
        "model_digest": model_digest(model_dir),
        "data": config.get("data"),
    }


@dataclass
class Version:
    family: str
    number: int
    path: Path  # the version folder
    digest: str  # model_digest of the model files (not version.json, the cards or the extras)
    created_at: str
    lineage: dict
    metrics: dict
    extras: list[str] = field(default_factory=list)  # names of the extra files copied beside the model

    @property
    def name(self) -> str:
        return f"{self.family} v{self.number}"

    def to_dict(self) -> dict:
        return {"family": self.family, "number": self.number, "name": self.name, "path": str(self.path),
                "digest": self.digest, "created_at": self.created_at, "lineage": self.lineage,
                "metrics": self.metrics, "extras": self.extras}

    def verify(self) -> bool:
        """Whether the model files on disk still have the registered digest."""
        return model_digest(self.path, exclude=(*METADATA_FILES, *self.extras)) == self.digest
