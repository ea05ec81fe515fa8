"""Reading within bounds (mmd.safe_read) and keeping raw input safely (mmd.quarantine.store_blob):
JSON that would crash or recurse, YAML bombs and YAML errors that would quote the file, a disk
that fills while a blob is written. Every input is built here, in the test.
"""

from __future__ import annotations

import errno
import json
import hashlib
import os
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from mmd.config import ConfigError, load_settings
from mmd.quarantine import StorageError, store_blob
from mmd.safe_read import InputRefused, loads_json, load_yaml


# =========================================================================== JSON
def test_loads_json_refuses_what_json_would_crash_or_recurse_on():
    with pytest.raises(InputRefused) as err:
        loads_json("[" * 100_000 + "]" * 100_000)
    assert err.value.code == "json_too_deep"
    with pytest.raises(InputRefused) as err:
        loads_json("1" * 5000)
    assert err.value.code == "bad_json" and "digits" in str(err.value)
    assert loads_json(json.dumps({"a": "[" * 72}), max_depth=3) == {"a": "[" * 72}  # brackets in strings do not count


# =========================================================================== YAML
BOMB = """
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_a_yaml_bomb_in_a_deployments_parameters_is_refused_quickly_in_little_memory(tmp_path):
    bomb = yaml.safe_load(BOMB)  # PyYAML shares aliased nodes: only expanding it costs (9^9 strings)
    text = "cycle:\n  deployments:\n    x:\n      flow: ingest\n      parameters:\n" + "".join(
        f"        {line}\n" for line in BOMB.strip().splitlines())
    (tmp_path / "params.yaml").write_text(text)
    assert bomb["i"][0][0][0][0][0][0][0][0][0] == "lol"
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "params.yaml")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert "aliases counted expanded" in str(err.value)
    assert time.perf_counter() - started < 5 and peak < 50_000_000


def test_flows_deploy_refuses_the_bomb_too(tmp_path):
    import subprocess
    import sys

    (tmp_path / "params.yaml").write_text("cycle:\n  deployments:\n    x:\n      flow: ingest\n      parameters:\n"
                                          + "".join(f"        {ln}\n" for ln in BOMB.strip().splitlines()))
    proc = subprocess.run([sys.executable, "-m", "flows.deploy", "show", "--params", str(tmp_path / "params.yaml")],
                          capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert proc.returncode != 0 and "ConfigError" in proc.stderr and "expanded" in proc.stderr


def test_anchors_in_moderation_still_load(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "ingest:\n  http: &h {timeout_s: 3, retries: 1}\n  images: {max_bytes: 1000}\n"
        "validate:\n  kinds:\n    meme: &k {text_min_chars: 2}\n    post: *k\n")
    s = load_settings(tmp_path / "params.yaml")
    assert s.params.validate_.kinds["post"].text_min_chars == 2


@pytest.mark.parametrize("content, name", [
    ("root:$6$TOPSECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n  bad: [\n", "shadow"),
    ("password: TOPSECRETHASH\n  indented: - [oops\n", "secrets.yaml"),
    ("key: 'TOPSECRETHASH\n", "unterminated.yaml"),
    ("a: !!python/object:os.system TOPSECRETHASH\n", "tagged.yaml"),
    ("a: *TOPSECRETHASH\n", "alias.yaml"),
])
def test_yaml_errors_never_echo_the_file(tmp_path, content, name):
    (tmp_path / name).write_text(content)
    (tmp_path / "params.yaml").write_text(f"extends: {name}\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "params.yaml")
    assert "TOPSECRETHASH" not in str(err.value) and "daemon" not in str(err.value)
    if name == "shadow":
        assert "must name a .yaml or .yml params file" in str(err.value)
    else:
        (tmp_path / "params.yaml").write_text(content)  # the same file read directly
        with pytest.raises(ConfigError) as direct:
            load_settings(tmp_path / "params.yaml")
        assert "TOPSECRETHASH" not in str(direct.value) and "line" in str(direct.value)


def test_deeply_nested_yaml_is_a_config_error_not_a_recursion_error(tmp_path):
    (tmp_path / "params.yaml").write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError) as err:
        load_settings(tmp_path / "params.yaml")
    assert "deeply" in str(err.value)
    with pytest.raises(InputRefused):
        load_yaml("&a [*a]")


# =========================================================================== raw blobs
def test_store_blob_never_leaves_a_short_file_under_the_whole_digest(tmp_path, monkeypatch):
    import mmd.quarantine as q

    data = os.urandom(100_000)
    digest = hashlib.sha256(data).hexdigest()

    def disk_full(path, payload):
        path.write_bytes(payload[: len(payload) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(q, "_write_fully", disk_full)
    with pytest.raises(StorageError) as err:
        store_blob(tmp_path / "raw", digest, data)
    assert err.value.errno == errno.ENOSPC and str(tmp_path / "raw") in str(err.value)
    assert list((tmp_path / "raw").iterdir()) == []  # neither the blob nor its temporary file

    monkeypatch.undo()
    (tmp_path / "raw" / f"{digest}.bin").write_bytes(data[:4096])  # what an older version left behind
    target = store_blob(tmp_path / "raw", digest, data)
    assert target.read_bytes() == data  # repaired
    assert store_blob(tmp_path / "raw", digest, data) == target
