"""Files the app serves from the project's folders, never from anywhere else.

A requested path is relative to its folder (the reports folder; under the data folder only the item and
label pictures): no absolute path, no `..`, no hidden name, no backslash or NUL; after symlinks are
followed it must still lie inside the folder, be a regular file and have a known kind. Anything else is
the same 404, so a probe learns nothing. Report pages (Evidently's carry scripts) are sandboxed: they run
as an opaque origin that cannot read the app's cookies or call its API.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".htm": "text/html; charset=utf-8", ".json": "application/json",
    ".md": "text/markdown; charset=utf-8", ".txt": "text/plain; charset=utf-8", ".csv": "text/csv; charset=utf-8",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
    ".bmp": "image/bmp", ".svg": "image/svg+xml",
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")
MEDIA_FOLDERS = ("images", "labels/images")   # under the data folder: the pictures of items and of labels
SANDBOX = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox"


class NotServed(LookupError):
    """Not a file the app serves (the reason is for logs and tests; the client sees a plain 404)."""


def safe_file(root: Path, rel: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """The regular file `rel` names inside `root`, or NotServed."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        raise NotServed("not a relative path")
    parts = PurePosixPath(rel).parts
    if any(p in ("..", ".") or p.startswith(".") for p in parts):
        raise NotServed("a dot segment or a hidden name")
    base = Path(root).resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base) or path == base:
        raise NotServed("outside the folder")
    if not path.is_file():
        raise NotServed("not a regular file")
    suffix = path.suffix.lower()
    if suffix not in CONTENT_TYPES or (suffixes is not None and suffix not in suffixes):
        raise NotServed(f"not a kind of file served ({suffix or 'no suffix'})")
    return path


def media_file(data_dir: Path, rel: str) -> Path:
    """A picture under the data folder's item or label pictures."""
    if not any(rel.startswith(folder + "/") for folder in MEDIA_FOLDERS):
        raise NotServed("not under a pictures folder")
    path = safe_file(data_dir, rel, IMAGE_SUFFIXES)
    if not any(path.is_relative_to((Path(data_dir) / f).resolve()) for f in MEDIA_FOLDERS):
        raise NotServed("outside the pictures folders")
    return path


def content_type(path: Path) -> str:
    return CONTENT_TYPES[path.suffix.lower()]
