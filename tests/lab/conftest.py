"""Fixtures for the lab tests: a tiny random-weight model and helpers to look at processes."""

import time
from pathlib import Path

import pytest

from kvlab.lab.process import group_pids

ENGINE_ARGS = dict(max_model_len=512, kv_cache_memory_bytes=64 << 20, max_num_seqs=16)


def _fallback_tiny_model(out: Path) -> Path:
    """A Qwen2-shaped model with random weights, built offline with transformers + tokenizers
    (used only when kvlab.models.synthetic is not available)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM
    import torch

    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog " * 4, "memory pages blocks tokens cache " * 4]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(out)
    eos = fast.convert_tokens_to_ids("<|endoftext|>")
    cfg = Qwen2Config(vocab_size=len(fast), hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).to(torch.bfloat16).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    try:
        from kvlab.models import synthetic
    except ImportError:
        return _fallback_tiny_model(tmp_path_factory.mktemp("model") / "tiny-qwen2")
    return synthetic("qwen2", "tiny")


def wait_gone(pgid: int, timeout: float) -> list[int]:
    """Members of ``pgid`` still alive after waiting up to ``timeout`` seconds (empty: all gone)."""
    deadline = time.monotonic() + timeout
    while group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return group_pids(pgid)


def metric_total(url: str, name: str) -> float:
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


# tests/engines sets in-process vLLM defaults in os.environ at import (VLLM_ENABLE_V1_MULTIPROCESSING=0,
# VLLM_LOGGING_LEVEL=WARNING). Servers started here inherit os.environ, so without this they would run
# without EngineCore processes and hide vLLM's INFO log, and these tests would depend on test order.
_ENGINE_TEST_DEFAULTS = ("VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_LOGGING_LEVEL")


@pytest.fixture(autouse=True)
def _stock_vllm_environment(monkeypatch):
    for name in _ENGINE_TEST_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
