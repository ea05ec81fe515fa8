"""Does OCR help? The picture's text (mmd.ocr, RapidOCR) as an encoder input, on the real datasets.

One command (`make experiment-ocr`) writes docs/experiments/ocr.{json,md}. The classifier is the same
throughout, a logistic regression (balanced classes, standardised features) on the offline encoder's text
and image vectors, so that the only thing that changes between rows is the text:

- **HarMeme** (train -> val, the data of `make experiment-rgcl`): the memes' own text (the dataset's
  transcription) against no text and against OCR's reading of the 320-pixel pictures: (a) a model trained on
  the own text, then tested with it, without it (a meme that arrives without its caption) and with OCR's
  text in its place (what ingest does for such a meme); (b) models trained and tested on the OCR text alone
  and on the picture alone.
- **MediaEval** (whole events held out, the data of `make experiment-cmc`): posts have their own text;
  does adding the text OCR reads in their pictures help (concatenated as a third block of features)?

OCR results are kept in the data folders (`ocr.json`, by image digest), so a rerun reads each picture once.

    python experiments/ocr.py [--skip-prepare] [--out DIR]
"""

from __future__ import annotations

import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "experiments"))

from quality import fit_logistic  # noqa: E402  the experiments' one baseline classifier


def ocr_texts(settings, rows: list[dict]) -> list[str]:
    """OCR's text of each row's picture ("" where it reads none), cached by image digest."""
    from mmd.ocr import read_text

    cfg = settings.params.ingest.ocr
    path = settings.data_dir / "ocr.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    started, todo = time.perf_counter(), {r["image_sha256"]: r["image_path"] for r in rows
                                         if r.get("image_path") and r["image_sha256"] not in known}
    for n, (sha, rel) in enumerate(todo.items(), 1):
        read = read_text(settings.data_dir / rel, cfg)
        known[sha] = read.text if read else ""
        if n % 200 == 0 or n == len(todo):
            path.write_text(json.dumps(known))
            print(f"OCR {n}/{len(todo)} pictures, {time.perf_counter() - started:.0f}s", flush=True)
    return [known.get(r.get("image_sha256") or "", "") for r in rows]


@functools.lru_cache(maxsize=2)
def _encoder(settings):
    """The encoder and the embed stage's cache (read only), loaded once per settings."""
    from mmd.encoders import EmbeddingCache, build_encoder

    encoder = build_encoder(settings.params.embed, settings.root)
    return encoder, EmbeddingCache.for_encoder(settings.layout.embed_cache, encoder, read_only=True)


