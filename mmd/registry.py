"""The model registry: numbered versions per detector family, a champion alias, promotion,
rollback, an audit log and a model card per version.

Layout under the registry's root (one folder per family: cmc, rgcl, lmm):

    <family>/versions/v0001/   the trained model folder, copied whole, + version.json,
                               card.md, card.html and any extra files given at register
    <family>/champion.json     the alias: {"version", "since", "reason", "stack"}; "stack"
                               holds the previous champions, most recent last
    <family>/history.jsonl     append-only audit log, one event a line: registered,
                               promoted, held, rolled_back, recovered

Why a small file-based registry rather than GTO/DVC artifacts: GTO versions are git tags on
commits, so an unattended scheduled cycle would have to commit, tag and push from the
scheduler, and a rollback would need the old commit's DVC objects fetched back first. Here
each version keeps its exact files, so serving and rollback work offline and atomically; every
version records the git commit and the dvc.lock hash it came from (`lineage`), so it maps onto
DVC/GTO lineage when that is wanted.

Crash safety. A version is copied into `versions/.tmp-<random>`, fsynced and renamed to its
`vNNNN` name in one step; the alias is replaced with a temp file + fsync + os.replace. A crash
leaves either the old state or the new one, plus perhaps a `.tmp-*` leftover that the next
`Registry(root)` removes. History is appended after the change it records; a crash between the
two is noticed on open and a `recovered` event is appended saying what the alias (the truth)
says. Writers of one family are serialised by an flock on `<family>/.lock`; readers take no
lock (every file they read is replaced atomically).
"""

from __future__ import annotations

import hashlib
import heapq
import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from mmd.items import now_iso, sha256_hex
from mmd.util import file_lock

if TYPE_CHECKING:
    from mmd.config import Settings

FAMILIES = ("cmc", "rgcl", "lmm")
EVENTS = ("registered", "promoted", "held", "rolled_back", "recovered")
ALIAS_EVENTS = ("promoted", "rolled_back")  # and `recovered` events with recovers == "alias"
METADATA_FILES = ("version.json", "card.md", "card.html")  # written by the registry, not part of the model
TMP_PREFIX = ".tmp-"  # anything named so is a crash leftover when no writer holds the lock
LOCK_NAME = ".lock"
VERSION_DIR = re.compile(r"^v(\d{4,})$")
GIT_TIMEOUT_S = 5


class RegistryError(ValueError):
    """An unknown family or version, nothing to roll back to, a damaged alias, a bad model folder."""


def registry_root(settings: Settings) -> Path:
    """Where the project's registry lives: <data>/registry."""
    return settings.data_dir / "registry"


# --- what a version is made of: its files' digest and its lineage --------------------------------

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


# --- atomic files -----------------------------------------------------------------------------------

def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for _, path in _files(folder):
        with path.open("rb") as f:
            os.fsync(f.fileno())
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(sub)
    _fsync_dir(folder)


def _atomic_write_text(path: Path, text: str) -> None:
    """Temp file beside `path`, fsync, os.replace, fsync the folder: a crash leaves the old file or the new."""
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}-", dir=path.parent)
    try:
        os.chmod(tmp, path.parent.stat().st_mode & 0o666)  # as readable as its folder, not mkstemp's 0600
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


# --- versions ---------------------------------------------------------------------------------------

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


def _folder_name(number: int) -> str:
    return f"v{number:04d}"


# --- the registry -----------------------------------------------------------------------------------

