"""Train, calibrate, save, load and run CMC; and its ablation.

Stage 1 trains the variant's single-modal networks together (mutual learning): each one's
cross-entropy, plus beta * (L_{V->T} + L_{T->V}) when the variant distils. Stage 2 (head
`fusion`) freezes them and trains BLOCK on their features. `joint` and `concat` variants
train in one stage. Every stage keeps the weights of its best validation loss and stops
after `patience` epochs without improvement. The head's logits are then calibrated by
temperature scaling on the validation split, and scored on val and test.

A saved model is a folder: model.safetensors (weights), config.json (everything needed to
rebuild it: variant, dimensions, encoder identity, temperature, the cmc section),
metrics.json, and plots (history.png, evaluation-val.png, evaluation-test.png).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mmd.config import Settings, TrainConfig
from mmd.evaluate.metrics import classification_metrics, fit_temperature, plot_evaluation, plot_history
from mmd.items import now_iso
from mmd.models.cmc.config import VARIANTS, CMCConfig, Variant
from mmd.models.cmc.loss import CrossModalDistillation
from mmd.models.cmc.model import CMCModel
from mmd.encoders.base import select_device
from mmd.models.data import ModelMismatch, Split, TrainData
from mmd.models.io import read_model_config, save_weights
from mmd.util import write_json

MODEL_NAME = "cmc"
GRAD_CLIP = 5.0


def paths(settings: Settings) -> dict[str, Path]:
    return {
        "model": settings.data_dir / "models" / MODEL_NAME,
        "report": settings.reports_dir / "train_cmc.json",
        "plots": settings.reports_dir / "cmc",
        "ablation": settings.reports_dir / "cmc-ablation.json",
        "ablation_table": settings.reports_dir / "cmc-ablation.md",
        "predictions": settings.data_dir / "predictions" / f"{MODEL_NAME}.parquet",
    }


# --------------------------------------------------------------------------- inputs
class Inputs:
    """A split on the device: features (frozen backbones), or raw text and decoded pictures
    (fine-tuning, where `encoder` turns an index batch into backbone inputs)."""

    def __init__(self, split: Split, device: torch.device, raw: "RawInputs | None" = None):
        self.split, self.device, self.raw = split, device, raw
        self.labels = torch.as_tensor(split.labels, device=device)
        self.present = torch.as_tensor(split.has_image, device=device)
        if raw is None:
            self.text = torch.as_tensor(split.text, device=device)
            self.image = torch.as_tensor(split.image, device=device)

    def __len__(self) -> int:
        return len(self.split)

    def batch(self, idx: torch.Tensor) -> tuple[Any, Any, torch.Tensor]:
        if self.raw is None:
            return self.text[idx], self.image[idx], self.present[idx]
        return self.raw.batch(self.split, idx.cpu().numpy(), self.device) + (self.present[idx],)


class RawInputs:
    """Text strings and decoded, transformed pictures for the backbones (fine-tuning)."""

    def __init__(self, encoder, data_dir: Path, image_shape: tuple[int, ...]):
        self.encoder, self.data_dir, self.image_shape = encoder, Path(data_dir), image_shape

    def batch(self, split: Split, idx: np.ndarray, device: torch.device) -> tuple[list[str], torch.Tensor]:
        from mmd.encoders.base import resolve_image_path

        texts = [split.texts[i] for i in idx]
        images = []
        for i in idx:
            ref = split.image_paths[i] if split.has_image[i] else None
            path = resolve_image_path(self.data_dir, ref) if ref else None
            if isinstance(path, Path):
                images.append(self.encoder.image_transform(self.encoder.load_image(path)))
            else:
                images.append(torch.zeros(self.image_shape, dtype=torch.uint8))
        return texts, torch.stack(images).to(device)


def _batches(n: int, size: int, generator: torch.Generator | None, device: torch.device) -> list[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    return [order[s : s + size].to(device) for s in range(0, n, size)]


# --------------------------------------------------------------------------- model
def build_model(cfg: CMCConfig, variant: Variant, text_dim: int, image_dim: int,
                backbones: tuple[nn.Module, nn.Module] | None = None) -> CMCModel:
    text_bb, image_bb = backbones if backbones is not None else (None, None)
    return CMCModel(text_dim, image_dim, cfg.hidden, cfg.dropout, variant.branches, variant.head, cfg.block,
                    text_backbone=text_bb, image_backbone=image_bb)


@torch.no_grad()
def predict_logits(model: CMCModel, inputs: Inputs, batch_size: int = 512) -> np.ndarray:
    model.eval()
    out = [model(*inputs.batch(idx)).float().cpu() for idx in _batches(len(inputs), batch_size, None, inputs.device)]
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated P(label 1) = softmax(logits / T)[:, 1]."""
    z = np.asarray(logits, np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e[:, 1] / e.sum(axis=1)).astype(np.float32)