def vectors(settings, rows: list[dict], texts: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Text and image vectors of rows (texts replaced by `texts` when given), the embed stage's cache read."""
    from mmd.encoders import embed_items

    encoder, cache = _encoder(settings)
    if texts is not None:
        rows = [dict(r, text=t) for r, t in zip(rows, texts)]
    res = embed_items(rows, encoder, cache, settings.data_dir, settings.params.embed.batch_size, 0)
    return np.asarray(res.text, np.float32), np.asarray(res.image, np.float32)


def figures(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from mmd.evaluate.metrics import classification_metrics

    m = classification_metrics(y, p)
    return {"auroc": float(m["auroc"]), "accuracy": float(m["accuracy"]), "macro_f1": float(m["macro_f1"])}


def labelled(settings, test_of) -> tuple[list[dict], np.ndarray, np.ndarray]:
    import pyarrow.parquet as pq

    rows = [r for r in pq.read_table(settings.layout.items).to_pylist() if r["label"] is not None]
    return rows, np.array([r["label"] for r in rows]), np.array([test_of(r) for r in rows])


def harmeme(settings) -> dict:
    rows, y, test = labelled(settings, lambda r: r["split"] == "val")
    own, image = vectors(settings, rows)
    none, _ = vectors(settings, rows, [""] * len(rows))
    read = ocr_texts(settings, rows)
    ocr, _ = vectors(settings, rows, read)
    tr, te = ~test, test
    trained_own = fit_logistic(np.hstack([own, image])[tr], y[tr])
    out = {
        "trained on own text + picture, tested with it": trained_own(np.hstack([own, image])[te]),
        "  the same model, tested without the text (picture only)": trained_own(np.hstack([none, image])[te]),
        "  the same model, tested with OCR's text in its place": trained_own(np.hstack([ocr, image])[te]),
        "trained and tested on OCR's text + picture": fit_logistic(np.hstack([ocr, image])[tr], y[tr])(
            np.hstack([ocr, image])[te]),
        "trained and tested on the picture alone": fit_logistic(image[tr], y[tr])(image[te]),
        "own text alone": fit_logistic(own[tr], y[tr])(own[te]),
        "OCR's text alone": fit_logistic(ocr[tr], y[tr])(ocr[te]),
    }
    return {"items": {"train": int(tr.sum()), "test": int(te.sum())},
            "pictures_with_ocr_text": float(np.mean([bool(t) for t in read])),
            "rows": {k: figures(y[te], p) for k, p in out.items()}}


def mediaeval(settings) -> dict:
    rows, y, test = labelled(settings, lambda r: r["split"] == "test")
    keep = np.array([r["source"] == "mediaeval" for r in rows])
    rows, y, test = [r for r, k in zip(rows, keep) if k], y[keep], test[keep]
    own, image = vectors(settings, rows)
    read = ocr_texts(settings, rows)
    ocr, _ = vectors(settings, rows, read)
    has = np.array([bool(t) for t in read])
    ocr[~has] = 0.0  # no words in the picture: no OCR block
    tr, te = ~test, test
    out = {
        "own text": fit_logistic(own[tr], y[tr])(own[te]),
        "own text + OCR's text of the picture": fit_logistic(np.hstack([own, ocr])[tr], y[tr])(np.hstack([own, ocr])[te]),
        "own text + picture": fit_logistic(np.hstack([own, image])[tr], y[tr])(np.hstack([own, image])[te]),
        "own text + OCR's text + picture": fit_logistic(np.hstack([own, ocr, image])[tr], y[tr])(
            np.hstack([own, ocr, image])[te]),
        "OCR's text alone": fit_logistic(ocr[tr], y[tr])(ocr[te]),
    }
    return {"items": {"train": int(tr.sum()), "test": int(te.sum())}, "posts_with_ocr_text": float(has.mean()),
            "rows": {k: figures(y[te], p) for k, p in out.items()}}


def table(result: dict) -> str:
    lines = []
    for name, r in result["datasets"].items():
        lines += [f"**{name}** ({r['items']['train']} train, {r['items']['test']} test)", "",
                  "| features | AUROC | accuracy | macro-F1 |", "|---|---|---|---|"]
        lines += [f"| {row} | {m['auroc']:.3f} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} |"
                  for row, m in r["rows"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    import argparse

    from mmd.config import load_settings
    from rgcl_harmeme import prepare_plain
    from synthetic_selection import prepare

    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "experiments"))
    parser.add_argument("--skip-prepare", action="store_true", help="reuse the data already prepared")
    args = parser.parse_args()
    if not (ROOT.parent / "shared" / "datasets").exists():
        sys.exit(f"the real datasets are not at {ROOT.parent / 'shared' / 'datasets'}; this experiment needs them")
    result: dict = {"made_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "classifier":
                    "LogisticRegression(C=1, class_weight=balanced) on standardised offline-encoder features",
                    "datasets": {}}
    for name, params, prep, measure in (("HarMeme", "experiment-rgcl.yaml", prepare_plain, harmeme),
                                        ("MediaEval", "experiment-cmc.yaml", prepare, mediaeval)):
        settings = load_settings(ROOT / "configs" / params)
        if not args.skip_prepare:
            prep(settings)
        result["datasets"][name] = measure(settings)
        print(table({"datasets": {name: result["datasets"][name]}}), flush=True)
    result["seconds"] = round(time.perf_counter() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ocr.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "ocr-table.md").write_text(table(result))
    print(f"wrote {out} in {result['seconds']:.0f}s")


if __name__ == "__main__":
    main()
