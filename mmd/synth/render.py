"""Meme-style text rendering for the "meme recomposition" generator.

One meme's text is drawn onto another meme's picture (or onto a neutral template) so a
detector sees text/image pairs it has not seen together. Real memes carry their text
burnt into the pixels, so the new text goes on semi-opaque dark bands at the top and
bottom, where classic captions sit: the donor's own captions end up mostly hidden.
"""

from __future__ import annotations

import colorsys
import io
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

MIN_SIDE = 16
MAX_FONT_SIZE = 36
MIN_FONT_SIZE = 10
BAND_FRACTION = 0.35  # most of the height one caption band may take
BAND_ALPHA = 170
TOP_MIN_WORDS = 5  # texts shorter than this go only to the bottom, as in classic memes
ELLIPSIS = "..."  # ASCII: the default font is not guaranteed to have a glyph for U+2026

_TEXT_FILL = (255, 255, 255)
_STROKE_FILL = (0, 0, 0)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_PNG_MODES = frozenset({"1", "L", "LA", "I;16", "I;16B", "P", "RGB", "RGBA"})
_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")  # exactly Unicode category Cc

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def render_meme_text(text: str, image: Image.Image | None, size: int = 320, seed: int = 0) -> Image.Image:
    """`text` rendered meme-style onto `image` (resized so its longer side is `size`), or onto a neutral template when `image` is None.

    The result is always a new RGB image; the caller's image is never modified. Words
    are split into a top and a bottom caption (a text of four words or fewer goes only
    to the bottom), upper-cased, wrapped to the width and drawn white with a black
    outline on dark bands that each take at most 35% of the height. Text that does not
    fit even at the smallest font size is cut with an ellipsis. Empty text gives the
    resized picture without bands. `seed` only chooses the template (and the colour
    used to pad very thin pictures and flatten transparency).
    """
    if size < MIN_SIDE:
        raise ValueError(f"size must be at least {MIN_SIDE}, got {size}")
    canvas = template_image(size, seed) if image is None else _fit(image, size, seed)
    words = _words(text or "")
    if not words:
        return canvas
    if len(words) < TOP_MIN_WORDS:
        top: list[str] = []
        bottom = words
    else:
        half = len(words) // 2
        top, bottom = words[:half], words[half:]
    layout = _layout(top, bottom, canvas.width, canvas.height)
    _draw(canvas, layout)
    return canvas


def template_image(size: int, seed: int) -> Image.Image:
    """A neutral background (soft two-colour gradient, no text, no shapes that look like objects), deterministic for a seed."""
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    first, second, quarter_turns = _template_params(seed)
    gradient = Image.linear_gradient("L")  # 256x256, dark at the top
    # Exact quarter turns keep the gradient free of resampling artefacts before the resize.
    turns = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
    if turns[quarter_turns] is not None:
        gradient = gradient.transpose(turns[quarter_turns])
    mask = gradient.resize((size, size), Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", (size, size), second), Image.new("RGB", (size, size), first), mask)


def png_bytes(image: Image.Image) -> bytes:
    """Lossless, deterministic PNG encoding (no timestamps / metadata), so equal pictures give equal bytes.

    Modes PNG cannot hold (CMYK, YCbCr, F, ...) are converted to RGB (RGBA when they
    carry alpha) first; that is the only case where the encoding is not lossless.
    """
    clean = image.copy()
    # Pillow writes icc_profile/exif/dpi and text chunks from `info`: drop all of it so
    # only pixels decide the bytes. Transparency is pixel data for P/L/RGB, so it stays.
    clean.info = {key: image.info[key] for key in ("transparency",) if key in image.info}
    if clean.mode not in _PNG_MODES:
        clean = clean.convert("RGBA" if clean.mode in _ALPHA_MODES else "RGB")
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG", compress_level=6, optimize=False)
    return buffer.getvalue()


# --- template and picture preparation ---------------------------------------------------------


def _template_params(seed: int) -> tuple[tuple[int, int, int], tuple[int, int, int], int]:
    """The template's two colours and its direction (in quarter turns) for a seed."""
    # A string seed goes through SHA-512 inside `random`, so it is stable across runs and
    # Python builds, and -1 and 1 differ (integer seeds are reduced to their absolute value).
    rng = random.Random(f"mmd.synth.template:{seed}")
    hue = rng.random()
    # Low saturation and mid-to-light values keep the background muted, so it carries no
    # signal a detector could latch onto; nearby hues keep the gradient soft.
    hues = (hue, (hue + rng.uniform(0.05, 0.3)) % 1.0)
    colours = []
    for h in hues:
        r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.1, 0.4), rng.uniform(0.5, 0.9))
        colours.append((round(r * 255), round(g * 255), round(b * 255)))
    return colours[0], colours[1], rng.randrange(4)


