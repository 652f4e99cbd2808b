"""Where a training step's time goes, timed directly inside the loop's own step (docs/performance.md,
"Where the bf16 step's time goes, timed directly").

    python benchmarks/step_parts.py                          # ViNy, segment, bf16, 6 steps
    python benchmarks/step_parts.py --precision fp32 --regime simmim --steps 8

``torch.profiler`` slows some operations it records: in the bf16 segmentation step the layout copies
of attention ran 3 to 4 times slower under it (0.58 -> 1.82 ms a call, wall clock, same process), so its
table overstates them. This script times the trainer's own step (``perf.harness.make_trainer``:
augmentation, micro-batches, autocast, AdamW) with ``time.perf_counter`` around each module's forward
(forward hooks), the regime's ``prepare`` and ``loss``, the optimiser's ``step`` and attention's
backward (``model.QKVAttention``, where the step uses it). A module's *self* time is its forward minus
its children's: ``blocks.*.attn`` is then attention's core (layout copies, products, softmax),
``blocks.*.mlp`` GELU, ``blocks.*`` the residual adds; the twelve blocks are summed under one name.
What no hook covers (the backward apart from attention's, gradient accumulation, bookkeeping) is the
step's time minus everything timed. Steps with and without the hooks alternate, and both rates are
printed, so the hooks' own cost shows.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

BLOCK_INDEX = re.compile(r"(?<=blocks\.)\d+(?=\.|$)")


def part_name(owner: str, path: str) -> str:
    """``encoder`` + ``blocks.3.attn.qkv`` -> ``encoder.blocks.*.attn.qkv`` (blocks summed together)."""
    return f"{owner}.{BLOCK_INDEX.sub('*', path)}" if path else owner


class StepTimer:
    """Seconds spent per part while ``timing()`` is active, summed over calls (``totals``)."""

    def __init__(self, backward: bool = True) -> None:
        self.backward = backward
        self.totals: dict[str, float] = defaultdict(float)

    def add(self, name: str, seconds: float) -> None:
        self.totals[name] += seconds

    def self_times(self) -> dict[str, float]:
        """Each part's time minus that of the timed parts directly under it (a module's parent is its
        nearest timed ancestor: a ``ModuleList`` is never called)."""
        own = dict(self.totals)
        for name, total in self.totals.items():
            path, _, suffix = name.partition(" ")
            parent = path.rpartition(".")[0]
            while parent and f"{parent} {suffix}".rstrip() not in self.totals:
                parent = parent.rpartition(".")[0]
            if parent:
                own[f"{parent} {suffix}".rstrip()] -= total
        return own

    def reset(self) -> None:
        self.totals.clear()

    def _module_hooks(self, owner: str, root: nn.Module) -> list:
        handles, starts = [], {}
        names = {module: part_name(owner, path) for path, module in root.named_modules()}

        def pre(module, _args):
            starts.setdefault(module, []).append(time.perf_counter())

        def post(module, _args, _out):
            self.add(names[module], time.perf_counter() - starts[module].pop())

        back_starts: dict = {}

        def back_pre(module, _grad_out):
            back_starts.setdefault(module, []).append(time.perf_counter())

        def back_post(module, grad_in, _grad_out):
            seconds = time.perf_counter() - back_starts[module].pop()
            if any(g is not None for g in grad_in):  # else it fired at once: no input needs a gradient
                self.add(names[module] + " [backward]", seconds)

        for module in names:
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
            if self.backward:
                handles.append(module.register_full_backward_pre_hook(back_pre))
                handles.append(module.register_full_backward_hook(back_post))
        return handles

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        return timed

    @contextmanager
    def timing(self, trainer) -> Iterator[None]:
        """Hooks and wrappers on ``trainer``'s modules, regime, optimiser and attention's backward,
        all removed on exit."""
        from viny_probe import model

        handles = self._module_hooks("encoder", trainer.encoder) + self._module_hooks("head", trainer.head)
        regime, optimizer = trainer.regime, trainer.optimizer
        regime.prepare = self._wrap("prepare (augmentation)", regime.prepare)
        regime.loss = self._wrap("loss", regime.loss)
        optimizer.step = self._wrap("optimizer step", optimizer.step)
        backward = model.QKVAttention.__dict__["backward"]
        model.QKVAttention.backward = staticmethod(
            self._wrap("encoder.blocks.*.attn.QKVAttention [backward]", backward.__func__)
        )
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Full backward hook is firing")
                yield
        finally:
            for h in handles:
                h.remove()
            del regime.prepare, regime.loss, optimizer.step
            model.QKVAttention.backward = backward


def measure(
    trainers: dict, batch: dict, gen: torch.Generator, steps: int, rounds: int
) -> dict[str, tuple[dict[str, float], float, float]]:
    """For each of ``trainers`` (name -> trainer): per-part self time (seconds per step) and the step's
    seconds without and with the hooks, medians over ``rounds`` of ``steps`` steps each (every
    trainer and both kinds alternating inside each round)."""
    results: dict[str, tuple[list, list, list]] = {name: ([], [], []) for name in trainers}

    def timed_steps(trainer) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step(batch, gen)
        float(trainer.losses[-1])
        return (time.perf_counter() - t0) / steps

    for _ in range(rounds):
        for name, trainer in trainers.items():
            per_round, plain, hooked = results[name]
            plain.append(timed_steps(trainer))
            timer = StepTimer()
            with timer.timing(trainer):
                hooked.append(timed_steps(trainer))
            per_round.append({k: v / steps for k, v in timer.self_times().items()})
    out = {}
    for name, (per_round, plain, hooked) in results.items():
        keys = {k for r in per_round for k in r}
        parts = {k: statistics.median(r.get(k, 0.0) for r in per_round) for k in keys}
        parts[NOT_TIMED] = statistics.median(hooked) - sum(parts.values())
        out[name] = (parts, statistics.median(plain), statistics.median(hooked))
    return out


NOT_TIMED = "not timed (the loss's backward, gradient accumulation, bookkeeping)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="viny")
    ap.add_argument("--regime", default="segment")
    ap.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=2, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--micro",
        default="0",
        help="comma-separated micro-batch sizes for viny's step, each timed as its own trainer (0: the loop's)",
    )
    ap.add_argument(
        "--plain",
        action="store_true",
        help="also the plain baseline's model (PlainViT, fp32, torch's default AdamW, the whole batch at "
        "once) in the same rounds, its parts beside viny's",
    )
    args = ap.parse_args(argv)

    from viny_probe.model import model_config
    from viny_probe.perf.baseline import PlainViT
    from viny_probe.perf.harness import TrainerSetup, bench_data, fixed_batch, make_trainer

    cfg, dev = model_config(args.model), torch.device("cpu")
    data = bench_data(cfg, args.batch)
    batch = fixed_batch(data, args.batch, dev)
    trainers = {}
    for micro in (int(m) for m in args.micro.split(",")):
        trainer = make_trainer(args.regime, cfg, data, dev, TrainerSetup(args.precision))
        trainer.micro_batch = micro
        trainers[f"viny {args.precision}" + (f" micro {micro}" if micro else "")] = trainer
    if args.plain:
        plain = make_trainer(
            args.regime, cfg, data, dev, TrainerSetup("fp32", optimizer="default", encoder_cls=PlainViT)
        )
        plain.micro_batch = args.batch
        trainers["plain fp32"] = plain
    gen = torch.Generator().manual_seed(0)
    for trainer in trainers.values():  # warm-up
        for _ in range(2):
            trainer.step(batch, gen)
    results = measure(trainers, batch, gen, args.steps, args.rounds)
    for name, (_, plain_s, hooked_s) in results.items():
        print(
            f"{name} ({args.model} {args.regime}, batch {args.batch} in micro-batches of "
            f"{trainers[name].micro(args.batch)}): {args.batch / plain_s:.1f} img/s without hooks, "
            f"{args.batch / hooked_s:.1f} with (medians of {args.rounds} rounds of {args.steps} steps)"
        )
    names = list(results)
    first = results[names[0]]
    header = "".join(f" {n + ' ms':>16s}" for n in names)
    print(f"{'part (self time, per step)':68s}{header} {'share':>7s}" + ("  ratio" if len(names) > 1 else ""))
    keys = sorted({k for parts, _, _ in results.values() for k in parts}, key=lambda k: -first[0].get(k, 0.0))
    for key in keys:
        cells = "".join(f" {results[n][0].get(key, 0.0) * 1000:16.1f}" for n in names)
        share = first[0].get(key, 0.0) / first[2] * 100
        ratio = ""
        if len(names) > 1 and first[0].get(key, 0.0) > 0:
            ratio = f"  {results[names[1]][0].get(key, 0.0) / first[0][key]:5.2f}"
        print(f"{key:68s}{cells} {share:6.1f} %{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
