"""benchmarks/graphs.py: the --graphs option of the serving benchmarks maps to the engine arguments vLLM takes."""

import argparse

import pytest

from tests.benchmarks.scripts import load_script


def _parse(monkeypatch, *argv):
    mod = load_script(monkeypatch, "graphs")
    p = argparse.ArgumentParser()
    mod.add_graphs_option(p)
    return mod, p.parse_args(list(argv))


def test_eager_flag_is_graphs_eager_and_the_default_is_vllms(monkeypatch):
    mod, args = _parse(monkeypatch)
    assert args.graphs == "compile" and mod.graph_engine_args(args.graphs) == {"enforce_eager": False}
    assert _parse(monkeypatch, "--eager")[1].graphs == "eager"
    assert mod.graph_engine_args("eager") == {"enforce_eager": True}


def test_decode_graphs_cover_the_benchmarks_concurrency_without_compiling(monkeypatch):
    mod, args = _parse(monkeypatch, "--graphs", "decode")
    cfg = mod.graph_engine_args(args.graphs)["compilation_config"]
    assert cfg["mode"] == 0 and cfg["cudagraph_mode"] == "FULL_DECODE_ONLY"  # mode 0: no torch.compile
    assert 64 in cfg["cudagraph_capture_sizes"] and cfg["cudagraph_capture_sizes"] == sorted(cfg["cudagraph_capture_sizes"])


def test_unknown_mode_is_refused(monkeypatch):
    mod, _ = _parse(monkeypatch)
    with pytest.raises(ValueError, match="unknown graph mode 'full'"):
        mod.graph_engine_args("full")
    with pytest.raises(SystemExit):
        _parse(monkeypatch, "--graphs", "full")
