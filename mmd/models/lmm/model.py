"""Load a vision-language model, turn items into batches, and the pieces every recipe shares.

- `load_lmm(cfg)`: processor + `AutoModelForImageTextToText` from a local folder or a hub id in
  the local cache; anything else fails at once with `LMMUnavailable` (never a hang offline).
- `ItemEncoder`: an item (text, optional picture, optional label) -> a chat prompt with the
  picture and the question, the answer "yes" / "no" appended when training; a list of those
  -> one right-padded `Batch` with LM labels that are -100 everywhere but on the answer.
- `forward_hidden`, `answer_lm_loss`, `yes_no_logit`: one forward pass gives the last layer's
  hidden states; the LM loss and the yes/no logit only project the positions they need onto
  the vocabulary (no full-sequence logits).
- `ClassifierHead`: the stage-1 MLP on the last prompt token's hidden state.
- `add_lora`: peft LoRA on the language model only (never the vision tower).

Works with any processor + model pair that follows transformers' image-text-to-text
conventions (Qwen2-VL, LLaVA, ...): sequence tensors are padded, every other processor output
(pixel values, grids) is concatenated along its first axis over the items that have a picture.
"""

from __future__ import annotations

import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from mmd.encoders.base import select_device
from mmd.models.lmm.config import HeadParams, LMMConfig, LoRAParams

IGNORE = -100
ANSWERS = ("no", "yes")  # the answer for label 0, label 1
TEXT_PREFIX = "Text on the meme / post: "
# processor outputs with one entry per token: padded to the batch's longest sequence
SEQUENCE_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


class LMMUnavailable(RuntimeError):
    """The configured model cannot be loaded here (not a local folder, not in the hub cache offline, broken files)."""


# --------------------------------------------------------------------------- devices and dtypes
def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on CUDA, float32 elsewhere."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


# --------------------------------------------------------------------------- loading
def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """Whether downloads are off (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set), read from the environment now."""
    return _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE"))


FILES_NEEDED = "config.json, the weights, and the processor and tokenizer files"


def _download_hint(name: str) -> str:
    return (f"set `lmm.model` in params.yaml to a local folder with the model's files ({FILES_NEEDED}), e.g. one "
            f"made on a machine with internet by `hf download {name} --local-dir <folder>` and copied here "
            f"(or a Hugging Face cache that holds it, via HF_HOME)")


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an id the hub would refuse (bad characters): certainly not cached
        return False


def locate_model(name: str, root: Path | None = None) -> tuple[str, bool]:
    """Where `lmm.model` is: (what to give from_pretrained, local files only). A relative path is
    looked up under `root` (the params file's folder) first. Raises LMMUnavailable, without
    touching the network, when it is no folder and offline nothing cached holds it."""
    path = Path(name).expanduser()
    for candidate in ([root / path] if root is not None and not path.is_absolute() else []) + [path]:
        if candidate.is_dir():
            return str(candidate.resolve()), True
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name:
        raise LMMUnavailable(f"lmm.model = {name!r}: no such folder (a relative path is looked up under "
                             f"{root or Path.cwd()}); point `lmm.model` at a folder with the model's files "
                             f"({FILES_NEEDED}) or give a Hugging Face model id")
    if _in_hub_cache(name):
        return name, hub_offline()
    if hub_offline():
        raise LMMUnavailable(f"lmm.model = {name!r} is not a local folder nor in the Hugging Face cache, and "
                             f"HF_HUB_OFFLINE is set, so nothing can be downloaded: {_download_hint(name)}")
    return name, False


def load_lmm(cfg: LMMConfig, root: Path | None = None,
             device: torch.device | str | None = None) -> tuple[nn.Module, Any]:
    """(model, processor) for `cfg.model`, the model on `device` (cfg.device by default) in cfg.dtype, in eval mode."""
    source, local_only = locate_model(cfg.model, root)
    dev = select_device(cfg.device) if device is None else torch.device(device)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=resolve_dtype(cfg.dtype, dev),
                                                            local_files_only=local_only)
    except (OSError, ValueError, KeyError) as exc:
        raise LMMUnavailable(f"lmm.model = {cfg.model!r} could not be loaded ({type(exc).__name__}: {exc}); "
                             f"{_download_hint(cfg.model)}") from exc
    return model.to(dev).eval(), processor


