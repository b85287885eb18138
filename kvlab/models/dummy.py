"""Config-and-tokenizer-only models for vLLM's ``--load-format dummy``: real shapes, no weights on disk.

>>> from kvlab.models.dummy import dummy_model
>>> path = dummy_model("llama-3.1-8b")   # config.json + a locally trained 128256-token tokenizer
>>> Server(path, load_format="dummy")     # vLLM fills the weights with seeded random values

An 8B model's 16 GB of weights never touch the disk, so GPU benchmarks of 8B-shaped serving start in
seconds from nothing. vLLM's dummy initialisation is seeded, so two engines over one directory compute
the same (gibberish) tokens. Cached like ``synthetic`` under ``$KVLAB_CACHE_DIR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from . import _tokenizer
from ._shapes import Dimensions
from .synthetic import _cache_root

_MARKER = "kvlab_dummy.json"


@dataclass(frozen=True)
class LlamaShape(Dimensions):
    head_dim: int
    max_position_embeddings: int = 131072
    rope_theta: float = 500_000.0
    llama3_rope: bool = True


SHAPES = {
    # meta-llama/Llama-3.1-8B's config.json: 128 KiB of bf16 KV per token.
    "llama-3.1-8b": LlamaShape(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                               num_key_value_heads=8, vocab_size=128256, head_dim=128),
    # For CPU runs of the same harness: head_dim 64 (vLLM's CPU attention takes it), 4 layers.
    "tiny": LlamaShape(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=4096, head_dim=64, max_position_embeddings=32768,
                       llama3_rope=False),
}


def _config(shape: LlamaShape, bos: int, eos: int) -> dict:
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        **{k: v for k, v in asdict(shape).items() if k != "llama3_rope"},
        "rms_norm_eps": 1e-5, "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": False,
        "bos_token_id": bos, "eos_token_id": eos, "pad_token_id": bos, "torch_dtype": "bfloat16",
        "dtype": "bfloat16", "use_cache": True, "initializer_range": 0.02, "transformers_version": "4.45.0",
    }
    if shape.llama3_rope:
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192}
    return cfg


def dummy_model(size: str = "llama-3.1-8b", out_dir: str | os.PathLike | None = None) -> Path:
    """A directory with a Llama ``size`` config and tokenizer, for ``load_format="dummy"``."""
    if size not in SHAPES:
        raise ValueError(f"unknown size {size!r}: kvlab.models.dummy knows {sorted(SHAPES)}")
    shape = SHAPES[size]
    key = hashlib.sha256(json.dumps({"size": size, "shape": asdict(shape), "v": 1}, sort_keys=True).encode()
                         ).hexdigest()[:16]
    path = Path(out_dir) if out_dir is not None else _cache_root() / "models" / f"dummy-llama-{size}-{key}"
    try:
        if json.loads((path / _MARKER).read_text()).get("key") == key:
            return path
    except (OSError, ValueError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        n_vocab = _tokenizer.train_tokenizer(shape.vocab_size, tmp)
        if n_vocab != shape.vocab_size:
            raise RuntimeError(f"tokenizer has {n_vocab} tokens, the {size} shape wants {shape.vocab_size}")
        bos, eos = _tokenizer.token_id(tmp, "<|endoftext|>"), _tokenizer.token_id(tmp, "<|im_end|>")
        (tmp / "config.json").write_text(json.dumps(_config(shape, bos, eos), indent=2))
        (tmp / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": bos, "eos_token_id": eos, "pad_token_id": bos, "do_sample": False}, indent=2))
        (tmp / _MARKER).write_text(json.dumps({"key": key, "size": size, "shape": asdict(shape)}))  # last
        shutil.rmtree(path, ignore_errors=True)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
