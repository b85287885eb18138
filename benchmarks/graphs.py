"""How the serving benchmarks' vLLM servers run the model: the ``--graphs`` option they share.

* ``eager``: no CUDA graphs and no torch.compile (``enforce_eager``). Quick to start, but a Qwen2.5-0.5B
  step is then bound by the host's kernel launches, so host noise moves its throughput by +-25 % between
  rounds of one run (serving_overhead_h100.json, eager: static 2518-4170 tok/s).
* ``decode``: full CUDA graphs for decode batches, no torch.compile: a decode step is one graph launch, so
  the GPU, not the host, sets its time; prefills still run eagerly. Starts almost as quickly as eager.
* ``compile``: vLLM's default (torch.compile with its CUDA graphs); the first start compiles for minutes.
"""

from __future__ import annotations

GRAPH_MODES = ("eager", "decode", "compile")

# Decode batches up to the benchmarks' largest concurrency (64) replay a graph; larger ones run eagerly.
DECODE_CAPTURE_SIZES = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128]


def add_graphs_option(parser, default: str = "compile") -> None:
    parser.add_argument("--graphs", choices=GRAPH_MODES, default=default,
                        help=f"how vLLM runs the model (default {default}); see benchmarks/graphs.py")
    parser.add_argument("--eager", dest="graphs", action="store_const", const="eager",
                        help="the same as --graphs eager")


def graph_engine_args(mode: str) -> dict:
    """vLLM engine arguments (kvlab.lab.Server keywords) for one of GRAPH_MODES."""
    if mode == "eager":
        return {"enforce_eager": True}
    if mode == "decode":
        return {"enforce_eager": False,
                "compilation_config": {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY",
                                       "cudagraph_capture_sizes": DECODE_CAPTURE_SIZES}}
    if mode == "compile":
        return {"enforce_eager": False}
    raise ValueError(f"unknown graph mode {mode!r}: choose one of {', '.join(GRAPH_MODES)}")