# --------------------------------------------------------------------------- LoRA and the head
@contextmanager
def quiet_peft() -> Iterator[None]:
    """peft asks transformers v5 `is_gradient_checkpointing`, a name v5 deprecates: not our warning to show."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def lora_targets(model: nn.Module, names: Sequence[str]) -> list[str]:
    """Full names of the language model's modules whose last name part is one of `names`."""
    decoder = model.get_decoder()
    inside = {id(m) for m in decoder.modules()}
    wanted = set(names)
    return [n for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in wanted and id(m) in inside]


def add_lora(model: nn.Module, params: LoRAParams) -> nn.Module:
    """Wrap `model` in a peft LoRA model: adapters on the language model's target layers, every
    other weight frozen."""
    from peft import LoraConfig, get_peft_model

    targets = lora_targets(model, params.target_modules)
    if not targets:
        raise ValueError(f"lmm.lora.target_modules {list(params.target_modules)} match no layer of the language model")
    config = LoraConfig(r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout, target_modules=targets,
                        bias="none")
    with quiet_peft():
        return get_peft_model(model, config)


class ClassifierHead(nn.Module):
    """Stage 1's MLP on the last prompt token's hidden state: (B, in_dim) -> (B,) logits of label 1."""

    def __init__(self, in_dim: int, params: HeadParams = HeadParams()):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, params.hidden), nn.ReLU(), nn.Dropout(params.dropout),
                                 nn.Linear(params.hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.float()).squeeze(-1)


def hidden_size(model: nn.Module) -> int:
    """Width of the language model's hidden states (what the heads read)."""
    return int(model.get_output_embeddings().in_features)


# --------------------------------------------------------------------------- items -> batches
@dataclass
class Encoded:
    """One item through the processor: its prompt's tensors (batch axis 1), then the answer's token ids."""

    inputs: dict[str, torch.Tensor]
    prompt_len: int
    answer: list[int]


