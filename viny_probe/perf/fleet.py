"""`viny bench --fleet K,...`: aggregate training img/s of K runs stepped as one fleet.

Each figure is the fleet's own step (``trainers.fleet.fleet_step`` then the stacked AdamW step, what a
fleet epoch runs per batch): K members of one regime, each with its own weights, optimiser state and
generator, each given a device-resident batch of ``batch`` images that its own regime augments. The
aggregate img/s counts every member's images; the fraction of peak is its FLOP/s (``flops``) over the
matrix-multiply peak measured in the same run (``peak``).
"""

from __future__ import annotations

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
from .harness import bench_data, fixed_batch, make_trainer
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
    precision: str = "fp32",
    batch: int = 64,
    compile: bool = False,
    attention: str = "math",
    graphs: bool = True,
    lr: float = 1e-4,
    weight_decay: float = 0.05,
) -> FleetBench:
    """``size`` fresh members of ``regime`` (seeds 0..size-1, set up as ``harness.make_trainer`` sets up
    one) stacked into a fleet, each to step on the first ``batch`` images of ``data``; ``graphs``:
    replayed from a CUDA graph after ``Stack.WARMUP`` steps, on a GPU."""
    if size < 1:
        raise VinyError("--fleet sizes must be >= 1")
    if attention not in ATTENTIONS:
        raise VinyError(f"unknown attention {attention!r}; choose one of {', '.join(ATTENTIONS)}")
    schedule = SimpleNamespace(lr=lr, weight_decay=weight_decay, compile=compile)
    members = []
    for seed in range(size):
        tr = make_trainer(regime, cfg, data, device, precision, seed=seed, lr=lr, weight_decay=weight_decay)
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
    sizes: tuple[int, ...],
    device: str = "auto",
    precisions: tuple[str, ...] = ("fp32",),
    model: str = "viny",
    regimes: tuple[str, ...] | None = None,
    batch: int = 64,
    steps: int = 3,
    warmup: int = 1,
    repeats: int = 3,
    compile: bool = False,
    attention: str = "math",
    graphs: bool = True,
    dataset: str = "toy-pets",
    peak_sizes: tuple[int, ...] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Aggregate training img/s and fraction of the measured peak for every regime, precision and
    fleet size, as one JSON-able dict. Fleets are built one at a time (a K = 64 fleet of ViNy holds
    64 models and their optimiser state) and timed in rounds like every `viny bench` figure."""
    log = log or (lambda _msg: None)
    from ..registry import REGIMES

    regimes = REGIMES.names() if regimes is None else tuple(regimes)
    for r in regimes:
        regime_named(r)
    dev = resolve_device(device)
    cfg = model_config(model)
    data = bench_data(cfg, batch, dataset).to(dev)
    shape = (batch * cfg.num_patches, cfg.dim, 3 * cfg.heads * cfg.dim_head)
    peak_sizes = peak_sizes or default_sizes(dev)
    peaks = {p: matmul_peak(dev, DTYPES[p], peak_sizes, shape, repeats) for p in precisions}
    rows, failures = [], {}
    for r in regimes:
        flops = analytic_flops(cfg, r)["train"]
        for p in precisions:
            for k in sizes:
                log(f"{r} {p} fleet of {k}")
                fleet = make_fleet(r, cfg, data, dev, k, p, batch, compile, attention, graphs)
                failed: dict = {}
                times = timed_rounds(
                    {"step": lambda fleet=fleet: [fleet.step() for _ in range(steps)]},
                    dev,
                    warmup,
                    repeats,
                    log,
                    failed,
                )
                del fleet
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
        "model": model,
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
        "compile": compile,
        "attention": attention,
        "cuda_graphs": graphs and dev.type == "cuda",
        "matmul_peak": peaks,
        "fleets": rows,
        "failures": failures,
    }