# --------------------------------------------------------------------------- training
@dataclass
class Trained:
    model: CMCModel
    variant: str
    temperature: float
    history: list[dict]
    metrics: dict
    seconds: float
    stopped: dict = field(default_factory=dict)  # stage -> best epoch
    scores: dict = field(default_factory=dict)   # role -> calibrated P(label 1) of its items


class _Fit:
    """One stage: minibatch epochs, best-validation checkpoint, early stopping."""

    def __init__(self, cfg: CMCConfig, history: list[dict], generator: torch.Generator, device: torch.device):
        self.cfg, self.history, self.generator, self.device = cfg, history, generator, device

    def __call__(self, stage: str, modules: Sequence[nn.Module], optimizers: list[torch.optim.Optimizer], n: int,
                 step: Callable[[torch.Tensor], torch.Tensor], validate: Callable[[], float], epochs: int) -> int:
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        best, best_epoch, bad = float("inf"), 0, 0
        best_state = [copy.deepcopy(m.state_dict()) for m in modules]
        for epoch in range(1, epochs + 1):
            for m in modules:
                m.train()
            total, count = 0.0, 0
            for idx in _batches(n, self.cfg.batch_size, self.generator, self.device):
                if len(idx) < 2:  # a lone leftover item: too little for a step (and NCE needs a pair)
                    continue
                loss = step(idx)
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, GRAD_CLIP)
                for opt in optimizers:
                    opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            val = validate()
            self.history.append({"stage": stage, "epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val})
            if val < best - 1e-5:
                best, best_epoch, bad = val, epoch, 0
                best_state = [copy.deepcopy(m.state_dict()) for m in modules]
            else:
                bad += 1
                if bad >= self.cfg.patience:
                    break
        for m, state in zip(modules, best_state):
            m.load_state_dict(state)
        return best_epoch


def _optimizers(cfg: CMCConfig, heads: Sequence[nn.Module], model: CMCModel) -> list[torch.optim.Optimizer]:
    """Adam for the heads (and the text backbone at its own rate); SGD for an image backbone."""
    backbone_ids: set[int] = set()
    groups: list[dict] = []
    text_bb = model.text_net.backbone if model.text_net is not None else None
    image_bb = model.image_net.backbone if model.image_net is not None else None
    if text_bb is not None:
        ps = [p for p in text_bb.parameters() if p.requires_grad]
        backbone_ids |= {id(p) for p in ps}
        groups.append({"params": ps, "lr": cfg.finetune.text_lr, "weight_decay": 0.0})
    sgd = None
    if image_bb is not None:
        ps = [p for p in image_bb.parameters() if p.requires_grad]
        backbone_ids |= {id(p) for p in ps}
        if ps:
            sgd = torch.optim.SGD(ps, lr=cfg.finetune.image_lr, momentum=cfg.finetune.image_momentum,
                                  weight_decay=cfg.finetune.image_weight_decay)
    rest = [p for m in heads for p in m.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups.insert(0, {"params": rest})
    adam = torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, weight_decay=cfg.weight_decay)
    return [adam] + ([sgd] if sgd is not None else [])


def _class_weights(cfg: CMCConfig, labels: np.ndarray, device: torch.device) -> torch.Tensor | None:
    if cfg.class_weight == "none":
        return None
    counts = np.bincount(labels, minlength=2).astype(np.float64)
    return torch.as_tensor(len(labels) / (2 * np.maximum(counts, 1)), dtype=torch.float32, device=device)


def train_variant(data: TrainData, cfg: CMCConfig, train_cfg: TrainConfig, variant_name: str | None = None,
                  seed: int | None = None, backbones: tuple[nn.Module, nn.Module] | None = None,
                  raw: RawInputs | None = None, log: Callable[[str], None] | None = None) -> Trained:
    """Train one variant on `data` (features, or raw inputs with `backbones` to fine-tune)."""
    started = time.perf_counter()
    name = variant_name or cfg.variant
    variant = VARIANTS[name]
    seed = train_cfg.seed if seed is None else seed
    device = select_device(train_cfg.device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(cfg, variant, data.text_dim, data.image_dim, backbones).to(device)
    train, val = Inputs(data.train, device, raw), Inputs(data.val, device, raw)
    weight = _class_weights(cfg, data.train.labels, device)
    history: list[dict] = []
    fit = _Fit(cfg, history, gen, device)
    stopped: dict[str, int] = {}

    def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=weight)

    @torch.no_grad()
    def val_loss(fn: Callable[[Any, Any, torch.Tensor], dict[str, torch.Tensor] | torch.Tensor], keys=None) -> float:
        model.eval()
        total = 0.0
        for idx in _batches(len(val), 512, None, device):
            out = fn(*val.batch(idx))
            y = val.labels[idx]
            total += float(sum(ce(out[k], y) for k in keys) if keys else ce(out, y)) * len(idx)
        return total / len(val)

    if variant.head in ("joint", "concat"):
        def step(idx):
            t, v, p = train.batch(idx)
            return ce(model(t, v, p), train.labels[idx])

        stopped["joint"] = fit("joint", [model], _optimizers(cfg, [model], model), len(train), step,
                               lambda: val_loss(model), cfg.epochs)
    else:
        # ---- stage 1: the single-modal networks, mutually, with or without distillation
        distill = None
        bank_index = torch.full((len(train),), -1, dtype=torch.long, device=device)
        paired = np.flatnonzero(data.train.has_image)
        if variant.distill and cfg.beta > 0 and len(paired) >= 2:
            bank_index[torch.as_tensor(paired, device=device)] = torch.arange(len(paired), device=device)
            distill = CrossModalDistillation(cfg.hidden, cfg.hidden, cfg.nce.feat_dim, len(paired), cfg.nce.k,
                                             cfg.nce.temperature, cfg.nce.momentum, gen).to(device)
            bank_labels = (torch.as_tensor(data.train.labels[paired], device=device)
                           if cfg.nce.negatives == "other_class" else None)
        elif variant.distill:
            stopped["distill_skipped"] = int(len(paired))  # fewer than 2 items with a picture
        monitored = {"text": ["text_logits"], "image": ["image_logits"],
                     "fusion": ["text_logits", "image_logits"]}[variant.head]

        def step1(idx):
            t, v, p = train.batch(idx)
            y = train.labels[idx]
            out = model.branch_outputs(t, v, p)
            loss = sum(ce(out[f"{b}_logits"], y) for b in variant.branches)
            if distill is not None:
                anchors = bank_index[idx] >= 0
                if int(anchors.sum()) >= 1:
                    pos = bank_index[idx][anchors]
                    contrast = distill.memory.sample(pos, bank_labels, gen)
                    d = distill(out["text_feat"][anchors], out["image_feat"][anchors], pos, contrast)
                    loss = loss + cfg.beta * d["distill"]
            return loss

        heads = [model] + ([distill] if distill is not None else [])
        stopped["networks"] = fit("networks", heads, _optimizers(cfg, heads, model), len(train), step1,
                                  lambda: val_loss(model.branch_outputs, monitored), cfg.epochs)

        # ---- stage 2: BLOCK on the frozen networks' features
        if variant.head == "fusion":
            for net in (model.text_net, model.image_net):
                net.requires_grad_(False)

            @torch.no_grad()
            def features(inputs: Inputs) -> tuple[torch.Tensor, torch.Tensor]:
                model.eval()
                ft, fv = [], []
                for idx in _batches(len(inputs), 512, None, device):
                    out = model.branch_outputs(*inputs.batch(idx))
                    ft.append(out["text_feat"])
                    fv.append(out["image_feat"])
                return torch.cat(ft), torch.cat(fv)

            tr_t, tr_v = features(train)
            va_t, va_v = features(val)

            def step2(idx):
                return ce(model.fusion(tr_t[idx], tr_v[idx]), train.labels[idx])

            @torch.no_grad()
            def val2() -> float:
                model.fusion.eval()
                return float(ce(model.fusion(va_t, va_v), val.labels))

            stopped["fusion"] = fit("fusion", [model.fusion], _optimizers(cfg, [model.fusion], model), len(train),
                                    step2, val2, cfg.fusion_epochs)
            for net in (model.text_net, model.image_net):
                net.requires_grad_(True)

    model.eval()
    val_logits = predict_logits(model, val)
    temperature = fit_temperature(val_logits, data.val.labels) if cfg.calibrate else 1.0
    scores = {"val": probabilities(val_logits, temperature)}
    if data.test is not None:
        scores["test"] = probabilities(predict_logits(model, Inputs(data.test, device, raw)), temperature)
    metrics = {role: classification_metrics(getattr(data, role).labels, p, train_cfg.label_names)
               for role, p in scores.items()}
    if log:
        scored = metrics.get("test", metrics["val"])
        log(f"{name} seed {seed}: acc {scored['accuracy']:.3f} macro-F1 {scored['macro_f1']:.3f} "
            f"AUROC {scored['auroc'] if scored['auroc'] is None else round(scored['auroc'], 3)} "
            f"({time.perf_counter() - started:.0f}s, epochs {stopped})")
    return Trained(model.cpu(), name, temperature, history, metrics, time.perf_counter() - started, stopped, scores)


# --------------------------------------------------------------------------- saving and loading
def save_model(folder: Path, trained: Trained, cfg: CMCConfig, data: TrainData, train_cfg: TrainConfig,
               finetuned: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "model.safetensors", trained.model, {"model": MODEL_NAME, "variant": trained.variant})
    meta = {
        "model": MODEL_NAME,
        "variant": trained.variant,
        "encoder": data.encoder,
        "text_dim": data.text_dim,
        "image_dim": data.image_dim,
        "finetuned": finetuned,
        "temperature": trained.temperature,
        "label_names": list(train_cfg.label_names),
        "cmc": cfg.model_dump(mode="json"),
        "trained_at": now_iso(),
        "best_epochs": trained.stopped,
        "data": data.summary(),
    }
    write_json(folder / "config.json", meta)
    write_json(folder / "metrics.json", trained.metrics)
    return folder


@dataclass
class Predictor:
    """A loaded CMC model: calibrated P(label 1) for item features."""

    model: CMCModel
    meta: dict
    device: torch.device

    @property
    def temperature(self) -> float:
        return float(self.meta["temperature"])

    def logits(self, split: Split, raw: RawInputs | None = None) -> np.ndarray:
        return predict_logits(self.model, Inputs(split, self.device, raw))

    def predict(self, split: Split, raw: RawInputs | None = None) -> np.ndarray:
        return probabilities(self.logits(split, raw), self.temperature)



def load_model(folder: Path, encoder=None, device: str = "auto") -> Predictor:
    """Rebuild a saved model. A fine-tuned one needs the encoder it was fine-tuned from."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_model_config(folder, MODEL_NAME, encoder=encoder)
    cfg = CMCConfig.model_validate(meta["cmc"])
    backbones = None
    if meta.get("finetuned"):
        if encoder is None:
            raise ModelMismatch("a fine-tuned CMC model needs its encoder to rebuild the backbones")
        backbones = encoder.trainable_backbones()
    model = build_model(cfg, VARIANTS[meta["variant"]], meta["text_dim"], meta["image_dim"], backbones)
    model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    dev = select_device(device)
    return Predictor(model.to(dev).eval(), meta, dev)


# --------------------------------------------------------------------------- the stage
def raw_inputs(encoder, data_dir: Path) -> RawInputs:
    """Backbone inputs for fine-tuning: texts as they are, pictures decoded and transformed (the
    shape of a blank transformed picture stands in for a missing one)."""
    from PIL import Image

    blank = torch.zeros(3, 64, 64, dtype=torch.uint8) if encoder.image_input == "tensor" else Image.new("RGB", (64, 64))
    return RawInputs(encoder, data_dir, tuple(encoder.image_transform(blank).shape))


def run_train_cmc(settings: Settings, variant: str | None = None, log: Callable[[str], None] | None = None) -> dict:
    """The DVC stage: train the configured variant, save it under <data>/models/cmc, write the report."""
    from mmd.encoders import build_encoder
    from mmd.models.data import load_training_data

    cfg, tcfg = settings.params.cmc, settings.params.train
    p = paths(settings)
    encoder = build_encoder(settings.params.embed, settings.root)
    data = load_training_data(settings, encoder)
    backbones, raw = None, None
    if cfg.finetune.enabled:
        backbones = encoder.trainable_backbones()
        raw = raw_inputs(encoder, settings.data_dir)
    trained = train_variant(data, cfg, tcfg, variant, backbones=backbones, raw=raw, log=log)
    save_model(p["model"], trained, cfg, data, tcfg, finetuned=cfg.finetune.enabled)
    plots = {"history": str(plot_history(trained.history, p["plots"] / "history.png", f"CMC ({trained.variant})"))}
    for role, y_p in trained.scores.items():
        plots[role] = str(plot_evaluation(getattr(data, role).labels, y_p, p["plots"] / f"evaluation-{role}.png",
                                          f"CMC ({trained.variant}), {role}"))
    report = {"trained_at": now_iso(), "model": MODEL_NAME, "variant": trained.variant, "seconds": round(trained.seconds, 2),
              "temperature": trained.temperature, "best_epochs": trained.stopped, "data": data.summary(),
              **trained.metrics, "plots": plots, "model_dir": str(p["model"])}
    write_json(p["report"], report)
    return report


# --------------------------------------------------------------------------- the ablation
ABLATION_COLUMNS = ("accuracy", "fake_p", "fake_r", "fake_f1", "real_p", "real_r", "real_f1", "macro_f1", "auroc")


def _flat(m: dict, label_names: Sequence[str]) -> dict[str, float]:
    neg, pos = label_names
    return {"accuracy": m["accuracy"], "fake_p": m["per_class"][pos]["precision"],
            "fake_r": m["per_class"][pos]["recall"], "fake_f1": m["per_class"][pos]["f1"],
            "real_p": m["per_class"][neg]["precision"], "real_r": m["per_class"][neg]["recall"],
            "real_f1": m["per_class"][neg]["f1"], "macro_f1": m["macro_f1"],
            "auroc": float("nan") if m["auroc"] is None else m["auroc"]}


def run_ablation(settings: Settings, variants: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
                 data: TrainData | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train every ablation variant (on frozen features) on the same data and seeds; write the table."""
    from mmd.models.data import load_training_data

    cfg, tcfg = settings.params.cmc, settings.params.train
    variants = list(variants or cfg.ablation)
    seeds = list(seeds or cfg.ablation_seeds)
    if cfg.finetune.enabled:
        raise ValueError("the ablation runs on frozen features: set cmc.finetune.enabled to false")
    data = data or load_training_data(settings)
    scored_on = "test" if data.test is not None else "val"
    rows = []
    for name in variants:
        runs = [train_variant(data, cfg, tcfg, name, seed, log=log) for seed in seeds]
        flat = [_flat(r.metrics[scored_on], tcfg.label_names) for r in runs]
        mean = {c: float(np.mean([f[c] for f in flat])) for c in ABLATION_COLUMNS}
        std = {c: float(np.std([f[c] for f in flat])) for c in ABLATION_COLUMNS}
        rows.append({"variant": name, "about": VARIANTS[name].about, "mean": mean, "std": std, "runs": flat,
                     "seconds": float(np.mean([r.seconds for r in runs])),
                     "best_epochs": [r.stopped for r in runs]})
    result = {"made_at": now_iso(), "scored_on": scored_on, "seeds": seeds, "label_names": list(tcfg.label_names),
              "data": data.summary(), "cmc": cfg.model_dump(mode="json"), "rows": rows}
    p = paths(settings)
    write_json(p["ablation"], result)
    p["ablation_table"].write_text(ablation_table(result))
    return result


def ablation_table(result: dict) -> str:
    """The ablation as a Markdown table, in the paper's column order (means, ± std over seeds)."""
    neg, pos = result["label_names"]
    heads = ["variant", "accuracy", f"{pos} P", f"{pos} R", f"{pos} F1", f"{neg} P", f"{neg} R", f"{neg} F1",
             "macro-F1", "AUROC"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    several = len(result["seeds"]) > 1
    for row in result["rows"]:
        cells = [f"{row['mean'][c]:.3f}" + (f" ± {row['std'][c]:.3f}" if several else "") for c in ABLATION_COLUMNS]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
