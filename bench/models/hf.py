"""Zoo family: small Hugging Face transformers built from a config, offline (no download).

``transformers`` is an optional extra (``pip install '.[hf]'``), imported only when a factory is
called. torch.fx cannot trace these models; the compiler captures them with torch.export
(``frontend="auto"`` falls back to it). They take keyword inputs: `hf_example_kwargs` builds them.
"""
from __future__ import annotations

import torch
from torch import nn

HF_INPUT = {"hf_bert": (2, 8), "hf_gpt2": (2, 8), "hf_vit": (2, 3, 32, 32)}


def _transformers():
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the Hugging Face zoo models need transformers: "
                          "pip install '.[hf]'") from exc
    return transformers


def hf_bert(num_classes: int = 2, hidden_size: int = 64, layers: int = 2, heads: int = 4,
            intermediate_size: int = 128, vocab_size: int = 100) -> nn.Module:
    """BertForSequenceClassification (post-LayerNorm encoder, pooler, classifier)."""
    t = _transformers()
    return t.BertForSequenceClassification(t.BertConfig(
        hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate_size, vocab_size=vocab_size, num_labels=num_classes))


def hf_gpt2(num_classes: int = 100, hidden_size: int = 64, layers: int = 2,
            heads: int = 4) -> nn.Module:
    """GPT2LMHeadModel (Conv1D projections, fused QKV, causal mask); ``num_classes`` is the
    vocabulary size."""
    t = _transformers()
    return t.GPT2LMHeadModel(t.GPT2Config(
        n_embd=hidden_size, n_layer=layers, n_head=heads, n_positions=32, vocab_size=num_classes,
        bos_token_id=0, eos_token_id=0, use_cache=False))


def hf_vit(num_classes: int = 10, hidden_size: int = 64, layers: int = 2, heads: int = 4,
           intermediate_size: int = 128) -> nn.Module:
    """ViTForImageClassification for 32x32 images, 8x8 patches."""
    t = _transformers()
    return t.ViTForImageClassification(t.ViTConfig(
        hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=intermediate_size, image_size=32, patch_size=8, num_labels=num_classes))


def hf_example_kwargs(name: str, seed: int = 0, vocab_size: int = 10) -> dict[str, torch.Tensor]:
    """Keyword inputs for the zoo model `name` (token ids below `vocab_size`)."""
    gen = torch.Generator().manual_seed(seed)
    shape = HF_INPUT[name]
    if name == "hf_vit":
        return {"pixel_values": torch.randn(shape, generator=gen)}
    return {"input_ids": torch.randint(0, vocab_size, shape, generator=gen),
            "attention_mask": torch.ones(shape, dtype=torch.long)}
