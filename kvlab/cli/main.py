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
    vmm.add_argument("--out", default="benchmarks/results", help="folder for the JSON result")
    vmm.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from kvlab.memory import KvlabMemoryError

    try:
        if args.command == "doctor":
            from kvlab.cli import doctor

            return doctor.main(args)
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
