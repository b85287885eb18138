"""Entry point of the `kvlab` command."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvlab", description="Elastic KV-cache memory for LLM serving.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doctor = sub.add_parser("doctor", help="versions, devices, VMM support and usable backends")
    doctor.add_argument("--json", action="store_true", help="print machine-readable JSON")

    bench = sub.add_parser("bench", help="micro-benchmarks")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    vmm = bench_sub.add_parser("vmm", help="per-page map/unmap cost vs the driver floor")
    vmm.add_argument("--device", default=None, help="cpu or cuda:N (default: the first GPU, else cpu)")
    vmm.add_argument("--page-size", default="2MiB")
    vmm.add_argument("--repeats", type=int, default=30)
    vmm.add_argument("--handle-size", default="32MiB", help="chunk-sized handle whose growth is compared with "
                     "page-sized handles")
    vmm.add_argument("--growth", default=None, help="bytes grown for the GiB/s rows (default 4GiB GPU, 512MiB cpu)")
    vmm.add_argument("--out", default="benchmarks/results", help="folder for the JSON result")
    vmm.add_argument("--json", action="store_true", help="print the result as JSON")

    demo = sub.add_parser("demo", help="elastic vs static vLLM and two models sharing a device, with a report")
    demo.add_argument("--model", default=None, help="model path or hub id (default: depends on the machine)")
    demo.add_argument("--out", default="kvlab-demo", help="folder for the results and reports")
    demo.add_argument("--json", action="store_true", help="print the summaries as JSON")
    demo.add_argument("--quick", action="store_true", help="smaller workloads (about half the time)")

    from kvlab.cli import ctl, serve, top  # light: the registry and rich, no torch

    ctl.add_parser(sub)
    top.add_parser(sub)
    serve.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("ctl", "top"):  # registry tools: no native module, no torch (fast to start)
        from kvlab.cli import ctl, top

        return (ctl if args.command == "ctl" else top).main(args)
    if args.command == "serve":
        from kvlab.cli import serve

        return serve.main(args)
    from kvlab.memory import KvlabMemoryError

    try:
        if args.command == "doctor":
            from kvlab.cli import doctor

            return doctor.main(args)
        if args.command == "demo":
            from kvlab.cli import demo

            return demo.main(args)
        if args.command == "bench":
            if args.repeats < 1:
                raise SystemExit("kvlab bench: --repeats must be at least 1")
            from kvlab.cli import bench

            return bench.main(args)
    except KvlabMemoryError as exc:
        print(f"kvlab: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