class Registry:
    def __init__(self, root: Path):
        """Open the registry at `root` (created on the first register). Every family not being written
        right now by another process is tidied: crash leftovers removed, a lost history event recorded."""
        self.root = Path(root)
        for family in FAMILIES:
            if not (self.root / family).is_dir():
                continue
            try:
                with self._lock(family, wait=False) as got:
                    if got:
                        self._remove_leftovers(family)
                        self._recover(family)
            except OSError:
                pass  # a read-only registry is served as it is

    # reading ---------------------------------------------------------------------------------------

    def families(self) -> list[str]:
        """The families with at least one version."""
        return [f for f in FAMILIES if self._versions_dir(f).is_dir() and self._numbers(f)]

    def versions(self, family: str) -> list[Version]:
        """Every version of `family`, ascending."""
        return [self.get(family, n) for n in self._numbers(family)]

    def get(self, family: str, number: int) -> Version:
        folder = self._versions_dir(family) / _folder_name(int(number))
        try:
            meta = json.loads((folder / "version.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RegistryError(f"{family} v{number} is not registered (no {folder})") from None
        except (OSError, ValueError) as e:
            raise RegistryError(f"{folder}/version.json is unreadable: {e}") from e
        return Version(family=family, number=int(number), path=folder, digest=meta["digest"],
                       created_at=meta["created_at"], lineage=meta.get("lineage") or {},
                       metrics=meta.get("metrics") or {}, extras=list(meta.get("extras") or []))

    def champion(self, family: str) -> Version | None:
        """The version champion.json names; None when no version was ever promoted. A damaged alias
        (unreadable, or naming a missing version) is a RegistryError, never a silent None."""
        alias = self._read_alias(family)
        if alias is None:
            last = self._last_alias_event(family)
            if last is not None:
                raise RegistryError(f"{self._alias_path(family)} is missing, but the history says "
                                    f"{family} v{last['version']} is the champion: roll back or promote "
                                    "explicitly to restore it")
            return None
        try:
            return self.get(family, alias["version"])
        except RegistryError as e:
            raise RegistryError(f"champion.json names {family} v{alias['version']}, which cannot be read ({e}): "
                                "roll back or promote explicitly") from e

    def serving_dir(self, family: str) -> Path | None:
        """The champion's folder: what to load for serving; None when there is no champion."""
        version = self.champion(family)
        return version.path if version else None

    def history(self, family: str | None = None) -> list[dict]:
        """The audit log of one family, or of all merged in time order; each event names its family."""
        if family is not None:
            return self._history(family)
        return list(heapq.merge(*(self._history(f) for f in FAMILIES), key=lambda e: e.get("at") or ""))

    # writing ---------------------------------------------------------------------------------------

    def register(self, family: str, model_dir: Path, lineage: dict, metrics: dict,
                 extra_files: dict[str, Path] | None = None, *, reason: str = "", by: str = "train"
                 ) -> tuple[Version, bool]:
        """Copy `model_dir` (the whole folder) into the next version, atomically: into
        versions/.tmp-<random>, with version.json and a first model card, fsynced, then renamed to
        vNNNN. A model whose digest is already registered is not copied again: (that version, False).
        `extra_files`: name -> file copied beside the model (a reference set, an evaluation report).
        Appends a `registered` event. Returns (version, created)."""
        self._check_family(family)
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise RegistryError(f"no model folder at {model_dir}")
        config = _read_config(model_dir)
        if config.get("model", family) != family:
            raise RegistryError(f"{model_dir} holds a {config.get('model')!r} model, not {family!r}")
        top_level = {p.name for p in model_dir.iterdir()}
        if reserved := top_level & set(METADATA_FILES):
            raise RegistryError(f"{model_dir} holds {sorted(reserved)}, names the registry keeps for itself")
        extras = {name: Path(src) for name, src in (extra_files or {}).items()}
        for name, src in extras.items():
            if "/" in name or name.startswith(".") or name in METADATA_FILES or name in top_level:
                raise RegistryError(f"extra file name {name!r} is not a plain name free in the version folder")
            if not src.is_file():
                raise RegistryError(f"extra file {name!r}: no file at {src}")
        digest = model_digest(model_dir)

        with self._lock(family):
            for existing in self.versions(family):
                if existing.digest == digest:
                    return existing, False
            versions_dir = self._versions_dir(family)
            versions_dir.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=versions_dir))
            try:
                os.chmod(tmp, versions_dir.stat().st_mode & 0o777)  # mkdtemp's 0700 would hide it from servers
                shutil.copytree(model_dir, tmp, dirs_exist_ok=True)
                for name, src in extras.items():
                    shutil.copy2(src, tmp / name)
                if model_digest(tmp, exclude=extras) != digest:
                    raise RegistryError(f"{model_dir} changed while it was being registered: register it again")
                number = (self._numbers(family) or [0])[-1] + 1
                version = Version(family, number, tmp, digest, now_iso(), dict(lineage), dict(metrics), sorted(extras))
                meta = {k: v for k, v in version.to_dict().items() if k not in ("path", "name")}
                (tmp / "version.json").write_text(_dumps(meta), encoding="utf-8")
                self._write_card_files(version)
                _fsync_tree(tmp)
                final = versions_dir / _folder_name(number)
                os.rename(tmp, final)  # the version appears whole, or not at all
                _fsync_dir(versions_dir)
            except Exception:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            version.path = final
            self._event(family, "registered", number, None, reason or f"registered from {model_dir}", by,
                        digest=digest)
        return version, True

    def promote(self, family: str, number: int, reason: str, decision: dict | None = None,
                by: str = "gate") -> Version:
        """Make `number` the champion (the previous one goes on the stack) and append `promoted`.
        Promoting the current champion returns it and records nothing."""
        with self._lock(family):
            version = self.get(family, number)
            alias, broken = self._alias_for_update(family)
            current = alias["version"] if alias else None
            if current == version.number:
                return version
            stack = [*alias["stack"], current] if alias else []
            if broken:
                reason = f"{reason} (champion.json was unreadable: {broken}; the rollback stack restarts here)"
            self._set_alias(family, version.number, reason, stack)
            self._event(family, "promoted", version.number, current, reason, by, decision)
        return version

    def hold(self, family: str, number: int, reason: str, decision: dict | None = None,
             by: str = "gate") -> None:
        """Record that challenger `number` was not promoted (event `held`, from_version = the champion)."""
        with self._lock(family):
            version = self.get(family, number)
            alias, _ = self._alias_for_update(family)
            self._event(family, "held", version.number, alias["version"] if alias else None, reason, by, decision)

    def rollback(self, family: str, to: int | None = None, reason: str = "", by: str = "cli") -> Version:
        """Back to the previous champion (the top of the stack), or to version `to` (any registered
        version but the current champion; the stack is cut below its last appearance). Atomic like
        promote; appends `rolled_back`. RegistryError when there is nothing to roll back to."""
        with self._lock(family):
            if to is None:
                alias, broken = self._read_alias(family), None
            else:
                alias, broken = self._alias_for_update(family)
            if alias is None and not broken:
                raise RegistryError(f"{family} has no champion to roll back from: promote a version first")
            current = alias["version"] if alias else None
            stack = list(alias["stack"]) if alias else []
            if to is None:
                if not stack:
                    raise RegistryError(f"nothing to roll back to: {family} v{current} has no previous champion")
                to = stack[-1]
            version = self.get(family, to)
            if version.number == current:
                raise RegistryError(f"{family} v{current} is already the champion")
            if version.number in stack:
                stack = stack[:len(stack) - 1 - stack[::-1].index(version.number)]
            reason = reason or (f"rolled back from v{current}" if current else "champion restored")
            if broken:
                reason = f"{reason} (champion.json was unreadable: {broken})"
            self._set_alias(family, version.number, reason, stack)
            self._event(family, "rolled_back", version.number, current, reason, by)
        return version

    def write_card(self, version: Version, evaluation: dict | None = None,
                   decision: dict | None = None) -> tuple[Path, Path]:
        """card.md and card.html in the version's folder (replacing the ones there): what the model is,
        its lineage and training data, its metrics (`evaluation` when given, else the registered
        metrics), the gate's decision, intended use and limitations."""
        with self._lock(version.family):
            return self._write_card_files(version, evaluation, decision)

    # internals ---------------------------------------------------------------------------------------

    def _check_family(self, family: str) -> None:
        if family not in FAMILIES:
            raise RegistryError(f"unknown model family {family!r}: one of {', '.join(FAMILIES)}")

    def _versions_dir(self, family: str) -> Path:
        self._check_family(family)
        return self.root / family / "versions"

    def _alias_path(self, family: str) -> Path:
        self._check_family(family)
        return self.root / family / "champion.json"

    def _numbers(self, family: str) -> list[int]:
        folder = self._versions_dir(family)
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := VERSION_DIR.match(p.name)) and p.is_dir())

    def _lock(self, family: str, wait: bool = True):
        """An exclusive flock on <family>/.lock (see `mmd.util.file_lock`)."""
        self._check_family(family)
        return file_lock(self.root / family / LOCK_NAME, wait)

    def _read_alias(self, family: str) -> dict | None:
        path = self._alias_path(family)
        try:
            alias = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise RegistryError(f"{path} is unreadable ({e}): roll back or promote explicitly to repair it") from e
        if not (isinstance(alias, dict) and isinstance(alias.get("version"), int)
                and isinstance(alias.get("stack", []), list)):
            raise RegistryError(f"{path} does not name a version: roll back or promote explicitly to repair it")
        alias.setdefault("stack", [])
        return alias

    def _alias_for_update(self, family: str) -> tuple[dict | None, str | None]:
        """(alias, None), or (None, why) when champion.json is damaged: an explicit promote or
        rollback(to=) may then overwrite it."""
        try:
            return self._read_alias(family), None
        except RegistryError as e:
            return None, str(e)

    def _set_alias(self, family: str, number: int, reason: str, stack: list[int]) -> None:
        alias = {"version": number, "since": now_iso(), "reason": reason, "stack": stack}
        _atomic_write_text(self._alias_path(family), _dumps(alias))

    def _history_path(self, family: str) -> Path:
        self._check_family(family)
        return self.root / family / "history.jsonl"

    def _history(self, family: str) -> list[dict]:
        """The family's events in file order; a line torn by a crash is skipped."""
        try:
            lines = self._history_path(family).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                event.setdefault("family", family)
                events.append(event)
        return events

    def _event(self, family: str, event: str, version: int | None, from_version: int | None, reason: str,
               by: str, decision: dict | None = None, **more: Any) -> dict:
        """Append one event to history.jsonl (fsynced), after the change it records."""
        assert event in EVENTS, event
        record = {"at": now_iso(), "family": family, "event": event, "version": version,
                  "from_version": from_version, "reason": reason, "by": by, "decision": decision, **more}
        path = self._history_path(family)
        line = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str) + "\n"
        with path.open("ab+") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():  # a crash may have torn the last line: start on a fresh one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write(line.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        return record

    def _last_alias_event(self, family: str) -> dict | None:
        for event in reversed(self._history(family)):
            if event.get("event") in ALIAS_EVENTS or (event.get("event") == "recovered"
                                                       and event.get("recovers") == "alias"):
                return event
        return None

    def _remove_leftovers(self, family: str) -> None:
        """Remove `.tmp-*` files and folders a crashed writer left (caller holds the lock)."""
        base = self.root / family
        places = [base, base / "versions", *(base / "versions" / _folder_name(n) for n in self._numbers(family))]
        for place in places:
            if not place.is_dir():
                continue
            for leftover in place.glob(f"{TMP_PREFIX}*"):
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)

    def _recover(self, family: str) -> None:
        """Make the history agree with the disk after a crash between a change and its event
        (caller holds the lock): a version without its `registered` event, an alias that moved
        without its `promoted`/`rolled_back` event. The disk is the truth; `recovered` says so."""
        events = self._history(family)
        recorded = {e.get("version") for e in events
                    if e.get("event") == "registered" or e.get("recovers") == "registered"}
        for number in self._numbers(family):
            if number not in recorded:
                self._event(family, "recovered", number, None,
                            f"v{number} was registered but its `registered` event was lost in a crash",
                            "registry", recovers="registered")
        try:
            alias = self._read_alias(family)
        except RegistryError:
            return  # champion() reports it; an explicit promote or rollback repairs it
        last = self._last_alias_event(family)
        if alias is not None and (last is None or last.get("version") != alias["version"]):
            was = last.get("version") if last else None
            self._event(family, "recovered", alias["version"], was,
                        f"champion.json names v{alias['version']} (since {alias.get('since')}, reason: "
                        f"{alias.get('reason')!s}) but the history's last alias event "
                        f"{'named v' + str(was) if last else 'is missing'}: a crash came between the alias "
                        "change and its event; the alias is the truth", "registry", recovers="alias")

    def _write_card_files(self, version: Version, evaluation: dict | None = None,
                          decision: dict | None = None) -> tuple[Path, Path]:
        import markdown

        config = _read_config(version.path)
        text = render_card(version, config, evaluation, decision)
        md_path, html_path = version.path / "card.md", version.path / "card.html"
        body = markdown.markdown(text, extensions=["tables"], output_format="html")
        _atomic_write_text(md_path, text)
        _atomic_write_text(html_path, _html_page(f"{version.name} model card", body))
        return md_path, html_path


