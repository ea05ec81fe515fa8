"""The model registry: versions, the champion alias, rollback, crash safety, cards, lineage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

import mmd.registry.provenance as lineage_module
from mmd import registry as registry_module
from mmd.registry import METADATA_FILES, Registry, RegistryError, lineage, model_digest


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no in-process clean-up runs."""


def make_model(folder: Path, weights: bytes = b"weights-1", family: str = "cmc", accuracy: float = 0.8123) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model": family, "encoder": "offline:test-encoder:v1", "trained_at": "2026-01-01T00:00:00+00:00",
              "variant": "cmc", "label_names": ["real", "fake"],
              "data": {"train": {"items": 20, "label_0": 8, "label_1": 12, "synthetic": 5},
                       "val": {"items": 6, "label_0": 3, "label_1": 3, "synthetic": 0}, "test": None}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps({"val": {"accuracy": accuracy, "macro_f1": 0.7}}))
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "tokenizer.json").write_text("{}")
    return folder


def snapshot(folder: Path, skip=METADATA_FILES) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.relative_to(folder).parts[0] not in skip}


def register(reg: Registry, folder: Path, family: str = "cmc", **kw):
    return reg.register(family, folder, {"code_commit": "abc1234", "data_version": "d1"},
                        json.loads((folder / "metrics.json").read_text()), **kw)


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def three_versions(reg: Registry, tmp_path: Path) -> list:
    src = tmp_path / "src"
    return [register(reg, make_model(src, f"w{i}".encode()))[0] for i in (1, 2, 3)]


# --- registering -----------------------------------------------------------------------------------

def test_register_is_idempotent_and_a_changed_file_makes_a_new_version(reg, tmp_path):
    src = make_model(tmp_path / "model")
    v1, created = register(reg, src)
    again, created_again = register(reg, src)
    assert (created, created_again) == (True, False)
    assert again.number == v1.number == 1 and again.digest == v1.digest
    assert [v.number for v in reg.versions("cmc")] == [1]
    assert v1.name == "cmc v1" and v1.path.name == "v0001"

    copy = make_model(tmp_path / "elsewhere")  # the same model in another folder: same digest
    assert model_digest(copy) == v1.digest
    assert register(reg, copy) == (reg.get("cmc", 1), False)

    (src / "model.safetensors").write_bytes(b"weights-2")
    v2, created = register(reg, src)
    assert created and v2.number == 2 and v2.digest != v1.digest
    assert [v.number for v in reg.versions("cmc")] == [1, 2]
    assert [e["event"] for e in reg.history("cmc")] == ["registered", "registered"]
    assert reg.families() == ["cmc"]


def test_register_copies_the_whole_folder_and_the_extra_files(reg, tmp_path):
    src = make_model(tmp_path / "model")
    reference = tmp_path / "reference.parquet"
    reference.write_bytes(b"ref")
    version, _ = register(reg, src, extra_files={"reference.parquet": reference})
    assert snapshot(version.path, skip=(*METADATA_FILES, "reference.parquet")) == snapshot(src)
    assert (version.path / "reference.parquet").read_bytes() == b"ref"
    assert (version.path / "card.md").exists() and (version.path / "card.html").exists()
    meta = json.loads((version.path / "version.json").read_text())
    assert meta["family"] == "cmc" and meta["number"] == 1 and meta["digest"] == version.digest
    assert meta["lineage"]["data_version"] == "d1" and meta["metrics"]["val"]["accuracy"] == 0.8123
    assert version.extras == ["reference.parquet"] and version.verify()
    assert version.digest == model_digest(src)  # extras, version.json and the cards are not the model
    assert reg.get("cmc", 1).to_dict() == version.to_dict()
    (version.path / "model.safetensors").write_bytes(b"tampered")
    assert not version.verify()


