"""Meme-style text rendering: deterministic, any input picture, bands bounded, text where memes put it."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image, ImageChops

from mmd.synth.render import png_bytes, render_meme_text, template_image

LONG_TEXT = "when you finally fix the bug but then the tests fail again on the build server for no reason at all"
FLAT = (40, 120, 200)


def flat_image(size: tuple[int, int] = (320, 320), mode: str = "RGB", colour: object = FLAT) -> Image.Image:
    return Image.new(mode, size, colour)


def changed(before: Image.Image, after: Image.Image, top: int, bottom: int) -> bool:
    """Whether any pixel differs between the two pictures in rows [top, bottom)."""
    width = before.width
    diff = ImageChops.difference(before.crop((0, top, width, bottom)), after.crop((0, top, width, bottom)))
    return diff.getbbox() is not None


def test_same_inputs_give_identical_bytes():
    image = flat_image((400, 300))
    first = png_bytes(render_meme_text(LONG_TEXT, image, seed=7))
    second = png_bytes(render_meme_text(LONG_TEXT, image, seed=7))
    assert first == second
    assert png_bytes(render_meme_text(LONG_TEXT, None, seed=3)) == png_bytes(render_meme_text(LONG_TEXT, None, seed=3))


def test_seed_changes_the_template_only():
    templates = {png_bytes(template_image(64, seed)) for seed in (0, 1, 2, -1, 12345)}
    assert len(templates) == 5
    assert template_image(64, 5).tobytes() == template_image(64, 5).tobytes()
    # over a picture that needs no padding the seed has nothing to change
    image = flat_image((320, 200))
    assert render_meme_text(LONG_TEXT, image, seed=0).tobytes() == render_meme_text(LONG_TEXT, image, seed=9).tobytes()


def test_template_is_a_soft_gradient():
    template = template_image(128, 4)
    assert template.mode == "RGB" and template.size == (128, 128)
    # two colours: opposite corners differ whichever way the gradient runs
    assert template.getpixel((0, 0)) != template.getpixel((127, 127))
    # soft: neighbouring pixels never jump much, so nothing reads as an edge or an object
    pixels = template.load()
    for y in range(0, 127, 7):
        for x in range(0, 127, 7):
            for nx, ny in ((x + 1, y), (x, y + 1)):
                assert max(abs(a - b) for a, b in zip(pixels[x, y], pixels[nx, ny], strict=True)) <= 4


@pytest.mark.parametrize(
    ("size", "mode", "expected"),
    [
        ((640, 480), "RGB", (320, 240)),
        ((480, 640), "L", (240, 320)),
        ((100, 100), "P", (320, 320)),
        ((320, 320), "RGB", (320, 320)),
        ((2000, 50), "RGB", (320, 16)),  # 320x8 padded up to the minimum side
        ((50, 2000), "RGBA", (16, 320)),
        ((1, 1), "1", (320, 320)),
        ((300, 200), "CMYK", (320, 213)),
        ((300, 200), "I;16", (320, 213)),
        ((300, 200), "LA", (320, 213)),
    ],
)
def test_output_size_and_mode(size, mode, expected):
    image = Image.new(mode, size)
    for text in ("", "two words", LONG_TEXT):
        out = render_meme_text(text, image)
        assert out.mode == "RGB"
        assert out.size == expected
        assert max(out.size) == 320 and min(out.size) >= 16


def test_template_when_no_image():
    out = render_meme_text(LONG_TEXT, None, size=200, seed=1)
    assert out.mode == "RGB" and out.size == (200, 200)
    assert render_meme_text("", None, size=200, seed=1).tobytes() == template_image(200, 1).tobytes()


def test_callers_image_is_not_modified():
    image = Image.new("RGBA", (500, 260), (10, 200, 30, 128))
    image.putpixel((5, 5), (255, 0, 0, 255))
    before = image.tobytes()
    out = render_meme_text(LONG_TEXT, image)
    assert image.tobytes() == before and image.mode == "RGBA" and image.size == (500, 260)
    assert out is not image
    same_size = flat_image()
    before = same_size.tobytes()
    out = render_meme_text(LONG_TEXT, same_size)
    assert same_size.tobytes() == before
    assert out is not same_size


def test_transparent_pixels_do_not_turn_black():
    # RGBA (0, 0, 0, 0) would convert to pure black; it should become the template colour
    out = render_meme_text("", Image.new("RGBA", (100, 100), (0, 0, 0, 0)))
    assert out.getpixel((160, 160)) != (0, 0, 0)


def test_long_text_goes_to_top_and_bottom_bands_only():
    image = flat_image((320, 320))
    out = render_meme_text(LONG_TEXT, image)
    height = image.height
    band = int(height * 0.35)
    assert changed(image, out, 0, 20)
    assert changed(image, out, height - 20, height)
    assert not changed(image, out, band, height - band)
    # the band is dark and the text on it light
    top_strip = out.crop((0, 0, 320, 60))
    darkest, lightest = top_strip.convert("L").getextrema()
    assert darkest < 60 and lightest > 240


def test_band_darkens_the_donor_picture():
    # a white donor caption under the band must end up much darker
    image = flat_image((320, 320), colour=(255, 255, 255))
    out = render_meme_text(LONG_TEXT, image)
    assert out.getpixel((1, 1))[0] < 128
    assert out.getpixel((1, 319))[0] < 128


@pytest.mark.parametrize("text", ["one", "only four short words", "TWO\n\nlines"])
def test_short_text_only_at_the_bottom(text):
    image = flat_image((320, 320))
    out = render_meme_text(text, image)
    assert not changed(image, out, 0, 160)
    assert changed(image, out, 280, 320)


def test_five_words_use_both_bands():
    image = flat_image((320, 320))
    out = render_meme_text("one two three four five", image)
    assert changed(image, out, 0, 40)
    assert changed(image, out, 280, 320)


@pytest.mark.parametrize("text", ["", "   ", "\n\t \r\n"])
def test_empty_text_leaves_the_picture_as_is(text):
    image = flat_image((640, 480))
    out = render_meme_text(text, image)
    expected = image.resize((320, 240), Image.Resampling.LANCZOS)
    assert out.tobytes() == expected.tobytes()
    same = flat_image((320, 200))
    assert render_meme_text(text, same).tobytes() == same.tobytes()


def test_whitespace_is_normalised():
    image = flat_image((320, 320))
    a = render_meme_text("when you\nfinally   fix the\tbug on friday", image)
    b = render_meme_text("when you finally fix the bug on friday", image)
    assert a.tobytes() == b.tobytes()


def test_case_is_upper():
    image = flat_image((320, 320))
    assert render_meme_text("me too", image).tobytes() == render_meme_text("ME TOO", image).tobytes()


def test_two_thousand_words_are_fast_and_bounded():
    text = " ".join(f"word{i}" for i in range(2000))
    image = flat_image((320, 320))
    start = time.perf_counter()
    out = render_meme_text(text, image)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0
    band = int(320 * 0.35)
    assert not changed(image, out, band, 320 - band)
    assert changed(image, out, 0, 20) and changed(image, out, 300, 320)


def test_huge_word_without_spaces_is_fast_and_bounded():
    # CJK text and URLs have no spaces to break at; a long run must still wrap and stop
    text = "很长的中文句子没有空格" * 20_000
    image = flat_image((320, 320))
    start = time.perf_counter()
    out = render_meme_text(text, image)
    assert time.perf_counter() - start < 2.0
    band = int(320 * 0.35)
    assert not changed(image, out, band, 320 - band)
    assert changed(image, out, 300, 320)


@pytest.mark.parametrize(
    "text",
    [
        "😀😂🔥 when the meme hits 👍🏽 👨‍👩‍👧",
        "مرحبا بالعالم هذا نص عربي طويل قليلا",
        "你好 世界 这是 一个 测试",
        "nul\x00byte and lone \ud800 surrogate \x1b[31m escape",
        "ß ﬁ ǆ straße",
    ],
)
def test_any_script_renders(text):
    for image in (None, flat_image((200, 100)), Image.new("RGB", (2000, 50))):
        out = render_meme_text(text, image)
        assert out.mode == "RGB"


def test_tiny_output_size():
    out = render_meme_text(LONG_TEXT, Image.new("RGB", (1000, 10)), size=16)
    assert out.size == (16, 16)
    with pytest.raises(ValueError):
        render_meme_text("x", None, size=8)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "LA", "1", "I;16"])
def test_png_bytes_round_trips(mode):
    image = render_meme_text(LONG_TEXT, None, size=96, seed=2).convert("RGBA")
    image.putalpha(200)
    image = image.convert(mode) if mode != "RGBA" else image
    data = png_bytes(image)
    decoded = Image.open(io.BytesIO(data))
    decoded.load()
    assert decoded.size == image.size
    assert decoded.mode == image.mode
    assert decoded.tobytes() == image.tobytes()
    if mode == "P":
        assert decoded.getpalette() == image.getpalette()


def test_png_bytes_ignore_metadata():
    image = render_meme_text(LONG_TEXT, None, size=64)
    tagged = image.copy()
    tagged.info.update({"dpi": (300, 300), "icc_profile": b"not really a profile", "comment": "hello"})
    assert png_bytes(tagged) == png_bytes(image)
    assert png_bytes(image) == png_bytes(Image.frombytes("RGB", image.size, image.tobytes()))
    # other modes are stored as RGB without raising
    assert Image.open(io.BytesIO(png_bytes(Image.new("CMYK", (8, 8))))).mode == "RGB"
