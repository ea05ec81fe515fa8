"""OCR fills the text of an item that has a picture but no text of its own (ingest.ocr): a meme dropped in
without its caption is read from its picture, one whose picture holds no words is quarantined saying so, and
a record's own text is never replaced. The real RapidOCR models run (they ship with the package)."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
from PIL import Image, ImageDraw, ImageFont

from mmd.config.ingest import OcrConfig
from mmd.ingest import run_ingest
from mmd.ocr import read_text
from mmd.validate import run_validate
from tests.test_ingest import image_bytes, settings_at, write_memes

SOURCE = [{"name": "memes", "type": "memes", "files": ["in/train.jsonl"], "images_dir": "in/images"}]


def worded(lines: list[str], size: tuple[int, int] = (320, 200)) -> bytes:
    """A meme-like picture with its words rendered on it."""
    img = Image.new("RGB", size, (40, 90, 160))
    draw = ImageDraw.Draw(img)
    for n, line in enumerate(lines):
        draw.text((16, 40 + 56 * n), line, fill="white", font=ImageFont.load_default(32))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_read_text_reads_words_and_nothing_from_a_plain_or_broken_picture():
    read = read_text(worded(["WAKE UP SHEEPLE", "the flood is fake"]), OcrConfig())
    assert read is not None and "SHEEPLE" in read.text and "flood is fake" in read.text
    assert read.boxes == 2 and read.confidence > 0.8
    assert read_text(image_bytes((200, 0, 0), size=(100, 100)), OcrConfig()) is None
    assert read_text(b"not a picture", OcrConfig()) is None
    # a bar the recogniser cannot clear leaves it out
    assert read_text(worded(["WAKE UP SHEEPLE"]), OcrConfig(min_confidence=0.9999)) is None


def test_a_meme_without_its_caption_is_read_from_its_picture_and_says_so(tmp_path):
    s = settings_at(tmp_path, SOURCE)
    records = [{"id": "m1", "image": "m1.png", "label": "1"},                       # no text field at all
               {"id": "m2", "image": "m2.png", "text": "  ", "label": "0"},         # blank
               {"id": "m3", "image": "m3.png", "text": "", "label": "0"},           # empty, a picture without words
               {"id": "m4", "image": "m4.png", "text": "its own caption", "label": "0"}]
    write_memes(tmp_path / "in", records, {"m1.png": worded(["WAKE UP SHEEPLE"]),
                                           "m2.png": worded(["NOTHING TO SEE", "move along"]),
                                           "m3.png": image_bytes((9, 9, 9), size=(120, 120)),
                                           "m4.png": worded(["WORDS IN THE PICTURE"])})
    (rep,) = run_ingest(s, show_progress=False).sources
    assert (rep.seen, rep.accepted, rep.quarantined) == (4, 4, 0) and rep.reconciled
    assert rep.counters["text_from_ocr"] == 2 and rep.counters["ocr_read_nothing"] == 1
    rows = {r["native_id"]: r for r in pq.read_table(s.layout.items_ingested).to_pylist()}
    assert "SHEEPLE" in rows["m1"]["text"] and "move along" in rows["m2"]["text"]
    assert json.loads(rows["m1"]["extra"])["text_source"] == "ocr"
    assert rows["m4"]["text"] == "its own caption" and "text_source" not in json.loads(rows["m4"]["extra"])
    # no words anywhere: validation's text rule quarantines it, as for any meme without text
    report = run_validate(s)
    assert (report.accepted, report.quarantined) == (3, 1)
    (q,) = pq.read_table(s.layout.validate_quarantine).to_pylist()
    assert q["item_id"] == rows["m3"]["id"]


def test_with_ocr_off_a_record_without_text_is_refused_as_before(tmp_path):
    s = settings_at(tmp_path, SOURCE, ingest={"ocr": {"enabled": False}})
    write_memes(tmp_path / "in", [{"id": "m1", "image": "m1.png", "label": "1"}], {"m1.png": worded(["WAKE UP"])})
    (rep,) = run_ingest(s, show_progress=False).sources
    assert (rep.accepted, rep.reasons) == (0, {"missing_field": 1})
    assert "text_from_ocr" not in rep.counters