def test_register_refuses_bad_input(reg, tmp_path):
    src = make_model(tmp_path / "model")
    with pytest.raises(RegistryError, match="cannot name a model family"):
        reg.register("../cmc", src, {}, {})
    with pytest.raises(RegistryError, match="not 'bert'"):  # any family may register, but only its own models
        reg.register("bert", src, {}, {})
    with pytest.raises(RegistryError, match="not 'rgcl'"):
        reg.register("rgcl", src, {}, {})
    with pytest.raises(RegistryError, match="no model folder"):
        reg.register("cmc", tmp_path / "missing", {}, {})
    with pytest.raises(RegistryError, match="plain name"):
        reg.register("cmc", src, {}, {}, extra_files={"config.json": src / "config.json"})
    with pytest.raises(RegistryError, match="no file"):
        reg.register("cmc", src, {}, {}, extra_files={"evaluation.json": tmp_path / "nope.json"})
    with pytest.raises(RegistryError, match="not registered"):
        reg.get("cmc", 7)
    assert reg.versions("cmc") == [] and reg.champion("cmc") is None and reg.serving_dir("cmc") is None
    assert not (tmp_path / "registry" / "bert").exists()


def test_concurrent_registers_get_distinct_numbers(reg, tmp_path):
    sources = [make_model(tmp_path / f"m{i}", f"w{i}".encode()) for i in range(4)]
    results = []
    threads = [threading.Thread(target=lambda s=s: results.append(register(reg, s))) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(v.number for v, created in results if created) == [1, 2, 3, 4]
    assert sorted(v.digest for v in reg.versions("cmc")) == sorted(model_digest(s) for s in sources)


# --- the champion, promotion and history --------------------------------------------------------------

def test_promote_champion_serving_dir_and_history(reg, tmp_path):
    v1, v2, v3 = three_versions(reg, tmp_path)
    assert reg.champion("cmc") is None and reg.serving_dir("cmc") is None

    assert reg.promote("cmc", 1, "first model", by="cli").number == 1
    assert reg.champion("cmc").number == 1 and reg.serving_dir("cmc") == v1.path
    n_events = len(reg.history("cmc"))
    assert reg.promote("cmc", 1, "again").number == 1  # the champion already: a no-op
    assert len(reg.history("cmc")) == n_events

    decision = {"status": "passed", "reasons": ["macro_f1 up 0.05"], "checks": []}
    reg.promote("cmc", 2, "gate passed", decision=decision)
    reg.hold("cmc", 3, "accuracy below the champion's", decision={"status": "failed", "reasons": ["worse"]})
    assert reg.champion("cmc").number == 2
    alias = json.loads((tmp_path / "registry" / "cmc" / "champion.json").read_text())
    assert alias["version"] == 2 and alias["stack"] == [1] and alias["reason"] == "gate passed" and alias["since"]

    events = reg.history("cmc")
    assert [(e["event"], e["version"], e["from_version"]) for e in events] == [
        ("registered", 1, None), ("registered", 2, None), ("registered", 3, None),
        ("promoted", 1, None), ("promoted", 2, 1), ("held", 3, 2)]
    promoted = events[4]
    assert promoted["reason"] == "gate passed" and promoted["by"] == "gate" and promoted["decision"] == decision
    assert events[3]["by"] == "cli" and events[3]["decision"] is None
    assert all(e["at"] and e["family"] == "cmc" for e in events)
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)

    rgcl, _ = register(reg, make_model(tmp_path / "rgcl", b"r", family="rgcl"), family="rgcl")
    everything = reg.history()
    assert {e["family"] for e in everything} == {"cmc", "rgcl"} and len(everything) == len(events) + 1
    assert [e["at"] for e in everything] == sorted(e["at"] for e in everything)
    assert reg.families() == ["cmc", "rgcl"]
    with pytest.raises(RegistryError, match="not registered"):
        reg.promote("cmc", 9, "no such version")


# --- rollback -------------------------------------------------------------------------------------------

def test_rollback_walks_back_the_stack_then_refuses(reg, tmp_path):
    three_versions(reg, tmp_path)
    with pytest.raises(RegistryError, match="no champion to roll back from"):
        reg.rollback("cmc")
    for n in (1, 2, 3):
        reg.promote("cmc", n, f"promote v{n}")
    back = reg.rollback("cmc", reason="v3 misbehaves in production")
    assert back.number == 2 and reg.champion("cmc").number == 2
    last = reg.history("cmc")[-1]
    assert (last["event"], last["version"], last["from_version"], last["by"]) == ("rolled_back", 2, 3, "cli")
    assert last["reason"] == "v3 misbehaves in production"
    assert reg.rollback("cmc").number == 1
    assert reg.history("cmc")[-1]["reason"] == "rolled back from v2"
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback("cmc")
    assert reg.champion("cmc").number == 1