# --- model cards ------------------------------------------------------------------------------------

INTENDED_USE = {
    "cmc": "Scores text + image posts for likely misinformation, to rank them for fact-checkers and "
           "moderators. CMC (Wei et al., ICASSP 2022): text and image networks on frozen encoder features "
           "distil into each other with a contrastive cross-modal loss, then a BLOCK fusion layer combines them.",
    "rgcl": "Scores memes and posts for hateful or misleading content, to rank them for moderators. RGCL "
            "(Mei et al., ACL 2024): retrieval-guided contrastive learning; the retrieval kNN classifier (RKC) "
            "votes over a database of labelled examples that grows with moderators' labels.",
    "lmm": "Scores memes and posts for hateful or misleading content, to rank them for moderators. A "
           "vision-language model fine-tuned with LoRA adapters (and, in the LMM-RGCL recipe, a "
           "retrieval-guided head on its hidden states).",
}

LIMITATIONS = [
    "Trained only on the data listed above; other languages, platforms, topics or meme formats may score "
    "worse than the metrics shown, and the synthetic share of the training data is stated above.",
    "Scores are calibrated on the validation split; that calibration drifts as fresh data drifts.",
    "A decision aid, not a substitute for human review: every flag goes to a moderator or fact-checker.",
]
FAMILY_LIMITATIONS = {
    "rgcl": "Predictions depend on the retrieval database as well as the weights: a label added to the "
            "database changes later scores without a new version.",
    "lmm": "The base model is not copied into the version: it is loaded again by name, so serving needs the "
           "same base model weights.",
}

