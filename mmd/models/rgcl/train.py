"""Train RGCL, keep its RKC database in the vector store, save, load and predict.

Each epoch (every `refresh_every`) the training set's embeddings g are recomputed and
mined (see knn.py): every example gets its nearest same-label positive and nearest
opposite-label hard negatives. A step embeds the batch, its positives and negatives with
the current head and minimises (1 - w) * L_RGCL + w * BCE. The best validation epoch is
kept (by RKC's AUROC against the training embeddings, or the head's BCE:
`rgcl.early_stop`), early stopping after `patience`.

After training, the training embeddings with their labels are the RKC database: written
to `database.parquet` beside the weights (the versioned copy) and upserted into the
`rgcl.collection` of the vector store (the index RKC searches). `mmd label add` embeds
newly labelled items with the trained head and adds them to both the labels file
(`<data>/labels/labels.parquet`) and the collection: RKC uses them at once, no retraining.

A saved model is a folder: model.safetensors, config.json, metrics.json, database.parquet.
"""

from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn
from torch.nn import functional as F

from mmd.config import Settings, TrainConfig
from mmd.evaluate.metrics import classification_metrics, fit_temperature, plot_evaluation, plot_history
from mmd.items import now_iso, read_table, sha256_hex, write_table
from mmd.encoders.base import select_device
from mmd.models.data import Split, TrainData
from mmd.models.io import read_model_config, save_weights
from mmd.models.rgcl.config import RGCLConfig, saved_config
from mmd.models.rgcl.knn import TIE_MARGIN, Mined, mine_batch, mine_exact, mine_store, rkc_from_hits, rkc_scores
from mmd.models.rgcl.loss import rgcl_loss
from mmd.models.rgcl.model import RGCLHead
from mmd.util import write_json

MODEL_NAME = "rgcl"
Miner = Callable[[np.ndarray, np.ndarray], Mined]

LABELS_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("image_path", pa.string()),
                           ("label", pa.int8()), ("added_at", pa.string()), ("by", pa.string())])


def paths(settings: Settings) -> dict[str, Path]:
    return {
        "model": settings.data_dir / "models" / MODEL_NAME,
        "report": settings.reports_dir / "train_rgcl.json",
        "plots": settings.reports_dir / "rgcl",
        "labels": settings.data_dir / "labels" / "labels.parquet",
        "label_images": settings.data_dir / "labels" / "images",
        "predictions": settings.data_dir / "predictions" / f"{MODEL_NAME}.parquet",
    }


# --------------------------------------------------------------------------- the generic loop
@dataclass
class FitResult:
    head: nn.Module
    history: list[dict]
    best_epoch: int
    seconds: float


