"""Images: decoded and checked before anything trusts them, then stored content-addressed."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from mmd.config import ImageConfig
from mmd.items import sha256_hex
from mmd.quarantine import StorageError
from mmd.safe_read import InputRefused, read_capped
from mmd.util import atomic_write_bytes


class ImageRejected(ValueError):
    """An image that may not enter; `code` is a stable quarantine reason code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    rel_path: str  # relative to the data root
    width: int
    height: int
    format: str


def resolve_inside(root: Path, reference: str) -> Path:
    """The file `reference` names under `root`; a reference that escapes `root` is rejected."""
    if not reference or "\x00" in reference:
        raise ImageRejected("image_bad_path", f"unusable image reference {reference!r}")
    root = root.resolve()
    candidate = (root / reference).resolve()
    if candidate != root and root not in candidate.parents:
        raise ImageRejected("image_path_escape", f"image path {reference!r} points outside {root}")
    return candidate


def check_image(data: bytes, cfg: ImageConfig) -> tuple[int, int, str]:
    """Decode fully and check format, size and dimensions; returns (width, height, format)."""
    if not data:
        raise ImageRejected("image_empty", "image file is empty (0 bytes)")
    if len(data) > cfg.max_bytes:
        raise ImageRejected("image_too_large", f"image is {len(data)} bytes, over the {cfg.max_bytes}-byte cap")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "?"
            width, height = img.size
            # the header alone tells the size: refuse bombs before decoding a pixel
            if width * height > cfg.max_pixels or max(width, height) > cfg.max_side:
                raise ImageRejected(
                    "image_too_many_pixels",
                    f"image is {width}x{height}, over the {cfg.max_pixels}-pixel / {cfg.max_side}-side limit",
                )
            if fmt not in cfg.formats:
                raise ImageRejected("image_bad_format", f"image format {fmt} is not one of {', '.join(cfg.formats)}")
            img.load()  # a truncated file fails here
    except ImageRejected:
        raise
    except UnidentifiedImageError:
        raise ImageRejected("image_not_an_image", "the file is not an image any decoder recognises") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("image_too_many_pixels", f"decompression-bomb guard: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("image_truncated", f"image does not decode: {exc}") from None
    if width < 1 or height < 1:
        raise ImageRejected("image_bad_dimensions", f"image has no pixels ({width}x{height})")
    return width, height, fmt


class ImageStore:
    """Checked images under `<data>/images/<sha[:2]>/<sha>.<ext>`; the same bytes are stored once."""

    EXT = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}

    def __init__(self, data_root: Path, cfg: ImageConfig):
        self.data_root = data_root
        self.root = data_root / "images"
        self.cfg = cfg
        # one decode per distinct image a run: many posts share one viral picture
        self._seen: dict[str, StoredImage | ImageRejected] = {}

    def put(self, data: bytes) -> StoredImage:
        digest = sha256_hex(data)
        known = self._seen.get(digest)
        if isinstance(known, ImageRejected):
            raise ImageRejected(known.code, str(known))
        if known is not None:
            return known
        try:
            width, height, fmt = check_image(data, self.cfg)
        except ImageRejected as exc:
            self._seen[digest] = exc
            raise
        rel = Path("images") / digest[:2] / f"{digest}.{self.EXT.get(fmt, 'img')}"
        target = self.data_root / rel
        if not target.exists():
            try:  # atomic_path's temporary name is the process's own: two writers never share one
                atomic_write_bytes(target, data)
            except OSError as exc:
                raise StorageError(exc.errno, f"cannot store image in {target}: {exc.strerror or exc}", str(target)) from None
        stored = self._seen[digest] = StoredImage(digest, rel.as_posix(), width, height, fmt)
        return stored

    def put_file(self, root: Path, reference: str) -> StoredImage:
        """Check and store the image `reference` names under `root`."""
        path = resolve_inside(root, reference)
        if not path.is_file():
            raise ImageRejected("image_missing", f"image {reference!r} not found under {root}")
        try:
            data = read_capped(path, self.cfg.max_bytes)
        except InputRefused as exc:
            raise ImageRejected("image_too_large" if exc.code == "file_too_large" else "image_unreadable", str(exc)) from None
        except OSError as exc:
            raise ImageRejected("image_unreadable", str(exc)) from None
        return self.put(data)
