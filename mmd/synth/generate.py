"""Synthesize: new synthetic image-text items from the real ones, with provenance, into the pool.

Three generators, each drawing its partners from the real items indexed in Qdrant so
that what it makes is hard rather than random:

- out_of_context: a real caption with a *different* real image that is semantically
  close (found image -> image, or text -> image with a shared-space encoder such as
  CLIP, caption -> caption otherwise), from another event or image group: label 1, the
  NewsCLIPpings recipe. With `pristine`, a truthful caption also gets another truthful
  image of its own event: label 0, so the pool is not one class.
- caption_edit: one name, number, date or place of the caption swapped for one from a
  related caption (`mmd.synth.edits`): label 1, the image is kept, the caption now lies
  about it.
- meme_recompose: one meme's text rendered onto a related meme's picture or onto a
  neutral template (`mmd.synth.render`). Labels by explicit rules: harmful text stays
  harmful on any picture; harmless text on a template or on a harmless picture is
  harmless; harmless text on a harmful picture is ambiguous (the harm may live in the
  picture) and is not generated.

Deterministic for a seed: every parent has its own random stream, seeded by
(seed, generator, parent id), and retrieval is exact. Incremental: a parent is tried
once per generator (`attempts.parquet`), so a run only works on real items that are new
since the last; the pool keeps its history. Bounded: at most `max_new_per_run` items a
run; parents left over wait for the next run and are counted as deferred.

Items of `holdout_splits` never parent anything, so synthetic data cannot leak the
evaluation split. Every synthetic item keeps its parent's `group` for the same reason.

Writes under `<data>/synthetic/`: pool.parquet (items + provenance), vectors.parquet
(their mixed vectors), images/ (rendered memes), attempts.parquet; the pool is synced
into the synthetic Qdrant collection; `reports/synthesize.json`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from mmd.config import Settings
from mmd.formats.pool import ATTEMPT_SCHEMA, SYNTH_SCHEMA, read_pool, read_pool_vectors, sync_synthetic
from mmd.formats.vectors import write_vectors
from mmd.items import now_iso, read_table, write_table
from mmd.synth.generators import (GENERATORS, Candidate, GeneratorReport, _Real, caption_edit, meme_recompose,
                                  out_of_context)
from mmd.results import SynthesizeReport as SynthesizeResult







@dataclass
class SynthesizeReport:
    encoder: str
    pool_before: int
    pool_after: int
    new: int
    indexed: int
    seconds: float
    generators: dict[str, GeneratorReport]

    def to_dict(self) -> dict:
        return {"encoder": self.encoder, "pool_before": self.pool_before, "pool_after": self.pool_after,
                "new": self.new, "indexed": self.indexed, "seconds": self.seconds,
                "reconciled": self.pool_after == self.pool_before + self.new,
                "generators": {k: v.to_dict() for k, v in self.generators.items()}}


















# --------------------------------------------------------------------------- the stage
def _eligible(real: _Real, generator: str, cfg) -> list[str]:
    needs_image = generator in ("out_of_context", "meme_recompose")
    return sorted(
        i for i, r in real.rows.items()
        if r["kind"] in cfg.kinds and (r["text"] or "").strip() and (r["image_path"] or not needs_image)
    )


def run_synthesize(settings: Settings, show_progress: bool = False) -> SynthesizeReport:
    """Generate what is new, append it to the pool with its vectors, and sync the synthetic collection."""
    from mmd.encoders import build_encoder, mix
    from mmd.index import ensure_indexed
    from mmd.store import open_store

    cfg = settings.params.synthesize
    at = settings.layout
    started = time.perf_counter()
    encoder = build_encoder(settings.params.embed, settings.root)
    pool = read_pool(settings)
    attempts = read_table(at.attempts, ATTEMPT_SCHEMA)
    tried = {(g, i) for g, i in zip(attempts.column("generator").to_pylist(), attempts.column("parent_id").to_pylist())}
    existing = set(pool.column("id").to_pylist())
    reports = {g: GeneratorReport() for g in GENERATORS}
    budget = cfg.max_new_per_run
    new_candidates: list[Candidate] = []
    new_attempts: list[dict] = []

    store = open_store(settings)
    try:
        ensure_indexed(settings, store)
        real = _Real(settings, store, encoder, set(cfg.holdout_splits))
        if real.encoder_identity and real.encoder_identity != encoder.identity:
            raise ValueError(f"the embeddings were made by {real.encoder_identity}, but embed is configured for "
                             f"{encoder.identity}: run `mmd embed` and `mmd index --rebuild` first")
        for g in GENERATORS:
            gcfg = getattr(cfg, g)
            rep = reports[g]
            eligible = [i for i in _eligible(real, g, gcfg) if (g, i) not in tried]
            rep.parents = len(eligible)
            if not gcfg.enabled or gcfg.per_parent == 0:
                rep.skipped = "disabled"
                continue
            if encoder.keyed_by_id and g != "out_of_context":
                rep.skipped = (f"the {settings.params.embed.backend} encoder looks vectors up by item id and cannot "
                               "encode new text or pictures; only out_of_context reuses existing vectors")
                continue
            # a parent makes at most per_parent (+1 pristine) items: take as many parents as the budget allows
            per = gcfg.per_parent + (1 if g == "out_of_context" and gcfg.pristine else 0)
            take = eligible[: max(0, budget // per)]
            rep.deferred = len(eligible) - len(take)
            if not take:
                continue
            real.vectors(take)
            if g == "meme_recompose":
                made = list(meme_recompose(real, take, gcfg, cfg.seed, rep, at.synthetic_images))
            elif g == "caption_edit":
                made = list(caption_edit(real, take, gcfg, cfg.seed, rep))
            else:
                made = list(out_of_context(real, take, gcfg, cfg.seed, rep))
            produced = Counter(c.parents[0] for c in made if c.item.id not in existing)
            for c in made:
                if c.item.id in existing:
                    continue
                existing.add(c.item.id)
                new_candidates.append(c)
                rep.labels[c.item.label] += 1
            rep.attempted = len(take)
            rep.produced = sum(produced.values())
            budget -= rep.produced
            now = now_iso()
            new_attempts += [{"generator": g, "parent_id": i, "produced": produced.get(i, 0),
                              "reason": rep.why.get(i, ""), "attempted_at": now} for i in take]

        # vectors: parts reused from the real parents, new parts encoded above
        if new_candidates:
            real.vectors([x for c in new_candidates for x in (c.text_vec, c.image_vec) if isinstance(x, str)])
        texts, images, has = [], [], []
        for c in new_candidates:
            texts.append(real.text_vec(c.text_vec) if isinstance(c.text_vec, str) else c.text_vec)
            img = real.image_vec(c.image_vec) if isinstance(c.image_vec, str) else c.image_vec
            has.append(img is not None)
            images.append(img if img is not None else np.zeros(encoder.image_dim, np.float32))
        new_table = pa.Table.from_pylist(
            [{**c.item.to_row(), "generator": c.generator, "parent_ids": c.parents, "seed": cfg.seed}
             for c in new_candidates], schema=SYNTH_SCHEMA)
        pool_after = pa.concat_tables([pool, new_table]) if len(new_table) else pool
        old_vec = read_pool_vectors(at.pool_vectors, encoder.identity)
        if new_candidates:
            mixed = mix(np.stack(texts), np.stack(images), np.array(has), settings.params.embed.text_weight)
            all_ids = old_vec[0] + [c.item.id for c in new_candidates]
            all_hashes = old_vec[1] + [c.item.content_hash for c in new_candidates]
            all_has = np.concatenate([old_vec[2], np.array(has)])
            all_mixed = np.concatenate([old_vec[3], mixed]) if len(old_vec[3]) else mixed
            write_table(pool_after, at.pool)
            write_vectors(at.pool_vectors, all_ids, all_hashes, all_has, all_mixed, encoder.identity)
        if new_attempts:
            write_table(pa.concat_tables([attempts, pa.Table.from_pylist(new_attempts, schema=ATTEMPT_SCHEMA)]),
                        at.attempts)
        indexed = sync_synthetic(settings, store)
    finally:
        store.close()

    report = SynthesizeReport(encoder.identity, len(pool), len(pool_after), len(new_candidates), indexed,
                              round(time.perf_counter() - started, 3), reports)
    SynthesizeResult.model_validate({"synthesized_at": now_iso(), **report.to_dict()}).write(at)
    return report