@dataclass
class Batch:
    """Model inputs for a batch, right-padded; `labels` is -100 except on the answer tokens;
    `last_prompt[b]` is the position of item b's last prompt token (what the heads read)."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    last_prompt: torch.Tensor

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> "Batch":
        """On `device`; floating inputs (pixel values) in `dtype` when given."""
        moved = {k: v.to(device, dtype=dtype if dtype is not None and v.is_floating_point() else None)
                 for k, v in self.inputs.items()}
        return Batch(moved, self.labels.to(device), self.last_prompt.to(device))


class ItemEncoder:
    """Prompts, answers and batches for one processor and one config."""

    def __init__(self, processor: Any, cfg: LMMConfig):
        self.processor, self.cfg = processor, cfg
        self.tokenizer = processor.tokenizer
        tok = self.tokenizer
        self.pad_id = next((i for i in (tok.pad_token_id, tok.eos_token_id) if i is not None), 0)
        # the answer follows the prompt's end: no space after a newline or a space, one otherwise
        self.separator = "" if self.prompt("", False)[-1:].isspace() else " "
        self.answers = [self._answer_ids(word) for word in ANSWERS]
        self.no_id, self.yes_id = (ids[0] for ids in self.answers)
        if self.no_id == self.yes_id:
            raise ValueError(f"the tokenizer starts {ANSWERS} with the same token: the yes/no score needs them apart")

    def _answer_ids(self, word: str) -> list[int]:
        ids = self.tokenizer(self.separator + word, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        return list(ids) + ([eos] if eos is not None else [])

    def prompt(self, text: str, has_image: bool) -> str:
        """The user turn (picture first, then the item's text and the question) up to where the answer starts."""
        body = f"{TEXT_PREFIX}{text}\n{self.cfg.prompt}"
        content = ([{"type": "image"}] if has_image else []) + [{"type": "text", "text": body}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=True, tokenize=False)
        image = f"{getattr(self.processor, 'image_token', '<image>')}\n" if has_image else ""
        return f"USER: {image}{body}\nASSISTANT:"

    def encode(self, text: str, image: Any | None, label: int | None = None) -> Encoded:
        """Process one item; the text is cut (whole tokens from its end) until prompt + answer fit max_length."""
        answer = self.answers[int(label)] if label is not None else []
        text = text or ""
        for attempt in range(4):  # decoding cut tokens can re-tokenise a little longer: check again
            inputs = self.processor(text=[self.prompt(text, image is not None)],
                                    images=[image] if image is not None else None, return_tensors="pt")
            n = int(inputs["input_ids"].shape[1])
            over = n + len(answer) - self.cfg.max_length
            if over <= 0 or not text or attempt == 3:
                break
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            text = self.tokenizer.decode(ids[: max(0, len(ids) - over - 2 * attempt)])
        if over > 0:
            raise ValueError(f"an item takes {n + len(answer)} tokens with its text cut, more than lmm.max_length = "
                             f"{self.cfg.max_length}: raise lmm.max_length or lower lmm.image_size")
        return Encoded(dict(inputs), n, answer)

    def collate(self, items: Sequence[Encoded]) -> Batch:
        """Right-pad the prompt + answer sequences; concatenate the picture tensors of the items that have one."""
        lengths = [e.prompt_len + len(e.answer) for e in items]
        width = max(lengths)
        seq: dict[str, list[torch.Tensor]] = {}
        other: dict[str, list[torch.Tensor]] = {}
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        for b, e in enumerate(items):
            answer = torch.tensor(e.answer, dtype=torch.long)
            labels[b, e.prompt_len : lengths[b]] = answer
            for key, value in e.inputs.items():
                if key in SEQUENCE_KEYS:
                    row = value[0]
                    if key == "input_ids":
                        row = torch.cat([row, answer.to(row.dtype)])
                    elif key == "attention_mask":
                        row = torch.cat([row, torch.ones(len(e.answer), dtype=row.dtype)])
                    else:  # token types: the answer is text
                        row = torch.cat([row, torch.zeros(len(e.answer), dtype=row.dtype)])
                    fill = self.pad_id if key == "input_ids" else 0
                    seq.setdefault(key, []).append(F.pad(row, (0, width - len(row)), value=fill))
                elif isinstance(value, torch.Tensor):
                    other.setdefault(key, []).append(value)
        inputs = {k: torch.stack(v) for k, v in seq.items()} | {k: torch.cat(v) for k, v in other.items()}
        last = torch.tensor([e.prompt_len - 1 for e in items], dtype=torch.long)
        return Batch(inputs, labels, last)

    def batch(self, texts: Sequence[str], images: Sequence[Any | None], labels: Sequence[int] | None = None) -> Batch:
        """Encode and collate; with `labels`, each item's answer is appended (training)."""
        labels = labels if labels is not None else [None] * len(texts)
        return self.collate([self.encode(t, i, y) for t, i, y in zip(texts, images, labels)])


# --------------------------------------------------------------------------- forward passes
def forward_hidden(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The last layer's hidden states (B, S, H), after the final norm; no full-sequence logits."""
    out = model(**batch.inputs, output_hidden_states=True, logits_to_keep=1, use_cache=False)
    return out.hidden_states[-1]


def last_prompt_states(hidden: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(B, H): each item's hidden state at its last prompt token."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), batch.last_prompt]


def answer_lm_loss(model: nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the answer tokens (positions t-1 predict labels[t])."""
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, target[keep])


def yes_no_logit(model: nn.Module, states: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """(B,) logit(yes) - logit(no) of the next token after the prompt: sigmoid of it is
    softmax([yes, no])[yes] = P(yes)."""
    head = model.get_output_embeddings()
    weight = head.weight[[yes_id, no_id]]
    pair = states.to(weight.dtype) @ weight.T
    if getattr(head, "bias", None) is not None:
        pair = pair + head.bias[[yes_id, no_id]]
    pair = pair.float()
    return pair[:, 0] - pair[:, 1]
