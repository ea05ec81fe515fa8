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

import heapq
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mmd.items import now_iso
from mmd.registry.provenance import (METADATA_FILES, RegistryError, Version, _files, _read_config, lineage,
                                     model_digest)
from mmd.util import TMP_PREFIX, atomic_write_text, dumps, file_lock, fsync_dir

__all__ = ["METADATA_FILES", "Registry", "RegistryError", "Version", "lineage", "model_digest"]
FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
EVENTS = ("registered", "promoted", "held", "rolled_back", "recovered")
ALIAS_EVENTS = ("promoted", "rolled_back")  # and `recovered` events with recovers == "alias"
# a name starting with TMP_PREFIX is a crash leftover when no writer holds the lock
LOCK_NAME = ".lock"
VERSION_DIR = re.compile(r"^v(\d{4,})$")


def _fsync_tree(folder: Path) -> None:
    for _, path in _files(folder):
        with path.open("rb") as f:
            os.fsync(f.fileno())
    for sub in sorted((p for p in folder.rglob("*") if p.is_dir()), reverse=True):
        fsync_dir(sub)
    fsync_dir(folder)


def _atomic(path: Path, text: str) -> None:
    atomic_write_text(path, text, durable=True)






# --- versions ---------------------------------------------------------------------------------------



def _folder_name(number: int) -> str:
    return f"v{number:04d}"


# --- the registry -----------------------------------------------------------------------------------

class Registry:
    def __init__(self, root: Path):
        """Open the registry at `root` (created on the first register). Every family not being written
        right now by another process is tidied: crash leftovers removed, a lost history event recorded."""
        self.root = Path(root)
        for family in self._folders():
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
        return [f for f in self._folders() if self._numbers(f)]

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
        return list(heapq.merge(*(self._history(f) for f in self._folders()), key=lambda e: e.get("at") or ""))

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
                (tmp / "version.json").write_text(dumps(meta), encoding="utf-8")
                self._write_card_files(version)
                _fsync_tree(tmp)
                final = versions_dir / _folder_name(number)
                os.rename(tmp, final)  # the version appears whole, or not at all
                fsync_dir(versions_dir)
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

    def _folders(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and FAMILY_NAME.match(p.name)) \
            if self.root.is_dir() else []

    def _check_family(self, family: str) -> None:
        if not FAMILY_NAME.match(family):
            raise RegistryError(f"{family!r} cannot name a model family (lower-case letters, digits and _)")

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
        _atomic(self._alias_path(family), dumps(alias))

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
        from mmd.registry.card import card_page, render_card
        text = render_card(version, _read_config(version.path), evaluation, decision)
        md_path, html_path = version.path / "card.md", version.path / "card.html"
        _atomic(md_path, text)
        _atomic(html_path, card_page(version, text))
        return md_path, html_path


