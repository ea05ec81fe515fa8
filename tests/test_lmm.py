"""LMM detectors (mmd.models.lmm) on tiny random Qwen2-VL and LLaVA models: seconds on a CPU, nothing downloaded."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from mmd.items import ITEM_SCHEMA, write_table
from mmd.models.lmm.config import HeadParams, LMMConfig, LoRAParams
from mmd.models.lmm.model import IGNORE, ItemEncoder, LMMUnavailable, load_lmm
from mmd.models.lmm.tiny import tiny_llava, tiny_qwen2_vl
from mmd.models.lmm.fit import fine_tune, prepare, step_losses, train_detector
from mmd.models.lmm.items import Items
from mmd.models.lmm.predictor import load_lmm_detector, save_detector
from mmd.models.lmm.stage import train_stage as run_train_lmm

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 40, 220), (230, 230, 20)]


def tiny_cfg(**overrides) -> LMMConfig:
    """Toy sizes: LoRA r 4, a 16-wide head, short sequences, small pictures, no accumulation."""
    base = dict(lora=LoRAParams(r=4, alpha=8, dropout=0.0), head=HeadParams(hidden=16), max_length=96, image_size=32,
                batch_size=4, grad_accum=1, lr=1e-2, head_lr=1e-2, stage1_epochs=1, stage2_epochs=0, device="cpu")
    return LMMConfig(**(base | overrides))


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pictures")
    out = []
    for n, colour in enumerate(COLOURS):
        path = folder / f"{n}.png"
        Image.new("RGB", (24 + 8 * n, 20), colour).save(path)
        out.append(path)
    return out


def make_items(n: int, seed: int, pictures: list[Path]) -> Items:
    """Label 1 reads "hate fake", label 0 "love real"; every third item is text-only."""
    y = np.random.default_rng(seed).permutation(np.arange(n) % 2)
    return Items([f"s{seed}-{k}" for k in range(n)], ["hate fake news" if v else "love real cat" for v in y],
                 [None if k % 3 == 0 else pictures[k % len(pictures)] for k in range(n)], y)


def trained_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def rgcl_available() -> bool:
    try:
        from mmd.models.rgcl.config import RGCLConfig  # noqa: F401
        from mmd.models.rgcl.model import FeatureHead  # noqa: F401
        from mmd.models.rgcl.fit import fit_head  # noqa: F401
    except ImportError:
        return False
    return True


needs_rgcl = pytest.mark.skipif(not rgcl_available(), reason="mmd.models.rgcl (FeatureHead, fit_head) is not there yet")


# --------------------------------------------------------------------------- config
def test_config_is_strict_frozen_and_torch_free():
    cfg = LMMConfig()
    assert cfg.model == "Qwen/Qwen2-VL-2B-Instruct" and cfg.recipe == "rgcl" and cfg.lora.r == 128
    assert cfg.lora.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj") and cfg.head.hidden == 1024
    with pytest.raises(ValidationError):
        LMMConfig(unknown=1)
    with pytest.raises(ValidationError):
        LMMConfig(recipe="zero_shot")
    with pytest.raises(ValidationError):
        cfg.lr = 1.0
    code = "import sys, mmd.models.lmm, mmd.models.lmm.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- batches
def test_lm_labels_mask_everything_but_the_answer(pictures):
    _, processor = tiny_qwen2_vl()
    enc = ItemEncoder(processor, tiny_cfg())
    images = [Image.open(pictures[0]).convert("RGB"), None, Image.open(pictures[2]).convert("RGB")]
    batch = enc.batch(["hate fake news", "love real cat " * 3, ""], images, [1, 0, 1])
    ids, labels, mask = batch.inputs["input_ids"], batch.labels, batch.inputs["attention_mask"]
    assert "pixel_values" in batch.inputs and batch.inputs["image_grid_thw"].shape == (2, 3)
    for b, y in enumerate([1, 0, 1]):
        answer = enc.answers[y]
        start = int(batch.last_prompt[b]) + 1
        kept = torch.nonzero(labels[b] != IGNORE).flatten().tolist()
        assert kept == list(range(start, start + len(answer)))      # the answer and nothing else
        assert labels[b, kept].tolist() == ids[b, kept].tolist() == answer
        assert answer[0] == (enc.yes_id if y else enc.no_id)
        assert mask[b, : start + len(answer)].all() and not mask[b, start + len(answer):].any()
    # the prompt of a picture item holds its image tokens; the text-only one none
    image_id = processor.image_token_id
    assert (ids[0] == image_id).sum() > 0 and (ids[1] == image_id).sum() == 0
    # without labels nothing is appended and nothing is a target
    plain = enc.batch(["hate fake news"], [None])
    assert (plain.labels == IGNORE).all() and int(plain.last_prompt[0]) == plain.inputs["input_ids"].shape[1] - 1


def test_long_text_is_cut_to_max_length():
    _, processor = tiny_qwen2_vl()
    enc = ItemEncoder(processor, tiny_cfg(max_length=64))
    e = enc.encode("hate fake news " * 200, None, 1)
    assert e.prompt_len + len(e.answer) <= 64


# --------------------------------------------------------------------------- LoRA steps
def check_only_lora_and_head_change(detector, before_model, before_head):
    changed_lora = 0
    for name, p in detector.model.named_parameters():
        if "lora_" in name:
            changed_lora += not torch.equal(p, before_model[name])
        else:
            assert torch.equal(p, before_model[name]), f"base weight {name} changed"
            assert not p.requires_grad
    assert changed_lora > 0
    if before_head is not None:
        assert any(not torch.equal(p, before_head[n]) for n, p in detector.head.named_parameters())


def test_qwen2_vl_stage1_step_updates_only_lora_and_head(pictures):
    model, processor = tiny_qwen2_vl()
    cfg = tiny_cfg(grad_accum=2, batch_size=2)
    det = prepare(model, processor, cfg)
    train, val = make_items(4, 0, pictures), make_items(4, 1, pictures)
    parts = step_losses(det.model, det.head, det.encoder, train, [0, 1, 2], cfg)
    assert set(parts) == {"loss", "lm", "bce"} and all(math.isfinite(float(v.detach())) for v in parts.values())
    loss, lm, bce = (float(parts[k].detach()) for k in ("loss", "lm", "bce"))
    assert loss == pytest.approx(lm + cfg.bce_weight * bce, rel=1e-5)
    before, before_head = trained_copy(det.model), {n: p.detach().clone() for n, p in det.head.named_parameters()}
    history, best = fine_tune(det.model, det.head, det.encoder, train, val, cfg)
    assert best == 1 and history[0]["steps"] == 1            # 2 micro-batches, accumulated into one step
    assert all(math.isfinite(history[0][k]) for k in ("train_loss", "train_lm", "train_bce", "val_loss"))
    check_only_lora_and_head_change(det, before, before_head)


def test_llava_takes_a_lora_step_on_the_language_model_only(pictures):
    model, processor = tiny_llava()
    cfg = tiny_cfg()
    det = prepare(model, processor, cfg)
    lora_names = [n for n, _ in det.model.named_parameters() if "lora_" in n]
    assert lora_names and all("language_model" in n for n in lora_names)   # the CLIP tower has q_proj too: untouched
    before, before_head = trained_copy(det.model), {n: p.detach().clone() for n, p in det.head.named_parameters()}
    train, val = make_items(4, 0, pictures), make_items(4, 1, pictures)
    history, _ = fine_tune(det.model, det.head, det.encoder, train, val, cfg)
    assert math.isfinite(history[0]["train_loss"])
    check_only_lora_and_head_change(det, before, before_head)
    p = det.predict_items(make_items(3, 2, pictures))
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()


# --------------------------------------------------------------------------- yes / no
def test_yes_no_scores_are_probabilities_and_training_lowers_the_loss(pictures):
    model, processor = tiny_qwen2_vl()
    cfg = tiny_cfg(recipe="yes_no", stage1_epochs=3, lr=2e-2)
    det = prepare(model, processor, cfg)
    assert det.head is None and det.scorer == "p_yes"
    items = make_items(4, 0, pictures)
    p = det.predict_items(items)
    assert p.shape == (4,) and ((p >= 0) & (p <= 1)).all()
    with torch.no_grad():
        before = float(step_losses(det.model, None, det.encoder, items, [0, 1, 2, 3], cfg)["loss"])
    history, _ = fine_tune(det.model, None, det.encoder, items, items, cfg)
    assert [h["steps"] for h in history] == [1, 1, 1] and "train_bce" not in history[0]   # LM loss only
    with torch.no_grad():
        after = float(step_losses(det.model, None, det.encoder, items, [0, 1, 2, 3], cfg)["loss"])
    assert after < before - 0.05
    p = det.predict_items(items)
    assert ((p >= 0) & (p <= 1)).all()


# --------------------------------------------------------------------------- saving, reloading, stage 2
@pytest.fixture
def tiny_base(tmp_path) -> Path:
    """The tiny Qwen2-VL saved as a local model folder (what `lmm.model` would name)."""
    model, processor = tiny_qwen2_vl()
    folder = tmp_path / "tiny-qwen2-vl"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_adapter_and_heads_reload_to_identical_scores(tmp_path, tiny_base, pictures):
    stage2 = 2 if rgcl_available() else 0
    cfg = tiny_cfg(model=str(tiny_base), stage2_epochs=stage2)
    model, processor = load_lmm(cfg)
    splits = {"train": make_items(8, 0, pictures), "val": make_items(4, 1, pictures),
              "test": make_items(4, 2, pictures)}
    rgcl_cfg = None
    if stage2:
        from mmd.models.rgcl.config import RGCLConfig

        rgcl_cfg = RGCLConfig(map_dim=16, batch_size=4)
    trained = train_detector(model, processor, splits, cfg, rgcl_cfg)
    save_detector(tmp_path / "lmm", trained)                # an older model there is replaced whole
    folder = save_detector(tmp_path / "lmm", trained, base_path=str(tiny_base))
    for name in ("adapter_model.safetensors", "adapter_config.json", "head.safetensors", "config.json", "metrics.json"):
        assert (folder / name).exists(), name
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt")) and not list(folder.glob("*.pkl"))
    reloaded = load_lmm_detector(folder, device="cpu")
    assert reloaded.scorer == trained.detector.scorer
    test = splits["test"]
    want, got = trained.detector.scores(trained.detector.infer(test)), reloaded.scores(reloaded.infer(test))
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], atol=1e-5, err_msg=name)
    one = reloaded.predict([test.texts[1]], [test.images[1]])   # texts and picture files, one item alone
    np.testing.assert_allclose(one, want[reloaded.scorer][1:2], atol=1e-5)


@needs_rgcl
def test_stage2_fits_the_rgcl_head_on_last_prompt_token_features(pictures, monkeypatch):
    import mmd.models.rgcl.fit as rgcl_train
    from mmd.models.rgcl.config import RGCLConfig

    seen = {}
    real_fit = rgcl_train.fit_head

    def spy(head, train_inputs, train_labels, val_inputs, val_labels, cfg, seed=0, log=None):
        seen.update(train=tuple(train_inputs[0].shape), val=tuple(val_inputs[0].shape), epochs=cfg.epochs)
        return real_fit(head, train_inputs, train_labels, val_inputs, val_labels, cfg, seed=seed, log=log)

    monkeypatch.setattr(rgcl_train, "fit_head", spy)
    model, processor = tiny_qwen2_vl()
    cfg = tiny_cfg(stage2_epochs=2)
    splits = {"train": make_items(8, 0, pictures), "val": make_items(4, 1, pictures), "test": None}
    trained = train_detector(model, processor, splits, cfg, RGCLConfig(map_dim=16, batch_size=4, rkc={"k": 3}))
    det = trained.detector
    assert seen == {"train": (8, 32), "val": (4, 32), "epochs": 2}     # hidden size 32, no answer appended
    assert det.infer(splits["val"]).features.shape == (4, 32)
    g, y = det.database
    assert g.shape == (8, 16) and y.tolist() == splits["train"].labels.tolist()
    assert det.scorer == "rkc" and set(trained.metrics["scorers"]) == {"p_yes", "head", "rgcl_head", "rkc"}
    assert trained.best_epochs["rgcl"] >= 1 and any(h["stage"] == "rgcl" for h in trained.history)
    p = det.predict_items(splits["val"])
    assert ((p >= 0) & (p <= 1)).all()


# --------------------------------------------------------------------------- the stage
def write_project(settings, pictures: list[Path]) -> None:
    """Validated labelled items (train / val / test splits) with pictures under the data folder."""
    data = settings.data_dir
    (data / "images").mkdir(parents=True)
    rows = []
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        for k in range(n):
            y = k % 2
            rel = None
            if k % 3:
                rel = f"images/{split}-{k}.png"
                Image.open(pictures[k % len(pictures)]).save(data / rel)
            rows.append({name: None for name in ITEM_SCHEMA.names} | {
                "id": f"{split}-{k}", "source": "demo", "kind": "meme", "text": "hate fake" if y else "love real",
                "image_path": rel, "image_sha256": f"{split}-{k}" if rel else None, "label": y, "split": split})
    write_table(pa.Table.from_pylist(rows, schema=ITEM_SCHEMA), data / "validated" / "items.parquet")


def test_run_train_lmm_writes_the_model_and_the_report(make_settings, tiny_base, pictures):
    settings = make_settings(train={"synthetic": False})
    write_project(settings, pictures)
    cfg = tiny_cfg(model=str(tiny_base))
    report = run_train_lmm(settings, cfg=cfg)
    folder = settings.data_dir / "models" / "lmm"
    assert (folder / "adapter_model.safetensors").exists() and (folder / "head.safetensors").exists()
    assert (settings.reports_dir / "train_lmm.json").exists()
    assert report["data"]["train"]["items"] == 8 and report["data"]["train"]["with_image"] == 5
    assert report["serves"] == "head" and set(report["val"]["head"]) >= {"auroc", "accuracy", "macro_f1"}
    assert report["test"]["head"]["n"] == 4 and report["best_epochs"]["lmm"] == 1
    # `mmd predict --model lmm` reads the texts and pictures itself (no encoder features)
    from mmd.models.predict import run_predict

    predicted = run_predict(settings, "lmm")
    assert predicted.items == 16 and predicted.metrics is not None
    scores = pq.read_table(predicted.output).to_pandas()
    assert scores.score.between(0, 1).all() and scores.has_image.sum() == 9


# --------------------------------------------------------------------------- unavailable models
def test_a_missing_model_fails_fast_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("mmd-test/no-such-vlm-anywhere", str(tmp_path / "no-such-folder")):
        started = time.perf_counter()
        with pytest.raises(LMMUnavailable, match="lmm.model"):
            load_lmm(LMMConfig(model=name))
        assert time.perf_counter() - started < 5


def test_train_lmm_without_the_weights_exits_2_naming_the_setting(make_settings):
    from typer.testing import CliRunner

    from mmd.cli import app

    settings = make_settings(lmm={"model": "nowhere/no-such-model"})
    result = CliRunner().invoke(app, ["train", "--model", "lmm", "--params", str(settings.params_file)])
    assert result.exit_code == 2 and "lmm.model" in result.output
