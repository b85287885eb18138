"""kvlab.lab.defaults: what the notebooks (and `kvlab demo`) run with, chosen per machine."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from kvlab.lab import defaults
from kvlab.lab.workloads import Alternating, Bursty

MiB = 1 << 20
RESERVE = 32 * MiB  # the elastic engine's default KVLAB_RESERVE


def _no_network(*args, **kwargs):
    raise AssertionError(f"defaults tried to open a connection: {args}")


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("yes", True), ("", False), ("0", False)])
def test_quick_follows_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("KVLAB_QUICK", value)
    assert defaults.quick() is expected


def test_cpu_setup_is_the_tiny_synthetic_model_and_touches_no_network(monkeypatch):
    monkeypatch.delenv("KVLAB_MODEL", raising=False)
    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setenv("KVLAB_QUICK", "1")
    setup = defaults.choose(device="cpu")
    assert setup.source == "synthetic" and setup.device == "cpu" and setup.quick
    assert (Path(setup.model) / "config.json").is_file()
    assert setup.load == defaults.CPU_QUICK
    assert setup.engine_args["kv_cache_memory_bytes"] == 512 * MiB  # the CPU build needs an explicit size
    assert setup.load.prompt_len + setup.load.max_tokens <= setup.engine_args["max_model_len"]
    assert setup.load.burst_size <= setup.engine_args["max_num_seqs"]  # a burst runs as one batch
    text = str(setup)
    assert "quick mode" in text and setup.model in text


@pytest.mark.parametrize("quick", ["0", "1"])
def test_a_cpu_burst_needs_more_kv_than_the_engine_keeps_in_reserve(monkeypatch, quick):
    # Otherwise the notebooks would show a flat line: every burst must rise above the retained reserve.
    monkeypatch.setenv("KVLAB_QUICK", quick)
    setup = defaults.choose(device="cpu")
    cfg = json.loads((Path(setup.model) / "config.json").read_text())
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    per_token = cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * head_dim * 2  # K and V, bf16
    burst = setup.load.burst_size * (setup.load.prompt_len + setup.load.max_tokens) * per_token
    assert burst > RESERVE * 1.25, f"a burst needs {burst / MiB:.0f} MiB of KV"
    assert setup.load.pause > 1.0  # longer than the engine's 1 s release delay


def test_kvlab_model_wins(monkeypatch):
    monkeypatch.setenv("KVLAB_MODEL", "/models/mine")
    assert defaults.pick_model("cpu")[:2] == ("/models/mine", "env")
    assert defaults.choose(device="cuda:0").model == "/models/mine"


def test_gpu_without_hub_falls_back_to_the_same_shape(monkeypatch, tmp_path):
    import kvlab.models
    from kvlab.models import SIZES

    # Writing a 0.5B random-weight model takes most of a minute here: record what would be built instead.
    asked = []
    monkeypatch.setattr(kvlab.models, "synthetic", lambda arch, size, seed=0: asked.append((arch, size)) or tmp_path)
    monkeypatch.delenv("KVLAB_MODEL", raising=False)
    monkeypatch.setattr(defaults, "hub_cached", lambda model_id: False)
    monkeypatch.setattr(defaults, "hub_reachable", lambda timeout=2.0: False)
    model, source, reason = defaults.pick_model("cuda:0")
    assert (model, source) == (str(tmp_path), "synthetic") and asked == [("qwen2", "qwen2.5-0.5b")]
    shape = SIZES["qwen2"]["qwen2.5-0.5b"]
    assert (shape.num_hidden_layers, shape.hidden_size, shape.num_key_value_heads) == (24, 896, 2)  # the hub model's
    assert "hub" in reason
    monkeypatch.setattr(defaults, "hub_reachable", lambda timeout=2.0: True)
    assert defaults.pick_model("cuda:0")[:2] == (defaults.HUB_MODEL, "hub")


def test_hub_offline_is_unreachable_without_trying(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket, "create_connection", _no_network)
    assert defaults.hub_reachable() is False


def test_gpu_engine_args_let_two_static_engines_share_a_device():
    args = defaults.engine_args("cuda:0")
    assert 2 * args["gpu_memory_utilization"] < 0.9 and "kv_cache_memory_bytes" not in args


def test_workloads_from_a_setup(monkeypatch):
    monkeypatch.setenv("KVLAB_QUICK", "1")
    setup = defaults.choose(device="cpu")
    w = setup.bursty()
    assert isinstance(w, Bursty) and len(w.requests()) == setup.load.n_bursts * setup.load.burst_size
    assert setup.bursty(n_bursts=1, burst_size=1).requests()[0].max_tokens == setup.load.max_tokens
    alt = setup.alternating(["model-a", "model-b"])
    assert isinstance(alt, Alternating) and len(alt.requests()) == 2 * setup.load.rounds * setup.load.burst_size
    kw = setup.experiment_kw(idle_after=1.0)
    assert kw["idle_after"] == 1.0 and kw["idle_before"] == setup.load.idle_before
    assert kw["kv_cache_memory_bytes"] == setup.engine_args["kv_cache_memory_bytes"]


def test_models_side_by_side_are_distinct():
    setup = defaults.choose(device="cpu")
    a, b = setup.models(2)
    assert a == setup.model and a != b and (Path(b) / "config.json").is_file()
    assert Path(a).name != Path(b).name  # server names come from them: the views must tell them apart
    with pytest.raises(ValueError):
        setup.models(0)


def test_memory_device_is_the_host_without_a_gpu():
    if Path("/dev/nvidia0").exists():
        pytest.skip("this machine has an NVIDIA GPU")
    assert defaults.memory_device() == "cpu"
