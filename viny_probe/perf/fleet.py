"""`viny bench --fleet K,...`: aggregate training img/s of K runs stepped as one fleet.

Each figure is the fleet's own step (``trainers.fleet.fleet_step`` then the stacked AdamW step, what a
fleet epoch runs per batch): K members of one regime, each with its own weights, optimiser state and
generator, each given a device-resident batch of ``batch`` images that its own regime augments. The
aggregate img/s counts every member's images; the fraction of peak is its FLOP/s (``flops``) over the
matrix-multiply peak measured in the same run (``peak``).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import torch

from ..data.base import ImageSet
from ..errors import VinyError
from ..model import ViTConfig, model_config
from ..trainers.engine import micro_batch_size
from ..trainers.fleet import FleetMeter, Stack, fleet_step
from ..trainers.loop import resolve_device
from .flops import analytic_flops, regime_named
from .harness import TrainerSetup, bench_data, fixed_batch, make_trainer
from .options import BenchOptions, FleetOptions
from .peak import DTYPES, default_sizes, matmul_peak
from .timing import timed_rounds

ATTENTIONS = ("auto", "math")


@dataclass
class FleetBench:
    """K members stacked (``trainers.fleet.Stack``) with one fixed batch each and their generators."""

    stack: Stack
    batch: dict[str, torch.Tensor]
    gens: list[torch.Generator]
    device: torch.device
    precision: str
    micro: int

    @property
    def size(self) -> int:
        return len(self.stack)

    def step(self) -> dict[int, int]:
        """One fleet step, optimiser included; the losses are not read (as on a GPU between checks)."""
        return fleet_step(
            self.stack,
            [self.batch] * self.size,
            self.gens,
            micro_batch=self.micro,
            precision=self.precision,
            meter=FleetMeter(self.device),
        )


def make_fleet(
    regime: str,
    cfg: ViTConfig,
    data: ImageSet,
    device: torch.device,
    size: int,
    setup: TrainerSetup = TrainerSetup(),
    batch: int = BenchOptions.batch,
    attention: str = FleetOptions.attention,
    graphs: bool = FleetOptions.graphs,
) -> FleetBench:
    """``size`` fresh members of ``regime`` (seeds 0..size-1, set up as ``harness.make_trainer`` sets up
    one from ``setup``; the stack compiles the fleet's step where ``setup.compile``) stacked into a
    fleet, each to step on the first ``batch`` images of ``data``; ``graphs``: replayed from a CUDA
    graph after ``Stack.WARMUP`` steps, on a GPU."""
    if size < 1:
        raise VinyError("--fleet sizes must be >= 1")
    if attention not in ATTENTIONS:
        raise VinyError(f"unknown attention {attention!r}; choose one of {', '.join(ATTENTIONS)}")
    precision = setup.precision
    schedule = SimpleNamespace(lr=setup.lr, weight_decay=setup.weight_decay, compile=setup.compile)
    members = []
    for seed in range(size):
        tr = make_trainer(regime, cfg, data, device, dataclasses.replace(setup, compile=False), seed)
        members.append(
            SimpleNamespace(
                regime=tr.regime,
                encoder=tr.encoder,
                head=tr.head,
                optimizer=tr.optimizer,
                cfg=schedule,
                device=device,
            )
        )
    stack = Stack(members, graphs)
    stack.attention = attention
    return FleetBench(
        stack=stack,
        batch=fixed_batch(data, batch, device),
        gens=[torch.Generator().manual_seed(seed) for seed in range(size)],
        device=device,
        precision=precision,
        micro=micro_batch_size(0, device, batch, cfg, precision, size),
    )


def run_fleet_bench(
    fleet: FleetOptions, options: BenchOptions = BenchOptions(), log: Callable[[str], None] | None = None
) -> dict:
    """Aggregate training img/s and fraction of the measured peak for every regime, precision and
    fleet size (``fleet.sizes``), as one JSON-able dict. Fleets are built one at a time (a K = 64 fleet
    of ViNy holds 64 models and their optimiser state) and timed in rounds like every `viny bench`
    figure."""
    log = log or (lambda _msg: None)
    from ..registry import REGIMES

    o, batch, steps = options, options.batch, options.steps
    regimes = REGIMES.names() if o.regimes is None else tuple(o.regimes)
    for r in regimes:
        regime_named(r)
    dev = resolve_device(o.device)
    cfg = model_config(o.model)
    data = bench_data(cfg, batch, o.dataset).to(dev)
    shape = (batch * cfg.num_patches, cfg.dim, 3 * cfg.heads * cfg.dim_head)
    peak_sizes = o.peak_sizes or default_sizes(dev)
    peaks = {p: matmul_peak(dev, DTYPES[p], peak_sizes, shape, o.repeats) for p in o.precisions}
    rows, failures = [], {}
    for r in regimes:
        flops = analytic_flops(cfg, r)["train"]
        for p in o.precisions:
            setup = TrainerSetup(p, compile=o.compile)
            for k in fleet.sizes:
                log(f"{r} {p} fleet of {k}")
                bench = make_fleet(r, cfg, data, dev, k, setup, batch, fleet.attention, fleet.graphs)
                failed: dict = {}
                times = timed_rounds(
                    {"step": lambda bench=bench: [bench.step() for _ in range(steps)]},
                    dev,
                    o.warmup,
                    o.repeats,
                    log,
                    failed,
                )
                del bench
                if failed:
                    failures[f"{r}/{p}/{k}"] = failed["step"]
                    continue
                seconds = statistics.median(times["step"])
                img_per_s = k * batch * steps / seconds
                rows.append(
                    {
                        "regime": r,
                        "precision": p,
                        "fleet": k,
                        "step_ms": 1000 * seconds / steps,
                        "train_img_per_s": img_per_s,
                        "per_member_img_per_s": img_per_s / k,
                        "train_flops": img_per_s * flops,
                        "frac_of_peak": img_per_s * flops / peaks[p]["peak_flops"],
                    }
                )
    for row in rows:
        one = next(
            (
                x
                for x in rows
                if (x["regime"], x["precision"], x["fleet"]) == (row["regime"], row["precision"], 1)
            ),
            None,
        )
        row["vs_fleet_of_1"] = None if one is None else row["train_img_per_s"] / one["train_img_per_s"]
    return {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "model": o.model,
        "batch": batch,
        "steps": steps,
        "warmup": o.warmup,
        "repeats": o.repeats,
        "compile": o.compile,
        "attention": fleet.attention,
        "cuda_graphs": fleet.graphs and dev.type == "cuda",
        "matmul_peak": peaks,
        "fleets": rows,
        "failures": failures,
    }
