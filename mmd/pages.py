"""HTML for people: every page mmd writes comes from a Jinja2 template in `mmd/templates/`, with one
stylesheet (inlined, so a page reads the same as a file, an e-mail body or an attachment)."""

from __future__ import annotations

import base64
import functools
from pathlib import Path
from typing import Any


def num(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "n/a"


@functools.cache
def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("mmd", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, pct=pct)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def write_page(path: Path, template: str, **context: Any) -> Path:
    """Render a template into `path` (atomically)."""
    from mmd.util import atomic_write_text

    atomic_write_text(Path(path), render(template, **context))
    return Path(path)


def png_base64(path: str | Path | None) -> str | None:
    """A PNG file's bytes as base64, for an inline <img>; None when there is no such file."""
    if not path or not Path(path).is_file():
        return None
    return base64.b64encode(Path(path).read_bytes()).decode()
