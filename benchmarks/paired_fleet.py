"""A fleet of K runs against one run alone, timed in alternating rounds in one process
(docs/performance.md, "Fleets on this CPU").

    python benchmarks/paired_fleet.py --precision fp32 --members 8 --micro 0,8,16 --rounds 10

Each round times K steps of one run alone (``perf.harness.make_trainer``, the loop's step) and one
step of a fleet of K members (``perf.fleet.make_fleet``, the sweep's stacked step) per micro-batch
size in ``--micro`` (0: the fleet's automatic one), one after the other. Prints each variant's
aggregate img/s and the median of the rounds' ratios to the run alone (a round's figures share the
machine's load).
"""

from __future__ import annotations

import argparse
import statistics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--regime", default="segment")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--members", type=int, default=8)
    ap.add_argument("--micro", default="0", help="comma-separated micro-batches per member (0: auto)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args(argv)

    import torch

    from viny_probe.model import model_config
    from viny_probe.perf.fleet import make_fleet
    from viny_probe.perf.harness import TrainerSetup, bench_data, fixed_batch, make_trainer
    from viny_probe.perf.timing import timed_rounds

    cfg, dev, k = model_config(args.model), torch.device("cpu"), args.members
    data = bench_data(cfg, args.batch)
    setup = TrainerSetup(args.precision)
    alone = make_trainer(args.regime, cfg, data, dev, setup)
    batch = fixed_batch(data, args.batch, dev)
    gen = torch.Generator().manual_seed(0)

    def alone_steps() -> None:
        for _ in range(k):
            alone.step(batch, gen)
        float(alone.losses[-1])

    measures = {"alone": alone_steps}
    for micro in (int(m) for m in args.micro.split(",")):
        fleet = make_fleet(args.regime, cfg, data, dev, k, setup, batch=args.batch)
        if micro:
            fleet.micro = micro
        measures[f"fleet of {k}, micro {fleet.micro}" + (" (auto)" if not micro else "")] = fleet.step
    seconds = timed_rounds(measures, dev, warmup=1, repeats=args.rounds, log=lambda _m: None)
    images = args.batch * k
    for name, values in seconds.items():
        ratios = [a / b for a, b in zip(seconds["alone"], values, strict=True)]
        print(
            f"{args.precision} {name:28s} {images / statistics.median(values):7.0f} img/s aggregate"
            f"  x{statistics.median(ratios):.3f} the run alone  (rounds: {' '.join(f'{r:.2f}' for r in ratios)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