@torch.no_grad()
def embed_all(head: nn.Module, inputs: Sequence[torch.Tensor], batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(g, logit) of every row, in eval mode."""
    head.eval()
    gs, logits = [], []
    for start in range(0, len(inputs[0]), batch):
        g, logit = head(*[x[start : start + batch] for x in inputs])
        gs.append(g.float().cpu())
        logits.append(logit.float().cpu())
    if not gs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.float32)
    return torch.cat(gs).numpy(), torch.cat(logits).numpy()


def fit_head(head: nn.Module, train_inputs: tuple[torch.Tensor, ...], train_labels: torch.Tensor,
             val_inputs: tuple[torch.Tensor, ...], val_labels: torch.Tensor, cfg: RGCLConfig, seed: int = 0,
             log: Callable[[str], None] | None = None, miner: Miner | None = None) -> FitResult:
    """Train `head` (inputs -> (g, logit)) with the RGCL loss + BCE; exact mining unless a `miner` is given.
    Inputs are tuples of tensors with one row per example (features, or features + masks)."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = train_labels.device
    y_np = train_labels.cpu().numpy()
    miner = miner or (lambda g, y: mine_exact(g, y, cfg.hard_negatives, device=device))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    w = cfg.bce_weight
    history: list[dict] = []
    best, best_epoch, bad = float("inf"), 0, 0
    best_state = copy.deepcopy(head.state_dict())
    n = len(train_labels)
    mined: Mined | None = None
    g_train: np.ndarray | None = None  # the training embeddings under the current weights, when known
    for epoch in range(1, cfg.epochs + 1):
        if mined is None or (epoch - 1) % cfg.refresh_every == 0:
            g_all = g_train if g_train is not None else embed_all(head, train_inputs)[0]
            t = time.perf_counter()
            # batch mining searches at every step (below); the refresh only takes the snapshot
            mined = miner(g_all, y_np) if cfg.mining_query == "refresh" else Mined(np.arange(n), np.zeros((n, 0), int))
            mining_s = time.perf_counter() - t
            snapshot = torch.as_tensor(g_all, device=device)  # the embeddings mined on (mined_from: snapshot)
        pos_all = torch.as_tensor(mined.positives if cfg.positive == "other" else np.arange(n), device=device)
        neg_all = torch.as_tensor(mined.negatives, device=device)
        head.train()
        total, count = 0.0, 0
        for idx in torch.randperm(n, generator=gen).split(cfg.batch_size):
            if len(idx) < 2:
                continue
            idx = idx.to(device)
            y = train_labels[idx]
            g, logit = head(*[x[idx] for x in train_inputs])
            pos, neg = pos_all[idx], neg_all[idx]
            if cfg.mining_query == "batch":
                pos, neg = mine_batch(g, snapshot, train_labels, y, cfg.hard_negatives, cfg.mining_window)
            g_pos, g_neg = _mined_embeddings(head, train_inputs, pos.clamp(min=0), neg.clamp(min=0), snapshot, cfg)
            g_pos = g_pos * (pos >= 0)[:, None]  # none in the window: a zero vector, cosine 0
            loss = (1 - w) * rgcl_loss(g, y, g_pos, g_neg, cfg.temperature, cfg.in_batch_negatives, cfg.loss,
                                       cfg.triplet_margin, neg >= 0) \
                + w * F.binary_cross_entropy_with_logits(logit, y.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        g_train = None  # the weights moved
        val_g, val_logit = embed_all(head, val_inputs)
        val_bce = float(F.binary_cross_entropy_with_logits(torch.as_tensor(val_logit), val_labels.float().cpu()))
        record = {"stage": "rgcl", "epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val_bce,
                  "mining_s": round(mining_s, 4)}
        val = val_bce
        if cfg.early_stop == "rkc":
            from mmd.evaluate.metrics import auroc

            g_train, _ = embed_all(head, train_inputs)  # reused by the next refresh
            found = auroc(val_labels.cpu().numpy(), rkc_scores(val_g, g_train, y_np, cfg.rkc.k, cfg.rkc.weighting))
            record["val_rkc_auroc"] = found
            val = 1.0 - (found if found is not None else 0.5)
        elif cfg.early_stop == "head_acc":
            record["val_head_acc"] = float(((val_logit >= 0) == (val_labels.cpu().numpy() == 1)).mean())
            val = 1.0 - record["val_head_acc"]
        history.append(record)
        if val < best - 1e-5:
            best, best_epoch, bad = val, epoch, 0
            best_state = copy.deepcopy(head.state_dict())
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    head.load_state_dict(best_state)
    head.eval()
    if log:
        log(f"rgcl: best epoch {best_epoch} of {len(history)} (val {cfg.early_stop} {best:.4f}), "
            f"{time.perf_counter() - started:.0f}s")
    return FitResult(head, history, best_epoch, time.perf_counter() - started)


def _mined_embeddings(head: nn.Module, inputs: Sequence[torch.Tensor], pos: torch.Tensor, neg: torch.Tensor,
                      snapshot: torch.Tensor, cfg: RGCLConfig) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The embeddings of a batch's positives (B, d) and hard negatives (B, H, d): re-embedded by the
    current head, with gradient (mined_from: live), or read from the refresh's embeddings (snapshot)."""
    h = neg.shape[1]
    if cfg.mined_from == "snapshot":
        return snapshot[pos], (snapshot[neg.reshape(-1)].view(len(neg), h, -1) if h else None)
    g_pos, _ = head(*[x[pos] for x in inputs])
    g_neg = head(*[x[neg.reshape(-1)] for x in inputs])[0].view(len(neg), h, -1) if h else None
    return g_pos, g_neg


# --------------------------------------------------------------------------- features -> tensors
def tensors(split: Split, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (torch.as_tensor(split.text, device=device), torch.as_tensor(split.image, device=device),
            torch.as_tensor(split.has_image, device=device))


def sigmoid(logit: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(logit, np.float64) / temperature))).astype(np.float32)


def binary_temperature(logit: np.ndarray, y: np.ndarray) -> float:
    """Temperature scaling of a logistic output (as the two-class logits [0, logit])."""
    logit = np.asarray(logit, np.float64)
    return fit_temperature(np.stack([np.zeros_like(logit), logit], axis=1), y)


@dataclass
class Trained:
    head: RGCLHead
    fit: FitResult
    temperature: float
    train_g: np.ndarray
    metrics: dict
    rkc: dict  # role -> RKC scores of its items against the training embeddings


def train_rgcl(data: TrainData, cfg: RGCLConfig, train_cfg: TrainConfig, seed: int | None = None,
               miner: Miner | None = None, log: Callable[[str], None] | None = None) -> Trained:
    """Train on `data`; score the logistic head (temperature-scaled on val) and RKC (database = train)."""
    seed = train_cfg.seed if seed is None else seed
    device = select_device(train_cfg.device)
    torch.manual_seed(seed)
    head = RGCLHead(data.text_dim, data.image_dim, cfg).to(device)
    tr, va = tensors(data.train, device), tensors(data.val, device)
    y_tr = torch.as_tensor(data.train.labels, device=device)
    y_va = torch.as_tensor(data.val.labels, device=device)
    fit = fit_head(head, tr, y_tr, va, y_va, cfg, seed, log, miner)
    train_g, _ = embed_all(head, tr)
    val_g, val_logit = embed_all(head, va)
    temperature = binary_temperature(val_logit, data.val.labels)
    metrics: dict = {}
    rkc: dict = {}
    for role in ("val", "test"):
        split = getattr(data, role)
        if split is None:
            continue
        g, logit = (val_g, val_logit) if role == "val" else embed_all(head, tensors(split, device))
        rkc[role] = rkc_scores(g, train_g, data.train.labels, cfg.rkc.k, cfg.rkc.weighting)
        metrics[role] = {
            "head": classification_metrics(split.labels, sigmoid(logit, temperature), train_cfg.label_names),
            "rkc": classification_metrics(split.labels, rkc[role], train_cfg.label_names),
        }
    return Trained(head.cpu(), fit, temperature, train_g, metrics, rkc)


# --------------------------------------------------------------------------- saving, loading, the database
def write_database(path: Path, ids: Sequence[str], labels: np.ndarray, g: np.ndarray) -> None:
    dim = g.shape[1]
    flat = pa.array(np.asarray(g, np.float32).reshape(-1), type=pa.float32())
    table = pa.Table.from_arrays([pa.array(list(ids), pa.string()), pa.array(np.asarray(labels, np.int8), pa.int8()),
                                  pa.FixedSizeListArray.from_arrays(flat, dim)], names=["id", "label", "g"])
    write_table(table.replace_schema_metadata({"dim": str(dim)}), path)


def read_database(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    table = pq.read_table(path)
    dim = int(table.schema.metadata[b"dim"])
    col = table.column("g").combine_chunks()
    g = col.values.to_numpy(zero_copy_only=False).reshape(-1, dim) if len(col) else np.zeros((0, dim), np.float32)
    return table.column("id").to_pylist(), table.column("label").to_numpy().astype(np.int64), g


def save_model(folder: Path, trained: Trained, cfg: RGCLConfig, data: TrainData, train_cfg: TrainConfig) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "model.safetensors", trained.head, {"model": MODEL_NAME})
    write_database(folder / "database.parquet", data.train.ids, data.train.labels, trained.train_g)
    write_json(folder / "config.json", {
        "model": MODEL_NAME, "encoder": data.encoder, "text_dim": data.text_dim, "image_dim": data.image_dim,
        "temperature": trained.temperature, "label_names": list(train_cfg.label_names),
        "rgcl": cfg.model_dump(mode="json"), "trained_at": now_iso(), "best_epoch": trained.fit.best_epoch,
        "data": data.summary()})
    write_json(folder / "metrics.json", trained.metrics)
    return folder



@dataclass
class Predictor:
    """A loaded RGCL model: embeddings, head scores, and RKC against its database."""

    head: RGCLHead
    meta: dict
    folder: Path

    @property
    def cfg(self) -> RGCLConfig:
        return saved_config(self.meta["rgcl"])

    def embed(self, split: Split) -> tuple[np.ndarray, np.ndarray]:
        return embed_all(self.head, tensors(split, torch.device("cpu")))

    def head_scores(self, split: Split) -> np.ndarray:
        return sigmoid(self.embed(split)[1], float(self.meta["temperature"]))

    def rkc(self, store, split: Split, collection: str | None = None) -> np.ndarray:
        """RKC through the vector store (the database of the trained model plus added labels), in
        `collection` (the configured one by default)."""
        g, _ = self.embed(split)
        if not len(g):
            return np.zeros(0, np.float32)
        cfg = self.cfg
        hits = store.search_batch(collection or cfg.collection, g, k=cfg.rkc.k + TIE_MARGIN, exact=True)
        return rkc_from_hits(hits, cfg.rkc.weighting, cfg.rkc.k).astype(np.float32)


def load_model(folder: Path, encoder=None) -> Predictor:
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_model_config(folder, MODEL_NAME, encoder=encoder)
    head = RGCLHead(meta["text_dim"], meta["image_dim"], saved_config(meta["rgcl"]))
    head.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    return Predictor(head.eval(), meta, folder)


def sync_database(settings: Settings, predictor: Predictor, store, encoder=None, fresh: Sequence[str] = (),
                  collection: str | None = None) -> int:
    """Make the RKC collection (`collection`, the configured one by default) hold the model's database
    plus every added label (the files are the truth): rebuilt when it belongs to another model, else
    only what is missing (and the `fresh` label ids) is written. Returns how many points were written."""
    from mmd.models.data import item_features

    name = collection or predictor.cfg.collection
    ids, labels, g = read_database(predictor.folder / "database.parquet")
    identity = f"rgcl:{predictor.meta['trained_at']}"
    info = store.info(name)
    written = 0
    if info is None or info.get("encoder") != identity:
        store.ensure_collection(name, g.shape[1], identity, rebuild=True)
        present: set[str] = set()
    else:
        present = store.ids(name)
    todo = [n for n, i in enumerate(ids) if i not in present]
    if todo:
        store.upsert(name, [ids[n] for n in todo], g[np.array(todo)],
                     [{"label": int(labels[n]), "source": "train"} for n in todo])
        written += len(todo)
    fresh = set(fresh)
    added = [r for r in read_table(paths(settings)["labels"], LABELS_SCHEMA).to_pylist()
             if r["id"] not in present or r["id"] in fresh]
    if added:
        g_new, _ = predictor.embed(item_features(settings, added, encoder))
        store.upsert(name, [r["id"] for r in added], g_new,
                     [{"label": int(r["label"]), "source": "label"} for r in added])
        written += len(added)
    return written


# --------------------------------------------------------------------------- the stage
def candidate_collection(cfg: RGCLConfig) -> str:
    """The RKC collection a challenger is scored through (the configured one serves the champion)."""
    return f"{cfg.collection}_candidate"


def run_train_rgcl(settings: Settings, log: Callable[[str], None] | None = None) -> dict:
    from mmd.encoders import build_encoder
    from mmd.index import open_index
    from mmd.models.data import load_training_data

    cfg, tcfg = settings.params.rgcl, settings.params.train
    p = paths(settings)
    started = time.perf_counter()
    encoder = build_encoder(settings.params.embed, settings.root)
    data = load_training_data(settings, encoder)
    with open_index(settings) as store:
        miner = None
        if cfg.mining == "store":
            def miner(g, y):
                return mine_store(store, cfg.mining_collection, data.train.ids, g, y, cfg.hard_negatives)
        trained = train_rgcl(data, cfg, tcfg, miner=miner, log=log)
        save_model(p["model"], trained, cfg, data, tcfg)
        predictor = load_model(p["model"], encoder)
        # a challenger: its database goes to the candidate collection, the serving one is the champion's
        candidate = candidate_collection(cfg)
        synced = sync_database(settings, predictor, store, encoder, collection=candidate)
        # RKC through the store equals the brute-force figure computed in training
        agreement = float(np.mean(np.abs(predictor.rkc(store, data.val, candidate) - trained.rkc["val"]) < 1e-4))
    plots = {"history": str(plot_history(trained.fit.history, p["plots"] / "history.png", "RGCL"))}
    for role, scores in trained.rkc.items():
        plots[role] = str(plot_evaluation(getattr(data, role).labels, scores, p["plots"] / f"evaluation-{role}.png",
                                          f"RGCL (RKC), {role}"))
    report = {"trained_at": now_iso(), "model": MODEL_NAME, "seconds": round(time.perf_counter() - started, 2),
              "best_epoch": trained.fit.best_epoch, "epochs_run": len(trained.fit.history),
              "mining": cfg.mining, "mining_seconds": round(sum(h["mining_s"] for h in trained.fit.history), 3),
              "temperature": trained.temperature, "database_points": synced, "store_rkc_agreement": agreement,
              "data": data.summary(), **trained.metrics, "plots": plots, "model_dir": str(p["model"])}
    write_json(p["report"], report)
    return report


# --------------------------------------------------------------------------- labels between retrains
def add_labels(settings: Settings, rows: list[dict], by: str = "cli") -> dict:
    """Newly labelled items (text, optional image path, label 0/1) join the RKC database at once:
    kept in `<data>/labels/labels.parquet` (pictures copied beside it) and upserted into the store."""
    from mmd.encoders import build_encoder
    from mmd.index import open_index

    from mmd.models.predict import serving_dir

    p = paths(settings)
    encoder = build_encoder(settings.params.embed, settings.root)
    predictor = load_model(serving_dir(settings, MODEL_NAME), encoder)  # labels serve the model in service
    clean = []
    for r in rows:
        if r.get("label") not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {r.get('label')!r}")
        text = (r.get("text") or "").strip()
        if not text:
            raise ValueError("a labelled item needs its text")
        image_rel = None
        if r.get("image"):
            src = Path(r["image"])
            if not src.is_file():
                raise FileNotFoundError(f"image {src} not found")
            blob = src.read_bytes()
            sha = sha256_hex(blob)
            dest = p["label_images"] / f"{sha}{src.suffix.lower() or '.img'}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if not dest.exists():
                shutil.copyfile(src, dest)
            image_rel = dest.relative_to(settings.data_dir).as_posix()
        item_id = r.get("id") or "label-" + sha256_hex(f"{text}\x1f{image_rel or ''}")[:16]
        clean.append({"id": str(item_id), "text": text, "image_path": image_rel, "label": int(r["label"]),
                      "added_at": now_iso(), "by": by})
    existing = read_table(p["labels"], LABELS_SCHEMA)
    keep = [x for x in existing.to_pylist() if x["id"] not in {c["id"] for c in clean}]
    write_table(pa.Table.from_pylist(keep + clean, schema=LABELS_SCHEMA), p["labels"])
    with open_index(settings) as store:
        sync_database(settings, predictor, store, encoder, fresh=[c["id"] for c in clean])
        total = store.count(predictor.cfg.collection)
    return {"added": len(clean), "database": total, "labels_file": str(p["labels"])}
