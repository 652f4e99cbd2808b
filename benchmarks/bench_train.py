"""Benchmark script: the same library as `viny bench` (viny_probe.perf), plus the settings sweep.

    python benchmarks/bench_train.py --json > out.json             # what `viny bench --json` prints
    python benchmarks/bench_train.py --variants --threads 1        # AdamW / bf16 / compile variants
    python benchmarks/bench_train.py --device cuda --compile       # on a GPU

Every figure and the command that produced it is in docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="both", choices=["fp32", "bf16", "both"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--model", default="viny")
    ap.add_argument("--regimes", default=None, help="comma-separated (default: every registered regime)")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--epoch-batches", type=int, default=4)
    ap.add_argument("--baseline", default="simmim")
    ap.add_argument("--dataset", default="toy-pets")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--optimizer", default="loop", help="loop | fused | foreach | for-loop | default")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--json", action="store_true", help="JSON on stdout only")
    ap.add_argument(
        "--variants", action="store_true", help="time one regime under alternative settings instead"
    )
    ap.add_argument("--variant-list", default="loop,fused,foreach,bf16,bf16+fused,compile,compile+fused")
    args = ap.parse_args(argv)

    import torch

    from viny_probe import perf

    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(f"bench: {message}", file=sys.stderr, flush=True)

    if args.variants:
        result = perf.step_variants(
            args.device,
            (args.regimes or "simmim").split(",")[0],
            args.model,
            args.batch,
            args.steps,
            args.warmup,
            args.repeats,
            tuple(args.variant_list.split(",")),
            log=log,
        )
        print(json.dumps(result, indent=2))
        return 0
    from viny_probe.perf.options import BenchOptions, SingleRunOptions

    options = BenchOptions(
        device=args.device,
        precisions=("fp32", "bf16") if args.precision == "both" else (args.precision,),
        batch=args.batch,
        model=args.model,
        regimes=None if args.regimes is None else tuple(args.regimes.split(",")),
        steps=args.steps,
        warmup=args.warmup,
        repeats=args.repeats,
        compile=args.compile,
        dataset=args.dataset,
    )
    single = SingleRunOptions(
        baseline=None if args.baseline == "none" else args.baseline,
        epoch_batches=args.epoch_batches,
        threads=args.threads,
        workers=args.workers,
        optimizer=args.optimizer,
    )
    result = perf.run_bench(options, single, log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        from viny_probe.cli.bench import render
        from viny_probe.progress import console

        for table in render(result):
            console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
