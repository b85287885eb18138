"""Offline random-weight models of real architectures, for engines that must run without a model hub.

>>> from kvlab.models import synthetic
>>> path = synthetic("qwen2", "tiny")          # a directory vLLM and transformers load like any HF model
>>> hybrid = synthetic("gemma3", "tiny")       # sliding-window + full-attention layers (two KV cache groups)

Memory and speed behave like the real shape; the text is gibberish, so workloads should use
``ignore_eos`` and fixed output lengths. Directories are cached under a key of everything that
determines their content, so repeated calls (and concurrent ones) reuse one directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from . import _gemma3, _tokenizer, _weights
from ._shapes import Dimensions, dimensions, special_tokens

# Bump when the bytes written for an unchanged (arch, size, seed) change.
GENERATOR_VERSION = 2
_MARKER = "kvlab_synthetic.json"


@dataclass(frozen=True)
class Qwen2Shape(Dimensions):
    max_position_embeddings: int = 32768
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


SIZES: dict[str, dict[str, Qwen2Shape | _gemma3.Gemma3Shape]] = {
    "qwen2": {
        # head_dim 64: vLLM's CPU attention takes 32, 64, 80, 96, 112, 128, ...; 4 layers keep 2 CPU cores fast.
        # A larger init std makes attention sharp, so outputs depend on the whole context (identity
        # tests then notice a corrupted KV cache instead of emitting one token forever).
        "tiny": Qwen2Shape(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=4096, init_std=0.25),
        # Qwen/Qwen2.5-0.5B's config.json.
        "qwen2.5-0.5b": Qwen2Shape(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                   num_attention_heads=14, num_key_value_heads=2, vocab_size=151936),
    },
    "gemma3": _gemma3.SIZES,
}


def _cache_root() -> Path:
    root = os.environ.get("KVLAB_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "kvlab"


def _content_key(arch: str, size: str, shape, seed: int, weights: bool = True) -> str:
    spec = {"v": GENERATOR_VERSION, "arch": arch, "size": size, "shape": asdict(shape), "seed": seed}
    if not weights:  # only then, so that the keys of complete models stay what they were
        spec["weights"] = False
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def _is_complete(path: Path, key: str) -> bool:
    try:
        return json.loads((path / _MARKER).read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def _hf_config(shape: Qwen2Shape, eos_id: int, pad_id: int) -> dict:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        **dimensions(shape, "max_position_embeddings", "rope_theta", "rms_norm_eps"),
        "tie_word_embeddings": shape.tie_word_embeddings,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "initializer_range": shape.init_std,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": shape.num_hidden_layers,
        **special_tokens(eos_id, pad_id),
        # Without it, transformers 5 suspects a Mistral tokenizer and warns about its regex.
        "transformers_version": "4.45.0",
    }


def _write(tmp: Path, arch: str, size: str, shape, seed: int, key: str, weights: bool = True) -> None:
    n_vocab = _tokenizer.train_tokenizer(shape.vocab_size, tmp)
    if n_vocab != shape.vocab_size:  # the model's embedding must cover exactly the tokenizer's ids
        raise RuntimeError(f"tokenizer has {n_vocab} tokens, the {size} model wants {shape.vocab_size}")
    eos, pad = _tokenizer.token_id(tmp, "<|im_end|>"), _tokenizer.token_id(tmp, "<|endoftext|>")
    if arch == "gemma3":
        cfg, tensors = _gemma3.hf_config(shape, eos, pad), _gemma3.tensors(shape)
    else:
        cfg = _hf_config(shape, eos, pad)
        tensors = _weights.qwen2_tensors({**cfg, "head_dim": shape.head_dim})
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
    (tmp / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": pad, "eos_token_id": eos, "pad_token_id": pad, "do_sample": False}, indent=2))
    if weights:
        _weights.write_random_safetensors(tmp / "model.safetensors", tensors, seed=seed, std=shape.init_std)
    # The marker goes last: a directory without it is an interrupted write, never reused.
    (tmp / _MARKER).write_text(json.dumps({"key": key, "arch": arch, "size": size, "seed": seed,
                                           "shape": asdict(shape), "generator_version": GENERATOR_VERSION}))


def synthetic(arch: str = "qwen2", size: str = "tiny", out_dir: str | os.PathLike | None = None,
              seed: int = 0, weights: bool = True) -> Path:
    """Path to a Hugging Face model directory with random weights of ``arch`` at ``size``.

    ``weights=False`` writes the config and tokenizer only, for engines that make their own weights
    (vLLM's ``load_format="dummy"``): GPU-sized shapes without gigabytes of random bytes on disk.

    Written once per (arch, size, seed, generator version) under ``$KVLAB_CACHE_DIR`` (default
    ``~/.cache/kvlab``) or at ``out_dir``; later calls return the same directory untouched.
    """
    if arch not in SIZES:
        raise ValueError(f"unknown architecture {arch!r}: kvlab.models.synthetic knows {sorted(SIZES)}")
    if size not in SIZES[arch]:
        raise ValueError(f"unknown size {size!r} for {arch}: choose one of {sorted(SIZES[arch])}")
    shape = SIZES[arch][size]
    key = _content_key(arch, size, shape, seed, weights)
    path = Path(out_dir) if out_dir is not None else _cache_root() / "models" / f"{arch}-{size}-s{seed}-{key}"
    if _is_complete(path, key):
        return path
    if path.exists() and any(path.iterdir()) and not (path / _MARKER).exists():
        raise FileExistsError(f"{path} exists and is not a kvlab synthetic model; choose another out_dir")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write(tmp, arch, size, shape, seed, key, weights)
        if path.exists():  # a stale or different model: replace it (a concurrent writer may have won)
            if _is_complete(path, key):
                return path
            shutil.rmtree(path)
        os.rename(tmp, path)
    except OSError:
        if not _is_complete(path, key):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
