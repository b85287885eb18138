"""benchmarks/gpu_runs.py: the child-per-mode harness the static-vs-elastic GPU benchmarks share, run here
with a real child script (the GPU parts of those benchmarks need the device)."""

import sys
import textwrap

import pytest

from .scripts import load_script

CHILD = textwrap.dedent("""
    import argparse, os, sys
    sys.path.insert(0, {benchmarks!r})
    from gpu_runs import report
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--n", type=int)
    args = ap.parse_args()
    print("vLLM-like chatter on stdout, then the result")
    if args.child == "broken":
        print("Traceback: the engine died", file=sys.stderr)
        sys.exit(3)
    if args.child == "silent":
        sys.exit(0)
    report({{"mode": args.child, "n": args.n, "env": os.environ.get("KVLAB_TEST_ENV")}})
""")


@pytest.fixture
def runs(monkeypatch, tmp_path):
    mod = load_script(monkeypatch, "gpu_runs")
    script = tmp_path / "bench.py"
    script.write_text(CHILD.format(benchmarks=str(mod.__file__).rsplit("/", 1)[0]))
    return mod, str(script)


def test_each_mode_runs_in_its_own_child_with_its_arguments_and_environment(runs):
    mod, script = runs
    out = mod.run_children(script, ["static", "elastic-expandable"], lambda mode: ["--n", str(len(mode))],
                           env_of={"elastic-expandable": {"KVLAB_TEST_ENV": "x"}}.get)
    assert out == {"static": {"mode": "static", "n": 6, "env": None},
                   "elastic-expandable": {"mode": "elastic", "n": 18, "env": "x"}}


@pytest.mark.parametrize("mode, said", [("broken", "exit code 3"), ("silent", "exit code 0, no result")])
def test_a_child_that_fails_or_says_nothing_stops_the_benchmark(runs, capsys, mode, said):
    mod, script = runs
    with pytest.raises(SystemExit, match=f"the {mode} run failed \\({said}\\)"):
        mod.run_children(script, ["static", mode], lambda mode: ["--n", "1"])
    if mode == "broken":
        assert "the engine died" in capsys.readouterr().err  # the child's own words, for the log


def test_prompts_slugs_and_no_gpu(monkeypatch):
    mod = load_script(monkeypatch, "gpu_runs")
    a, b = mod.random_prompts([3, 5], high=100), mod.random_prompts([3, 5], high=100)
    assert a == b and [len(p["prompt_token_ids"]) for p in a] == [3, 5]
    assert all(10 <= t < 100 for p in a for t in p["prompt_token_ids"])
    assert mod.gpu_slug("NVIDIA H100 80GB HBM3, 550.54") == "h100"
    assert mod.gpu_slug("NVIDIA GH200 480GB, 570.1") == "gh200"
    assert mod.gpu_slug("Some New Card") == "some_new_card"
    if "pynvml" not in sys.modules:
        monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML, as on this machine kind
        with pytest.raises(SystemExit, match="needs 2 NVIDIA GPUs and nvidia-ml-py"):
            mod.used_bytes(2, "this test")
