"""LMM-RGCL stage 1 cost: one LoRA step (LM loss on the answer + BCE of the head) of a vision-language model.

By default the model is the Qwen2-VL-2B-Instruct architecture with RANDOM weights (nothing is
downloaded): its config is written out below from the published values (text: hidden 1536, 28
layers, 12 heads, 2 KV heads, MLP 8960, vocabulary 151936, M-RoPE sections 16/24/24; vision:
depth 32, width 1280, 16 heads, MLP ratio 4, 14 px patches merged 2x2 into the 1536-wide
text space). The step is the same code `mmd train --model lmm` runs (mmd.models.lmm: LoRA on
the language model's q/k/v/o projections, activation checkpointing, the MLP head); the batch
is `batch_size` items, each a random picture of `image_size` px a side (Qwen2-VL's processor
settings: 448 px -> 256 image tokens) and a few dozen words of text, tokenised by a small
byte-level tokenizer (Qwen's own cannot be downloaded here; only the text-token count differs).

Measured: seconds per step (median of --steps after --warmup; forward + backward + AdamW on
pre-built batches), peak GPU memory (torch.cuda.max_memory_allocated over the timed steps),
tokens per second (the batch's non-padding tokens / step time), and the CPU time to turn a
batch of items into model inputs (processor + collation) beside it.

    python benchmarks/bench_lmm.py                  # the 2B architecture on the GPU -> benchmarks/results/lmm.json
    python benchmarks/bench_lmm.py --tiny           # the tiny test model on the CPU -> benchmarks/results/lmm-tiny.json
    python benchmarks/bench_lmm.py --model <folder> # a real local model (its weights, processor and tokenizer)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmd.items import now_iso  # noqa: E402
from mmd.models.lmm.config import HeadParams, LMMConfig, LoRAParams  # noqa: E402
from mmd.models.lmm.model import load_lmm, resolve_dtype, select_device  # noqa: E402
from mmd.models.lmm.fit import batch_losses, prepare  # noqa: E402
from mmd.models.lmm.items import Items  # noqa: E402
from mmd.models.lmm.predictor import encode_batch, model_device_dtype  # noqa: E402
from mmd.util import write_json  # noqa: E402

# Qwen2-VL-2B-Instruct's config.json, by hand (transformers 5 field names)
QWEN2_VL_2B_TEXT = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                        num_attention_heads=12, num_key_value_heads=2, hidden_act="silu", max_position_embeddings=32768,
                        rms_norm_eps=1e-6, use_sliding_window=False, max_window_layers=28, attention_dropout=0.0,
                        rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1e6})
QWEN2_VL_2B_VISION = dict(depth=32, embed_dim=1280, hidden_size=1536, hidden_act="quick_gelu", mlp_ratio=4,
                          num_heads=16, in_channels=3, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
WORDS = ("the a this that meme post claim photo shows people city news fake real love hate cat dog when you "
         "they said today video after before government election vaccine flood fire police").split()


def qwen2_vl_2b(device: torch.device, dtype: torch.dtype):
    """The Qwen2-VL-2B architecture with random weights, built on `device` in `dtype`, and a processor
    with Qwen2-VL's picture settings (special-token ids from the small stand-in tokenizer)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from mmd.models.lmm.tiny import qwen2_vl_processor, qwen2_vl_token_ids

    # patch 14, merge 2, Qwen2-VL's min / max pixels; the words the items use are whole tokens, as in Qwen's vocabulary
    processor = qwen2_vl_processor(vocab_size=2000, corpus=[" ".join(WORDS)] * 8)
    ids = qwen2_vl_token_ids(processor)
    text = dict(QWEN2_VL_2B_TEXT, bos_token_id=None, eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"])
    config = Qwen2VLConfig(text_config=text, vision_config=dict(QWEN2_VL_2B_VISION), tie_word_embeddings=True,
                           **{k: v for k, v in ids.items() if k.startswith(("image", "video", "vision"))})
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype)
    return model.eval(), processor, config