CONFIG_ESSENTIALS = ("variant", "recipe", "base_model", "scorer", "finetuned", "temperature", "label_names",
                     "best_epoch", "best_epochs")


def _md(value: Any) -> str:
    """A value as inline Markdown text: HTML escaped, Markdown's special characters backslashed
    (not `_`: Python-Markdown ignores it inside words, and names stay greppable), one line, so a
    caller's string cannot open a tag, a link, code or a new table row."""
    text = " ".join(_fmt(value).split())
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`*\[\]|])", r"\\\1", text)


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _code(value: Any) -> str:
    """Hex strings (digests, commits) as code; anything else as escaped text."""
    return f"`{value}`" if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{6,}", value) else _md(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; cells must already be escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _metrics_lines(metrics: dict) -> list[str]:
    """Top-level scalars as one table; each split (a dict) as a table of its scalars with their
    confidence intervals ("ci"), then its per-class table ("per_class")."""
    lines: list[str] = []
    scalars = {k: v for k, v in metrics.items() if _is_scalar(v)}
    if scalars:
        lines += _table(["Metric", "Value"], [[_md(k), _md(v)] for k, v in scalars.items()])
    for split, values in metrics.items():
        if not isinstance(values, dict):
            continue
        lines += [f"### {_md(split)}", ""]
        ci = values.get("ci") if isinstance(values.get("ci"), dict) else {}
        rows = []
        for name, value in values.items():
            if _is_scalar(value):
                interval = ci.get(name)
                shown = (f"[{_fmt(interval[0])}, {_fmt(interval[1])}]"
                         if isinstance(interval, (list, tuple)) and len(interval) == 2 else "—")
                rows.append([_md(name), _md(value), shown])
        if rows:
            lines += _table(["Metric", "Value", "Confidence interval"], rows)
        per_class = values.get("per_class")
        if isinstance(per_class, dict) and per_class:
            columns = sorted({k for v in per_class.values() if isinstance(v, dict) for k in v if _is_scalar(v[k])})
            lines += _table(["Class", *(_md(c) for c in columns)],
                            [[_md(name), *(_md(v.get(c)) for c in columns)]
                             for name, v in per_class.items() if isinstance(v, dict)])
    return lines or ["No metrics recorded.", ""]


def _data_lines(data: Any, label_names: list | None) -> list[str]:
    if not isinstance(data, dict) or not data:
        return ["No training data summary in config.json.", ""]
    splits = {k: v for k, v in data.items() if isinstance(v, dict)}
    lines: list[str] = []
    if splits:
        columns = sorted({k for v in splits.values() for k in v if _is_scalar(v[k])},
                         key=lambda c: (c != "items", c))

        def title(column: str) -> str:
            m = re.fullmatch(r"label_(\d+)", column)
            if m and label_names and int(m.group(1)) < len(label_names):
                return _md(f"{column} ({label_names[int(m.group(1))]})")
            return _md(column)

        lines += _table(["Split", *(title(c) for c in columns)],
                        [[_md(name), *(_md(v.get(c)) for c in columns)] for name, v in splits.items()])
    lines += [f"- {_md(k)}: {_md(v)}" for k, v in data.items() if not isinstance(v, dict)]
    return lines + [""]


def _decision_lines(decision: dict) -> list[str]:
    lines = [f"**Status:** {_md(decision.get('status'))}", ""]
    reasons = decision.get("reasons") or []
    lines += [f"- {_md(r)}" for r in reasons] or ["- no reasons given"]
    lines.append("")
    checks = [c for c in decision.get("checks") or [] if isinstance(c, dict)]
    if checks:
        lines += _table(["Check", "Status", "Score", "Threshold", "Reasons"],
                        [[_md(c.get("name")), _md(c.get("status")), _md(c.get("score")), _md(c.get("threshold")),
                          _md("; ".join(map(str, c.get("reasons") or [])) or None)] for c in checks])
    return lines


def render_card(version: Version, config: dict, evaluation: dict | None = None,
                decision: dict | None = None) -> str:
    """The model card's Markdown."""
    lin = version.lineage
    essentials = {k: config[k] for k in CONFIG_ESSENTIALS if k in config}
    if isinstance(config.get("rgcl"), dict):
        essentials["predict_with"] = config["rgcl"].get("predict_with")
    lines = [f"# {_md(version.name)} — model card", ""]
    lines += _table(["Field", "Value"], [
        ["Family", _md(version.family)],
        ["Version", f"v{version.number}"],
        ["Digest", f"`{version.digest[:12]}`"],
        ["Registered", _md(version.created_at)],
        ["Trained", _md(config.get("trained_at") or lin.get("trained_at"))],
        ["Encoder", _md(config.get("encoder") or lin.get("encoder"))],
        *[[_md(k.replace("_", " ").capitalize()), _md(v)] for k, v in essentials.items()],
    ])
    lines += ["## Lineage", ""]
    known = [("Data version", "data_version"), ("dvc.lock hash", "dvc_lock"), ("Params hash", "params_hash"),
             ("Code commit", "code_commit"), ("Uncommitted changes", "code_dirty"), ("Model digest", "model_digest")]
    rows = [[name, _code(lin.get(key))] for name, key in known]
    shown = {key for _, key in known} | {"params", "data", "encoder", "trained_at"}
    rows += [[_md(k), _code(v)] for k, v in lin.items() if k not in shown and _is_scalar(v)]
    lines += _table(["Field", "Value"], rows)
    lines += ["## Training data", ""] + _data_lines(config.get("data", lin.get("data")), config.get("label_names"))
    lines += ["## Metrics", ""]
    if evaluation is None:
        lines += ["Registered metrics (from training):", ""]
    lines += _metrics_lines(evaluation if evaluation is not None else version.metrics)
    if decision is not None:
        lines += ["## Gate decision", ""] + _decision_lines(decision)
    lines += ["## Intended use", "", INTENDED_USE.get(version.family, ""), "", "## Limitations", ""]
    lines += [f"- {text}" for text in LIMITATIONS]
    if version.family in FAMILY_LIMITATIONS:
        lines.append(f"- {FAMILY_LIMITATIONS[version.family]}")
    return "\n".join(lines) + "\n"


def _html_page(title: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5rem 0 1rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }}
th {{ background: #f3f3f3; }}
code {{ background: #f3f3f3; padding: 0 0.2rem; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""
