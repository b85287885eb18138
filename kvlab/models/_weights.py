"""Seeded random weights written as safetensors, without torch.

The safetensors format is an 8-byte header length, a JSON header and raw little-endian bytes, so
NumPy is enough; bfloat16 is float32 with the low 16 bits rounded away.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + (0x7FFF + ((u >> 16) & 1))
    return (rounded >> 16).astype(np.uint16)


def qwen2_tensors(cfg: dict) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of every Qwen2ForCausalLM weight; init is 'normal', 'ones', 'zeros', 'bias'
    or a float (normal, std scaled by it)."""
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    hd = cfg["head_dim"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    out = [("model.embed_tokens.weight", (cfg["vocab_size"], h), "normal")]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,), "ones"),
            (p + "self_attn.q_proj.weight", (q, h), "normal"),
            (p + "self_attn.q_proj.bias", (q,), "bias"),
            (p + "self_attn.k_proj.weight", (kv, h), "normal"),
            (p + "self_attn.k_proj.bias", (kv,), "bias"),
            (p + "self_attn.v_proj.weight", (kv, h), "normal"),
            (p + "self_attn.v_proj.bias", (kv,), "bias"),
            (p + "self_attn.o_proj.weight", (h, q), "normal"),
            (p + "post_attention_layernorm.weight", (h,), "ones"),
            (p + "mlp.gate_proj.weight", (inter, h), "normal"),
            (p + "mlp.up_proj.weight", (inter, h), "normal"),
            (p + "mlp.down_proj.weight", (h, inter), "normal"),
        ]
    out.append(("model.norm.weight", (h,), "ones"))
    if not cfg.get("tie_word_embeddings", False):
        out.append(("lm_head.weight", (cfg["vocab_size"], h), "normal"))
    return out


def write_random_safetensors(path: Path, tensors: list[tuple[str, tuple[int, ...], str]], seed: int,
                             std: float) -> int:
    """Write bf16 tensors drawn from one seeded generator, in the listed order; returns bytes of data."""
    rng = np.random.Generator(np.random.PCG64(seed))
    header, offset = {"__metadata__": {"format": "pt", "generator": "kvlab.models.synthetic"}}, 0
    for name, shape, _ in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned, as the reference writer does
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, shape, init in tensors:
            if init == "ones":
                x = np.ones(shape, dtype=np.float32)
            elif init == "zeros":  # Gemma's norms scale by 1 + weight
                x = np.zeros(shape, dtype=np.float32)
            elif isinstance(init, float):  # normal, with the std scaled by this factor
                x = rng.standard_normal(shape, dtype=np.float32) * np.float32(std * init)
            else:
                x = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
            to_bf16_bits(x).tofile(f)
    return offset
