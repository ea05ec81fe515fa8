"""Reading what comes from outside within bounds: files under a byte cap, JSON under a depth
limit, YAML without alias bombs, and error messages that never echo what a file holds.

Every refusal is an `InputRefused` with a stable `code` that a source turns into a quarantine
record (and config loading into a ConfigError).
"""

from __future__ import annotations

import json
import os
import re
import stat
from itertools import accumulate
from pathlib import Path
from typing import Any

import yaml

# params files and other YAML the project reads: far above any real one, far below harm
MAX_YAML_BYTES = 2_000_000
MAX_YAML_NODES = 200_000  # scalars, sequences and mappings, each alias counted as what it expands to


class InputRefused(ValueError):
    """Input that may not be read or parsed; `code` is a stable quarantine reason code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- files
def read_capped(path: Path, max_bytes: int, follow_symlinks: bool = True) -> bytes:
    """The bytes of a regular file, refused (`file_too_large`) past `max_bytes`.

    Opened without blocking (a FIFO would wait for a writer forever) and checked on the open
    descriptor, so a file swapped between a listing and the read cannot slip through; with
    `follow_symlinks=False` a symlink in the last component is refused. OSError names the path."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot open {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputRefused("not_a_regular_file", f"{path} is not a regular file")
        if st.st_size > max_bytes:
            raise InputRefused("file_too_large", f"{path} is {st.st_size} bytes, over the {max_bytes}-byte cap")
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > max_bytes:  # it grew since the stat
                raise InputRefused("file_too_large", f"{path} is over the {max_bytes}-byte cap")
        return b"".join(chunks)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot read {path}: {exc.strerror}") from None
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- JSON
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deeply `text`'s arrays and objects nest (brackets inside strings not counted); linear."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DELTA.__getitem__, brackets)), default=0)


def loads_json(text: str | bytes, max_depth: int = 64) -> Any:
    """json.loads that refuses, as InputRefused, what json.loads would raise on or recurse into:

    `bad_json` (syntax, an integer past Python's digit limit, a lone bad escape),
    `json_too_deep` (nesting past `max_depth`: checked before parsing, so no recursion)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    # more opening brackets than the limit is the only way to nest past it: a cheap count first
    if text.count("[") + text.count("{") > max_depth:
        depth = json_depth(text)
        if depth > max_depth:
            raise InputRefused("json_too_deep", f"JSON nests {depth} levels deep, over the limit of {max_depth}")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputRefused("bad_json", f"not valid JSON: {exc.msg} at char {exc.pos}") from None
    except RecursionError:
        raise InputRefused("json_too_deep", "JSON nests too deeply to parse") from None
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise InputRefused("bad_json", f"not usable JSON: {str(exc)[:200]}") from None


# --------------------------------------------------------------------------- YAML
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def describe_yaml_error(exc: yaml.YAMLError) -> str:
    """Where and what kind of YAML error, without a word of the file's content.

    PyYAML's own message quotes the offending line (and tokens in quotes): a file that is not
    YAML at all (a key file named by mistake) would be echoed into logs and reports."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = _QUOTED.sub("'…'", exc.problem or exc.context or "syntax error")
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{problem}{where}"
    return type(exc).__name__


class _Loader(yaml.SafeLoader):
    """SafeLoader; the size of the composed graph is checked before anything is constructed."""


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in the document with every alias expanded (what constructing it would build), up to
    `limit` + 1; shared nodes are sized once, so a billion-laughs graph costs no more than its text."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if done:
            busy.discard(key)
            sizes[key] = min(limit + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in sizes:
            continue
        if key in busy:
            raise InputRefused("yaml_recursive", "a YAML alias refers to the node that contains it")
        busy.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml(text: str, max_nodes: int = MAX_YAML_NODES) -> Any:
    """yaml.safe_load within limits: InputRefused (`yaml_too_large`, `yaml_too_deep`,
    `yaml_recursive`, `bad_yaml`) instead of a memory blow-up, a RecursionError or an echo."""
    if len(text) > MAX_YAML_BYTES:
        raise InputRefused("yaml_too_large", f"YAML text is {len(text)} characters, over the {MAX_YAML_BYTES} cap")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, max_nodes)
        if size > max_nodes:
            raise InputRefused("yaml_too_large", f"YAML expands to over {max_nodes} nodes (aliases counted expanded)")
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise InputRefused("bad_yaml", f"not valid YAML: {describe_yaml_error(exc)}") from None
    except RecursionError:
        raise InputRefused("yaml_too_deep", "YAML nests too deeply to read") from None
    finally:
        loader.dispose()
