"""The training step against the plain fp32 step, timed back to back (docs/performance.md, "The 2x
target, measured").

    python benchmarks/paired_step.py --rounds 8                # viny's step and the plain step, alternating
    python benchmarks/paired_step.py --rounds 8 --with-eval    # plus the two evaluations `viny bench` times
    python benchmarks/paired_step.py --rounds 8 --streams 1,0  # viny's micro-batches one after the other
                                                               # (1) and side by side (0: auto), and plain

Each round times viny's training step (the loop's, ``perf.harness.make_trainer``: augmentation,
micro-batches, AdamW) and the plain baseline's (``perf.baseline``: PlainViT, fp32, no augmentation)
for ``--steps`` steps each, one after the other; ``--with-eval`` adds both models' evaluations to every
round, as `viny bench` does. Prints each median img/s, the ratio of the medians and every round's
ratio (a round's two figures share the machine's load).
"""

from __future__ import annotations

import argparse
import statistics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--regime", default="segment")
    ap.add_argument("--model", default="viny")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--with-eval", action="store_true")
    ap.add_argument(
        "--streams",
        default="0",
        help="comma-separated --streams values of viny's step, each timed (0 = auto)",
    )
    args = ap.parse_args(argv)

    import torch

    from viny_probe.model import model_config
    from viny_probe.perf.baseline import baseline_measures
    from viny_probe.perf.bench import _eval_steps
    from viny_probe.perf.harness import TrainerSetup, bench_data, fixed_batch, make_trainer
    from viny_probe.perf.timing import timed_rounds

    cfg, dev = model_config(args.model), torch.device("cpu")
    data = bench_data(cfg, args.batch)
    batch = fixed_batch(data, args.batch, dev)
    plain = baseline_measures(args.regime, cfg, data, dev, args.batch, args.steps)
    gen = torch.Generator().manual_seed(0)

    def viny_steps(streams: int):
        trainer = make_trainer(args.regime, cfg, data, dev, TrainerSetup(args.precision, streams=streams))

        def run() -> None:
            for _ in range(args.steps):
                trainer.step(batch, gen)

        return trainer, run

    measures = {}
    for streams in (int(s) for s in args.streams.split(",")):
        trainer, measures[f"viny {args.precision} streams={streams}"] = viny_steps(streams)
    measures["plain fp32"] = plain["train"]
    if args.with_eval:
        measures["viny eval"] = lambda: _eval_steps(trainer, batch["images"], args.steps)
        measures["plain eval"] = plain["eval"]
    seconds = timed_rounds(measures, dev, warmup=1, repeats=args.rounds, log=lambda _m: None)
    rates = {key: [args.batch * args.steps / s for s in values] for key, values in seconds.items()}
    for key, values in rates.items():
        print(
            f"{key:24s} {statistics.median(values):7.1f} img/s  (min {min(values):.1f}, max {max(values):.1f})"
        )
    theirs = rates["plain fp32"]
    for key in (k for k in rates if k.startswith("viny ") and "eval" not in k):
        ours = rates[key]
        print(
            f"{key} / plain: ratio of the medians {statistics.median(ours) / statistics.median(theirs):.3f}"
        )
        print("  per round:", " ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
