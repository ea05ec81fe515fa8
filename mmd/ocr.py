"""A picture's text, read by OCR, for an item whose record has none (`ingest.ocr`).

A meme dropped in without its caption, or a post whose words are only in its picture, would otherwise
be quarantined for having no text or embedded from its picture alone. Measured on HarMeme train -> val
(`make experiment-ocr`, docs/experiments/ocr-table.md): a model trained on the memes' own text and picture
falls from AUROC 0.713 to 0.603 when the text is missing at test time, and is back at 0.714 with OCR's
text in its place. Text a record already has is kept as it is: on MediaEval posts, adding OCR's text of
the picture to their own took AUROC from 0.815 to 0.444 on held-out events (it names the picture, and
labels there belong to pictures).

RapidOCR ships its detection and recognition models (ONNX) in the wheel, so this runs offline. The
engine loads on first use (about a second) and reads a 320-pixel meme in about half a second per core.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path

from mmd.config.ingest import OcrConfig


class OcrUnavailable(RuntimeError):
    """The OCR package is not installed or its models cannot load."""


@dataclass(frozen=True)
class OcrText:
    text: str
    confidence: float  # the mean confidence of the boxes kept
    boxes: int


@functools.lru_cache(maxsize=4)
def _engine(threads: int):
    try:
        from rapidocr_onnxruntime import RapidOCR
    except ImportError as exc:  # a declared dependency: only a broken install lands here
        raise OcrUnavailable(f"rapidocr-onnxruntime is not installed ({exc}); install mmd's dependencies "
                             "or set ingest.ocr.enabled: false") from exc
    try:
        return RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
    except Exception as exc:
        raise OcrUnavailable(f"the OCR models did not load: {type(exc).__name__}: {exc}") from exc


_lock = threading.Lock()  # one onnxruntime session pair, shared: the app may call from several threads


def read_text(source: Path | bytes, cfg: OcrConfig) -> OcrText | None:
    """The text OCR reads in a picture (a file, or its bytes), boxes in reading order, or None when it reads
    nothing above `cfg.min_confidence`. A picture it cannot decode reads as None."""
    engine = _engine(cfg.threads)
    with _lock:
        try:
            found, _ = engine(source if isinstance(source, bytes) else str(source))
        except Exception:  # a picture the OCR cannot decode is a picture without text, not a failed run
            return None
    kept = [(str(text).strip(), float(score)) for _, text, score in (found or ())
            if float(score) >= cfg.min_confidence and str(text).strip()]
    if not kept:
        return None
    text = " ".join(t for t, _ in kept)[: cfg.max_chars].strip()
    return OcrText(text, round(sum(s for _, s in kept) / len(kept), 4), len(kept))