def _pad_colour(seed: int) -> tuple[int, int, int]:
    """The template's mean colour, for padding and for flattening transparency."""
    first, second, _ = _template_params(seed)
    return tuple((a + b) // 2 for a, b in zip(first, second, strict=True))  # type: ignore[return-value]


def _fit(image: Image.Image, size: int, seed: int) -> Image.Image:
    """A new RGB copy of `image` with its longer side `size` and its shorter side at least MIN_SIDE."""
    background = _pad_colour(seed)
    rgb = _to_rgb(image, background)
    width, height = rgb.size
    if width >= height:
        new_size = (size, max(1, round(height * size / width)))
    else:
        new_size = (max(1, round(width * size / height)), size)
    if new_size != rgb.size:
        # reducing_gap shrinks huge pictures in cheap steps first; the result is still deterministic
        rgb = rgb.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    elif rgb is image:
        rgb = rgb.copy()
    if min(rgb.size) >= MIN_SIDE:
        return rgb
    padded = Image.new("RGB", (max(rgb.width, MIN_SIDE), max(rgb.height, MIN_SIDE)), background)
    padded.paste(rgb, ((padded.width - rgb.width) // 2, (padded.height - rgb.height) // 2))
    return padded


def _to_rgb(image: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    """`image` as RGB; transparent parts become `background` rather than whatever colour hides under alpha 0."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I", "F") or mode.startswith("I;16"):
        # High-bit-depth pixels would clip to white in a plain convert: stretch them to 8 bits.
        as_float = image.convert("F")
        low, high = as_float.getextrema()
        scale = 255.0 / (high - low) if high > low else 0.0
        return as_float.point(lambda v: (v - low) * scale).convert("L").convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (*background, 255))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return image.convert("RGB")


# --- text -------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    """Upper-cased words of `text`, with control characters and lone surrogates removed."""
    # Regexes rather than a per-character loop: texts can be megabytes of OCR output.
    # A lone surrogate cannot be encoded for the font and would raise; other control
    # characters (NUL, escape codes) act as word breaks.
    text = _SURROGATES.sub("", text)
    return _CONTROLS.sub(" ", text).upper().split()


@lru_cache(maxsize=64)
def _font(size: int) -> Font:
    """The default font at `size`; older Pillow (< 10.1) only has a fixed-size bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _is_scalable(font: Font) -> bool:
    return isinstance(font, ImageFont.FreeTypeFont)


def _encodable(text: str, font: Font) -> str:
    """`text` as the font can take it: the bitmap fallback font only encodes Latin-1."""
    if _is_scalable(font):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


@dataclass(frozen=True)
class _Metrics:
    """Sizes that depend only on the font size: all layout arithmetic uses them."""

    font: Font
    stroke: int
    line_height: int  # one line including the outline above and below
    gap: int  # extra space between lines
    pad: int  # band space above the first and below the last line

    def block_height(self, lines: int) -> int:
        return 2 * self.pad + lines * self.line_height + max(0, lines - 1) * self.gap

    def lines_within(self, height: int) -> int:
        return max(0, (height - 2 * self.pad + self.gap) // (self.line_height + self.gap))

    def width(self, line: str) -> float:
        return self.font.getlength(_encodable(line, self.font)) + 2 * self.stroke


@lru_cache(maxsize=64)
def _metrics(size: int) -> _Metrics:
    font = _font(size)
    scalable = _is_scalable(font)
    stroke = max(1, round(size / 12)) if scalable else 0
    if scalable:
        ascent, descent = font.getmetrics()
        text_height = ascent + descent
    else:
        left, top, right, bottom = font.getbbox("Ag")
        text_height = bottom - top
    return _Metrics(
        font=font,
        stroke=stroke,
        line_height=text_height + 2 * stroke,
        gap=max(1, size // 10),
        pad=max(2, size // 5),
    )


@dataclass(frozen=True)
class _Layout:
    metrics: _Metrics
    top: list[str]
    bottom: list[str]


def _layout(top: Sequence[str], bottom: Sequence[str], width: int, height: int) -> _Layout:
    """The largest font size at which both captions fit their bands, else the smallest, cut to fit."""
    margin = max(2, round(width * 0.04))
    max_width = max(1, width - 2 * margin)
    budget = int(height * BAND_FRACTION)
    for size in range(MAX_FONT_SIZE, MIN_FONT_SIZE - 1, -1):
        metrics = _metrics(size)
        max_lines = metrics.lines_within(budget)
        if max_lines < 1:
            continue
        top_lines, top_cut = _wrap(top, metrics, max_width, max_lines)
        bottom_lines, bottom_cut = _wrap(bottom, metrics, max_width, max_lines)
        if not (top_cut or bottom_cut):
            return _Layout(metrics, top_lines, bottom_lines)
    metrics = _metrics(MIN_FONT_SIZE)
    # On a very thin picture not even one line fits the budget; one line is still drawn
    # (its band is clipped to the picture) because a caption-less sample would be mislabelled.
    max_lines = max(1, metrics.lines_within(budget))
    blocks = []
    for words in (top, bottom):
        lines, cut = _wrap(words, metrics, max_width, max_lines)
        blocks.append(_with_ellipsis(lines, metrics, max_width) if cut else lines)
    return _Layout(metrics, blocks[0], blocks[1])


def _wrap(words: Sequence[str], metrics: _Metrics, max_width: int, max_lines: int) -> tuple[list[str], bool]:
    """Greedy word wrap into at most `max_lines` lines; True when some text did not fit.

    Stops as soon as the line budget is spent, so a 2,000-word text costs no more than a
    few lines' worth of measuring per font size.
    """

    def fits(line: str) -> bool:
        # Every glyph with its outline is at least a pixel wide, so a line longer in
        # characters than the width in pixels cannot fit; checking that first keeps a
        # huge unbroken word from being laid out whole (which takes seconds) per font size.
        return len(line) <= max_width and metrics.width(line) <= max_width

    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if fits(candidate):
            current = candidate
            continue
        if current:
            lines.append(current)
            if len(lines) >= max_lines:
                return lines, True
            current = ""
        if fits(word):
            current = word
            continue
        # A word wider than the line (a URL, or CJK/Thai text written without spaces)
        # is broken between characters.
        for piece in _pieces(word, metrics, max_width):
            if current:
                lines.append(current)
                if len(lines) >= max_lines:
                    return lines, True
            current = piece
    if current:
        lines.append(current)
    return lines, False


def _pieces(word: str, metrics: _Metrics, max_width: int) -> Iterator[str]:
    """`word` cut into line-wide pieces, lazily, so a huge word is only measured as far as needed."""
    piece = ""
    for char in word:
        if piece and (len(piece) >= max_width or metrics.width(piece + char) > max_width):
            yield piece
            piece = ""
        piece += char  # at least one character per piece, however narrow the line
    if piece:
        yield piece


def _with_ellipsis(lines: list[str], metrics: _Metrics, max_width: int) -> list[str]:
    """`lines` with the last one shortened to end in an ellipsis within `max_width`."""
    last = lines[-1].rstrip()
    while last and metrics.width(last + ELLIPSIS) > max_width:
        last = last[:-1].rstrip()
    return [*lines[:-1], last + ELLIPSIS]


def _draw(canvas: Image.Image, layout: _Layout) -> None:
    """Bands, then outlined text, drawn onto `canvas` in place."""
    metrics = layout.metrics
    width, height = canvas.size
    # An RGBA draw on an RGB image blends the band's alpha with the picture underneath.
    draw = ImageDraw.Draw(canvas, "RGBA")
    blocks = []
    if layout.top:
        blocks.append((0, layout.top))
    if layout.bottom:
        blocks.append((height - min(height, metrics.block_height(len(layout.bottom))), layout.bottom))
    for band_top, lines in blocks:
        band_bottom = min(height, band_top + metrics.block_height(len(lines)))
        draw.rectangle((0, band_top, width - 1, band_bottom - 1), fill=(0, 0, 0, BAND_ALPHA))
    for band_top, lines in blocks:
        y = band_top + metrics.pad
        for line in lines:
            line = _encodable(line, metrics.font)
            x = (width - metrics.width(line)) / 2 + metrics.stroke
            draw.text(
                (round(x), y + metrics.stroke),
                line,
                font=metrics.font,
                fill=_TEXT_FILL,
                stroke_width=metrics.stroke,
                stroke_fill=_STROKE_FILL,
            )
            y += metrics.line_height + metrics.gap
