"""What every generated architecture shares: a decoder's dimensions, as HF configs name them."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class Dimensions:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int


def dimensions(shape, *more: str) -> dict:
    """The config entries of ``Dimensions``' fields and of the ``more`` named ones, read off ``shape``."""
    return {name: getattr(shape, name) for name in (*(f.name for f in fields(Dimensions)), *more)}


def special_tokens(eos_id: int, pad_id: int) -> dict:
    """The config entries for the tokenizer's special ids (bos is the pad token: the synthetic
    tokenizers have no separate one) and the weights' dtype."""
    return {"use_cache": True, "bos_token_id": pad_id, "eos_token_id": eos_id, "pad_token_id": pad_id,
            "torch_dtype": "bfloat16", "dtype": "bfloat16"}
