"""Tiny random vision-language models, for tests and benchmarks only (nothing downloaded).

`tiny_qwen2_vl()` and `tiny_llava()` return (model, processor) pairs of the real transformers
classes at toy sizes, with random weights and a byte-level BPE tokenizer trained in memory
on a few sentences (so every string tokenises, and "yes" / "no" are single tokens). Their
predictions mean nothing; they exercise every code path in seconds on a CPU.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

CORPUS = (
    "Is this meme hateful or is this post misinformation? Answer yes or no.",
    "Text on the meme / post: yes no yes no",
    "\nyes\nno\nyes\nno",
    "system user assistant You are a helpful assistant.",
    "USER: ASSISTANT: the a this that is are was cat dog hate love news fake real",
)
QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>")
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAVA_SPECIAL = ("<pad>", "<s>", "</s>", "<image>")
LLAVA_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: {% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} {% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def tiny_tokenizer(special: Sequence[str], vocab_size: int = 400, corpus: Sequence[str] = (), **tokens: str) -> Any:
    """A byte-level BPE tokenizer trained on CORPUS (+ `corpus`), with `special` as special tokens;
    `tokens` names the eos / pad / bos ones (e.g. eos_token="<|im_end|>")."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator((list(CORPUS) + list(corpus)) * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **tokens)


def _seeded(seed: int, build) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def qwen2_vl_processor(patch_size: int = 14, merge_size: int = 2, min_pixels: int = 56 * 56,
                       max_pixels: int = 28 * 28 * 1280, vocab_size: int = 400, corpus: Sequence[str] = ()) -> Any:
    """A Qwen2VLProcessor with a tiny tokenizer (trained on CORPUS + `corpus`) and Qwen2-VL's special
    tokens and chat layout; the picture settings default to Qwen2-VL's own."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    tok = tiny_tokenizer(QWEN_SPECIAL, vocab_size, corpus, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    pixels = dict(patch_size=patch_size, merge_size=merge_size, temporal_patch_size=2, min_pixels=min_pixels,
                  max_pixels=max_pixels)
    return Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels), tokenizer=tok,
                            video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=QWEN_TEMPLATE)


def qwen2_vl_token_ids(processor: Any) -> dict[str, int]:
    """The Qwen2VLConfig token-id fields for `processor`'s tokenizer (pad, eos, image, video, vision start / end)."""
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    return {"image_token_id": ids["<|image_pad|>"], "video_token_id": ids["<|video_pad|>"],
            "vision_start_token_id": ids["<|vision_start|>"], "vision_end_token_id": ids["<|vision_end|>"],
            "eos_token_id": ids["<|im_end|>"], "pad_token_id": ids["<|endoftext|>"]}


def tiny_qwen2_vl(seed: int = 0, hidden: int = 32, layers: int = 2) -> tuple[nn.Module, Any]:
    """Qwen2VLForConditionalGeneration at toy size: text hidden 32, 2 layers, 2 heads (head dim 16,
    M-RoPE sections 2/3/3), 1 KV head; vision depth 1, embed 32, 4-pixel patches merged 2x2;
    pictures resized to 8..32 px a side (at most 4 image tokens)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    processor = qwen2_vl_processor(patch_size=4, merge_size=2, min_pixels=8 * 8, max_pixels=32 * 32)
    ids = qwen2_vl_token_ids(processor)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(processor.tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=max(1, hidden // 16), num_key_value_heads=1,
                         max_position_embeddings=1024, bos_token_id=None, eos_token_id=ids["eos_token_id"],
                         pad_token_id=ids["pad_token_id"],
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=hidden, num_heads=2, mlp_ratio=2, patch_size=4,
                           spatial_merge_size=2, temporal_patch_size=2),
        **{k: v for k, v in ids.items() if k.startswith(("image", "video", "vision"))})
    return _seeded(seed, lambda: Qwen2VLForConditionalGeneration(config)), processor


def tiny_llava(seed: int = 0) -> tuple[nn.Module, Any]:
    """LlavaForConditionalGeneration at toy size: a CLIP vision tower (16 px pictures, 4 px patches,
    1 layer, width 32) and a Llama language model (width 32, 2 layers, 2 heads, 1 KV head)."""
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaProcessor)

    tok = tiny_tokenizer(LLAVA_SPECIAL, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    processor = LlavaProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16},
                                                                  crop_size={"height": 16, "width": 16}),
                               tokenizer=tok, patch_size=4, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=16, patch_size=4),
        text_config=LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                                eos_token_id=tok.eos_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-1, projector_hidden_act="gelu")
    return _seeded(seed, lambda: LlavaForConditionalGeneration(config)), processor
