"""`viny bench --fleet K,...`: aggregate training img/s of K runs stepped as one fleet.

Each figure is the fleet's own step (``trainers.fleet.fleet_step`` then the stacked AdamW step, what a
fleet epoch runs per batch): K members of one regime, each with its own weights, optimiser state and
generator, each given a device-resident batch of ``batch`` images that its own regime augments. The
aggregate img/s counts every member's images; the fraction of peak is its FLOP/s (``flops``) over the
matrix-multiply peak measured in the same run (``peak``).

Each size is timed on every fleet path asked for (``trainers.fleet.PATHS``: the stacked forward,
vmap) and beside one run alone (``harness.make_trainer``'s step, what a run alone takes per batch),
all in the same interleaved rounds, so old and new path and the run alone share the machine's load.
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
from ..trainers.fleet import PATHS, FleetMeter, Stack, fleet_step
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
    path: str = "stacked",
) -> FleetBench:
    """``size`` fresh members of ``regime`` (seeds 0..size-1, set up as ``harness.make_trainer`` sets up
    one from ``setup``; the stack compiles the fleet's step where ``setup.compile``) stacked into a
    fleet, each to step on the first ``batch`` images of ``data``; ``graphs``: replayed from a CUDA
    graph after ``Stack.WARMUP`` steps, on a GPU; ``path``: ``Stack``'s (the stacked forward or vmap;
    ``attention`` is vmap's); ``setup.streams``: micro-batches side by side, as `viny train --streams`
    (0: auto, ``Stack.use_streams``)."""
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
    stack = Stack(members, graphs, path)
    stack.attention = attention
    micro = micro_batch_size(0, device, batch, cfg, precision, size)
    stack.use_streams(setup.streams, micro, precision)
    return FleetBench(
        stack=stack,
        batch=fixed_batch(data, batch, device),
        gens=[torch.Generator().manual_seed(seed) for seed in range(size)],
        device=device,
        precision=precision,
        micro=micro,
    )


def run_fleet_bench(
    fleet: FleetOptions, options: BenchOptions = BenchOptions(), log: Callable[[str], None] | None = None
) -> dict:
    """Aggregate training img/s and fraction of the measured peak for every regime, precision, fleet
    size (``fleet.sizes``) and path (``fleet.paths``), and one run alone's img/s (``alone``), as one
    JSON-able dict. Fleets are built one size at a time (a K = 64 fleet of ViNy holds 64 models and
    their optimiser state), each size's paths and the run alone timed in the same rounds like every
    `viny bench` figure. A path that went through vmap instead of the one asked for says why in its
    row's ``note``."""
    log = log or (lambda _msg: None)
    from ..registry import REGIMES

    o, batch, steps = options, options.batch, options.steps
    regimes = REGIMES.names() if o.regimes is None else tuple(o.regimes)
    for r in regimes:
        regime_named(r)
    for path in fleet.paths:
        if path not in PATHS:
            raise VinyError(f"unknown fleet path {path!r}; choose one of {', '.join(PATHS)}")
    dev = resolve_device(o.device)
    cfg = model_config(o.model)
    data = bench_data(cfg, batch, o.dataset).to(dev)
    shape = (batch * cfg.num_patches, cfg.dim, 3 * cfg.heads * cfg.dim_head)
    peak_sizes = o.peak_sizes or default_sizes(dev)
    peaks = {p: matmul_peak(dev, DTYPES[p], peak_sizes, shape, o.repeats) for p in o.precisions}
    rows, alone_rows, failures = [], [], {}
    for r in regimes:
        flops = analytic_flops(cfg, r)["train"]
        for p in o.precisions:
            setup = TrainerSetup(p, compile=o.compile)
            alone = _alone_step(r, cfg, data, dev, setup, batch, steps)
            alone_times: list[float] = []
            failed: dict = {}
            for k in fleet.sizes:
                log(f"{r} {p} fleet of {k}: {', '.join(fleet.paths)} and a run alone")
                benches = {
                    path: make_fleet(r, cfg, data, dev, k, setup, batch, fleet.attention, fleet.graphs, path)
                    for path in fleet.paths
                }
                measures = {"alone": alone}
                measures.update(
                    {path: lambda b=b: [b.step() for _ in range(steps)] for path, b in benches.items()}
                )
                failed = {}
                times = timed_rounds(measures, dev, o.warmup, o.repeats, log, failed)
                alone_times += times["alone"]
                for path, bench in benches.items():
                    if path in failed:
                        failures[f"{r}/{p}/{k}/{path}"] = failed[path]
                        continue
                    seconds = statistics.median(times[path])
                    img_per_s = k * batch * steps / seconds
                    rows.append(
                        {
                            "regime": r,
                            "precision": p,
                            "fleet": k,
                            "path": bench.stack.path,
                            "note": bench.stack.note,
                            "step_ms": 1000 * seconds / steps,
                            "train_img_per_s": img_per_s,
                            "per_member_img_per_s": img_per_s / k,
                            "train_flops": img_per_s * flops,
                            "frac_of_peak": img_per_s * flops / peaks[p]["peak_flops"],
                        }
                    )
                del benches
            if "alone" in failed:
                failures[f"{r}/{p}/alone"] = failed["alone"]
            elif alone_times:
                seconds = statistics.median(alone_times)
                alone_rows.append(
                    {
                        "regime": r,
                        "precision": p,
                        "step_ms": 1000 * seconds / steps,
                        "train_img_per_s": batch * steps / seconds,
                    }
                )
    for row in rows:
        key = (row["regime"], row["precision"], row["path"])
        one = next(
            (x for x in rows if (x["regime"], x["precision"], x["path"]) == key and x["fleet"] == 1), None
        )
        row["vs_fleet_of_1"] = None if one is None else row["train_img_per_s"] / one["train_img_per_s"]
        lone = next((x for x in alone_rows if (x["regime"], x["precision"]) == key[:2]), None)
        row["vs_alone"] = None if lone is None else row["train_img_per_s"] / lone["train_img_per_s"]
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
        "paths": list(fleet.paths),
        "fleets": rows,
        "alone": alone_rows,
        "failures": failures,
    }


def _alone_step(
    regime: str,
    cfg: ViTConfig,
    data: ImageSet,
    device: torch.device,
    setup: TrainerSetup,
    batch: int,
    steps: int,
) -> Callable[[], object]:
    """``steps`` steps of one run alone (``harness.make_trainer`` from ``setup``, seed 0) on the first
    ``batch`` images of ``data``, as a closure for ``timed_rounds``."""
    trainer = make_trainer(regime, cfg, data, device, setup, seed=0)
    fixed, gen = fixed_batch(data, batch, device), torch.Generator().manual_seed(0)
    return lambda: [trainer.step(fixed, gen) for _ in range(steps)]