def make_items(n: int, image_size: int, words: int, folder: Path, seed: int = 0) -> Items:
    """n items: a random-noise picture of image_size px a side and `words` random words each; labels alternate."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths, texts = [], []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
        texts.append(" ".join(rng.choice(WORDS, words)))
    return Items([str(i) for i in range(n)], texts, paths, np.arange(n) % 2)


def cpu_name() -> str:
    """The CPU's model name (Linux), else what platform knows, with the threads torch uses."""
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name} ({torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="the tiny test model on the CPU (a smoke check)")
    ap.add_argument("--model", help="a local model folder instead of the random 2B architecture")
    ap.add_argument("--batch-size", type=int, default=LMMConfig().batch_size)
    ap.add_argument("--image-size", type=int, default=LMMConfig().image_size)
    ap.add_argument("--words", type=int, default=40, help="words of text per item")
    ap.add_argument("--lora-r", type=int, default=LMMConfig().lora.r)
    ap.add_argument("--no-checkpointing", action="store_true", help="turn activation checkpointing off")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    device = select_device("cpu" if args.tiny and args.device == "auto" else args.device)
    if not args.tiny and device.type != "cuda":
        print("the full-size benchmark needs a CUDA device (use --tiny for the CPU smoke check)", file=sys.stderr)
        return 2
    dtype = resolve_dtype(args.dtype, device)
    defaults = LMMConfig()
    cfg = LMMConfig(model=args.model or ("tiny-qwen2-vl" if args.tiny else "qwen2-vl-2b-architecture"),
                    batch_size=args.batch_size, grad_accum=1, image_size=args.image_size, dtype=args.dtype,
                    gradient_checkpointing=not args.no_checkpointing, device=str(device),
                    lora=LoRAParams(r=4, alpha=8) if args.tiny else LoRAParams(r=args.lora_r, alpha=2 * args.lora_r),
                    head=defaults.head if not args.tiny else HeadParams(hidden=16),
                    max_length=max(defaults.max_length, 64 + args.words * 4 + (args.image_size // 28) ** 2))
    started = time.perf_counter()
    if args.model:
        model, processor = load_lmm(cfg)
        arch = model.config.to_dict()
    elif args.tiny:
        from mmd.models.lmm.tiny import tiny_qwen2_vl

        model, processor = tiny_qwen2_vl()
        model = model.to(device=device, dtype=dtype)
        arch = model.config.to_dict()
    else:
        model, processor, config = qwen2_vl_2b(device, dtype)
        arch = {"text_config": QWEN2_VL_2B_TEXT, "vision_config": QWEN2_VL_2B_VISION, "tie_word_embeddings": True}
    build_s = time.perf_counter() - started
    det = prepare(model, processor, cfg)
    total = sum(p.numel() for p in det.model.parameters()) + sum(p.numel() for p in det.head.parameters())
    trainable = [p for p in det.model.parameters() if p.requires_grad] + list(det.head.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in det.model.parameters() if p.requires_grad], "lr": cfg.lr},
                             {"params": list(det.head.parameters()), "lr": cfg.head_lr}], weight_decay=0.0)
    dev, model_dtype = model_device_dtype(det.model)

    with tempfile.TemporaryDirectory() as tmp:
        items = make_items(cfg.batch_size * (args.warmup + args.steps), cfg.image_size, args.words, Path(tmp))
        encode_s, batches = [], []
        for s in range(args.warmup + args.steps):
            idx = list(range(s * cfg.batch_size, (s + 1) * cfg.batch_size))
            t = time.perf_counter()
            batch = encode_batch(det.encoder, items, idx, True, dev, model_dtype)
            encode_s.append(time.perf_counter() - t)
            batches.append((batch, torch.as_tensor(items.labels[idx], device=dev)))

    def step(batch, y) -> float:
        det.model.train()
        det.head.train()
        opt.zero_grad(set_to_none=True)
        loss = batch_losses(det.model, det.head, batch, y, cfg)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        return float(loss.detach())

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for batch, y in batches[: args.warmup]:
        step(batch, y)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times, losses, tokens, image_tokens = [], [], [], []
    for batch, y in batches[args.warmup :]:
        t = time.perf_counter()
        losses.append(step(batch, y))
        sync()
        times.append(time.perf_counter() - t)
        tokens.append(int(batch.inputs["attention_mask"].sum()))
        image_id = getattr(processor, "image_token_id", None)
        image_tokens.append(int((batch.inputs["input_ids"] == image_id).sum()) if image_id is not None else 0)
    step_s = statistics.median(times)
    figures = {
        "step_s_median": round(step_s, 4),
        "step_s": [round(t, 4) for t in times],
        "items_per_s": round(cfg.batch_size / step_s, 3),
        "tokens_per_step": statistics.median(tokens),
        "image_tokens_per_step": statistics.median(image_tokens),
        "tokens_per_s": round(statistics.median(tokens) / step_s, 1),
        "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 3) if dev.type == "cuda" else None,
        "encode_s_per_batch": round(statistics.median(encode_s), 4),
        "losses": [round(x, 4) for x in losses],
        "parameters": total,
        "trainable_parameters": sum(p.numel() for p in trainable),
        "build_s": round(build_s, 2),
    }
    result = {
        "when": now_iso(),
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "model": "tiny Qwen2-VL (random)" if args.tiny else args.model or "Qwen2-VL-2B-Instruct architecture (random)",
        "dtype": str(model_dtype).replace("torch.", ""),
        "lmm": cfg.model_dump(mode="json"),
        "architecture": arch if not args.tiny else {"text_hidden": arch["text_config"]["hidden_size"]},
        "figures": figures,
    }
    out = args.out or REPO / "benchmarks" / "results" / ("lmm-tiny.json" if args.tiny else "lmm.json")
    write_json(out, result)
    print(f"{result['model']} on {result['device']}: {step_s:.3f} s/step (batch {cfg.batch_size}, "
          f"{figures['tokens_per_step']} tokens), {figures['tokens_per_s']} tokens/s, "
          f"peak {figures['peak_gpu_memory_gib']} GiB -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