def test_rollback_to_a_named_version(reg, tmp_path):
    three_versions(reg, tmp_path)
    for n in (1, 2, 3):
        reg.promote("cmc", n, "")
    assert reg.rollback("cmc", to=1).number == 1  # skips v2; the stack is cut below v1
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        reg.rollback("cmc")
    assert reg.rollback("cmc", to=3).number == 3  # forward to a later version works too
    with pytest.raises(RegistryError, match="already the champion"):
        reg.rollback("cmc", to=3)
    with pytest.raises(RegistryError, match="not registered"):
        reg.rollback("cmc", to=42)
    assert reg.champion("cmc").number == 3


def test_rollback_restores_the_exact_files(reg, tmp_path):
    src = make_model(tmp_path / "model", b"\x00original weights\xff" * 100)
    original = snapshot(src)
    v1, _ = register(reg, src)
    (src / "model.safetensors").write_bytes(b"retrained")
    (src / "sub" / "tokenizer.json").unlink()
    (src / "new.bin").write_bytes(b"new")
    register(reg, src)
    reg.promote("cmc", 1, "")
    reg.promote("cmc", 2, "")
    assert snapshot(reg.serving_dir("cmc")) != original
    reg.rollback("cmc")
    served = reg.serving_dir("cmc")
    assert served == v1.path and snapshot(served) == original
    assert reg.champion("cmc").verify()


# --- crash safety ------------------------------------------------------------------------------------

def test_crash_while_moving_the_alias_leaves_the_old_champion(reg, tmp_path, monkeypatch):
    three_versions(reg, tmp_path)
    reg.promote("cmc", 1, "first")

    def crash(*args, **kwargs):
        raise Crash()

    monkeypatch.setattr(registry_module.os, "replace", crash)
    with pytest.raises(Crash):
        reg.promote("cmc", 2, "never lands")
    monkeypatch.undo()

    family = tmp_path / "registry" / "cmc"
    json.loads((family / "champion.json").read_text())  # whole, not torn
    (family / ".tmp-champion.json-stale").write_text('{"vers')  # what a killed writer leaves
    reopened = Registry(tmp_path / "registry")
    assert reopened.champion("cmc").number == 1
    assert not list(family.glob(".tmp-*"))
    assert [e["event"] for e in reopened.history("cmc")][-1] == "promoted"  # nothing to recover
    assert reopened.history("cmc")[-1]["version"] == 1
    assert reopened.promote("cmc", 2, "second try").number == 2


def test_crash_while_registering_leaves_no_half_version(reg, tmp_path, monkeypatch):
    src = make_model(tmp_path / "model")

    def crash(*args, **kwargs):
        raise Crash()

    monkeypatch.setattr(registry_module.os, "rename", crash)
    with pytest.raises(Crash):
        register(reg, src)
    monkeypatch.undo()

    versions = tmp_path / "registry" / "cmc" / "versions"
    leftovers = list(versions.glob(".tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").exists()  # copied, never renamed
    assert reg.versions("cmc") == [] and reg.history("cmc") == [] and reg.families() == []

    reopened = Registry(tmp_path / "registry")
    assert not list(versions.glob(".tmp-*"))
    version, created = register(reopened, src)
    assert created and version.number == 1 and version.verify()


def test_an_ordinary_error_while_registering_cleans_up_at_once(reg, tmp_path, monkeypatch):
    src = make_model(tmp_path / "model")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(registry_module.os, "rename", disk_full)
    with pytest.raises(OSError):
        register(reg, src)
    monkeypatch.undo()
    assert not list((tmp_path / "registry" / "cmc" / "versions").glob(".tmp-*"))
    assert register(reg, src)[0].number == 1


def crash_on(monkeypatch, kind: str) -> None:
    """The process dies just before the history event `kind` is written."""
    event = Registry._event

    def crashing(self, family, what, *args, **kwargs):
        if what == kind:
            raise Crash()
        return event(self, family, what, *args, **kwargs)

    monkeypatch.setattr(Registry, "_event", crashing)


def test_crash_after_the_alias_moved_but_before_the_history_is_recovered_on_open(reg, tmp_path, monkeypatch):
    three_versions(reg, tmp_path)
    reg.promote("cmc", 1, "first")
    crash_on(monkeypatch, "promoted")
    with pytest.raises(Crash):
        reg.promote("cmc", 2, "gate passed")
    monkeypatch.undo()
    assert reg.history("cmc")[-1]["event"] == "promoted" and reg.history("cmc")[-1]["version"] == 1

    reopened = Registry(tmp_path / "registry")
    assert reopened.champion("cmc").number == 2
    last = reopened.history("cmc")[-1]
    assert (last["event"], last["version"], last["from_version"], last["by"]) == ("recovered", 2, 1, "registry")
    assert "champion.json names v2" in last["reason"]
    Registry(tmp_path / "registry")  # once is enough
    assert [e["event"] for e in reopened.history("cmc")].count("recovered") == 1
    assert reopened.rollback("cmc").number == 1  # the stack survived: v1 is before v2


def test_crash_after_a_version_landed_but_before_its_event_is_recovered_on_open(reg, tmp_path, monkeypatch):
    src = make_model(tmp_path / "model")
    crash_on(monkeypatch, "registered")
    with pytest.raises(Crash):
        register(reg, src)
    monkeypatch.undo()
    assert [v.number for v in reg.versions("cmc")] == [1] and reg.history("cmc") == []
    reopened = Registry(tmp_path / "registry")
    [recovered] = reopened.history("cmc")
    assert (recovered["event"], recovered["version"], recovered["recovers"]) == ("recovered", 1, "registered")
    assert register(reopened, src) == (reopened.get("cmc", 1), False)


def test_a_damaged_alias_is_a_clear_error_and_an_explicit_promote_repairs_it(reg, tmp_path):
    three_versions(reg, tmp_path)
    reg.promote("cmc", 1, "")
    alias = tmp_path / "registry" / "cmc" / "champion.json"

    alias.write_text('{"version": 1, "sta')  # what a non-atomic write could leave
    reopened = Registry(tmp_path / "registry")  # opens fine
    with pytest.raises(RegistryError, match="unreadable"):
        reopened.champion("cmc")
    with pytest.raises(RegistryError, match="unreadable"):
        reopened.serving_dir("cmc")
    with pytest.raises(RegistryError, match="unreadable"):
        reopened.rollback("cmc")  # the stack is lost: only an explicit target can repair it
    assert reopened.promote("cmc", 2, "repair").number == 2
    assert "champion.json was unreadable" in reopened.history("cmc")[-1]["reason"]

    alias.write_text(json.dumps({"version": 9, "since": "x", "reason": "", "stack": [1]}))
    with pytest.raises(RegistryError, match="names cmc v9"):
        reg.champion("cmc")
    assert reg.rollback("cmc").number == 1

    alias.unlink()
    with pytest.raises(RegistryError, match="missing"):
        reg.champion("cmc")


def test_a_torn_history_line_is_skipped_and_the_next_event_starts_a_new_line(reg, tmp_path):
    three_versions(reg, tmp_path)
    log = tmp_path / "registry" / "cmc" / "history.jsonl"
    with log.open("a") as f:
        f.write('{"at": "2026-01-01T00:00:00+00:00", "event": "prom')  # killed mid-append
    assert len(reg.history("cmc")) == 3
    reg.promote("cmc", 1, "after the tear")
    assert [e["event"] for e in reg.history("cmc")] == ["registered"] * 3 + ["promoted"]


# --- model cards -------------------------------------------------------------------------------------

def test_write_card_has_the_metrics_the_decision_and_valid_html(reg, tmp_path):
    version, _ = register(reg, make_model(tmp_path / "model", family="rgcl"), family="rgcl")
    evaluation = {"holdout": {"accuracy": 0.8123, "macro_f1": 0.7654, "auroc": 0.9012,
                              "ci": {"macro_f1": [0.7011, 0.8222]},
                              "per_class": {"hateful": {"precision": 0.6667, "recall": 0.5, "f1": 0.5714,
                                                        "support": 4}}},
                  "fresh": {"accuracy": 0.7001}}
    decision = {"status": "failed", "reasons": ["macro_f1 fell 0.031 below the champion", "<script>alert(1)</script>"],
                "checks": [{"name": "accuracy_vs_champion", "status": "failed", "reasons": ["fell by 0.02"],
                            "score": 0.8123, "threshold": 0.83}]}
    md_path, html_path = reg.write_card(version, evaluation, decision)
    assert md_path == version.path / "card.md" and html_path == version.path / "card.html"

    md = md_path.read_text()
    for expected in ("rgcl v1", version.digest[:12], "offline:test-encoder:v1", "2026-01-01T00:00:00+00:00",
                     "0.8123", "0.7654", "0.9012", "[0.7011, 0.8222]", "0.7001", "hateful", "0.5714",
                     "abc1234", "d1", "label_1 (fake)", "| train | 20 |",
                     "**Status:** failed", "macro_f1 fell 0.031 below the champion", "accuracy_vs_champion",
                     "fell by 0.02", "0.8300", "Mei et al., ACL 2024", "not a substitute for human review"):
        assert expected in md, expected

    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<table>" in page and "<td>0.8123</td>" in page and "<h2>Gate decision</h2>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_the_card_without_an_evaluation_shows_the_registered_metrics(reg, tmp_path):
    version, _ = register(reg, make_model(tmp_path / "model", accuracy=0.6543))
    md = (version.path / "card.md").read_text()  # written at register
    assert "0.6543" in md and "Wei et al., ICASSP 2022" in md and "Gate decision" not in md
    md_path, _ = reg.write_card(version)
    assert "0.6543" in md_path.read_text()
    assert version.verify()  # cards are not part of the model


# --- lineage -------------------------------------------------------------------------------------------

def test_lineage_outside_a_git_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "project"
    model = make_model(root / "models" / "cmc")
    found = lineage(root, model, {"cmc": {"lr": 0.001, "beta": 0.3}})
    assert found["code_commit"] is None and found["code_dirty"] is None and found["dvc_lock"] is None
    assert found["encoder"] == "offline:test-encoder:v1" and found["trained_at"] == "2026-01-01T00:00:00+00:00"
    assert found["model_digest"] == model_digest(model) and found["data"]["train"]["items"] == 20
    assert found["params"] == {"cmc": {"lr": 0.001, "beta": 0.3}}
    assert found["params_hash"] == lineage(root, model, {"cmc": {"beta": 0.3, "lr": 0.001}})["params_hash"]
    assert found["params_hash"] != lineage(root, model, {"cmc": {"beta": 0.4, "lr": 0.001}})["params_hash"]


@pytest.mark.parametrize("failure", [FileNotFoundError("git"), subprocess.TimeoutExpired("git", 5)])
def test_lineage_without_git_or_when_git_hangs(tmp_path, monkeypatch, failure):
    def run(*args, **kwargs):
        raise failure

    monkeypatch.setattr(lineage_module.subprocess, "run", run)
    found = lineage(tmp_path, make_model(tmp_path / "m"), {})
    assert found["code_commit"] is None and found["code_dirty"] is None


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_lineage_in_a_git_repository(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "project"
    root.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True, text=True).stdout

    git("init", "-q")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    git("add", "dvc.lock")
    git("commit", "-q", "-m", "first")
    model = make_model(root / "models" / "cmc")  # untracked: not "dirty"
    head = git("rev-parse", "HEAD").strip()
    found = lineage(root, model, {})
    assert found["code_commit"] == head and found["code_dirty"] is False
    assert found["dvc_lock"] == lineage_module.sha256_hex(b"schema: '2.0'\n")
    (root / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    assert lineage(root, model, {})["code_dirty"] is True


def test_the_registry_lives_under_the_data_folder(make_settings):
    settings = make_settings()
    assert settings.layout.registry == settings.data_dir / "registry"
