"""The parameter objects of `viny bench`, each default written here once.

``run_bench`` and ``run_fleet_bench`` take a :class:`BenchOptions` (what every figure shares: device,
precisions, batch, model, regimes, rounds, compile, dataset, peak sizes); ``run_bench`` also a
:class:`SingleRunOptions` (the baseline, the whole epoch, threads, the optimiser variant) and
``run_fleet_bench`` a :class:`FleetOptions` (fleet sizes, attention, CUDA graphs). `viny bench`
(``cli/bench.py``) takes its option defaults from these classes, builds the objects once and passes
them; ``harness.TrainerSetup`` is how one timed model is set up. Nothing heavy is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import PRECISIONS


@dataclass(frozen=True)
class BenchOptions:
    """What every figure of one `viny bench` run shares, single runs and fleets alike.

    device: cpu | cuda | cuda:N | auto. precisions: each regime is timed in each (an emulated bf16 on a
    CPU is skipped and said). batch: images per step (per member of a fleet). model: viny (the study's
    4.8M model), demo or tiny. regimes: None for every registered one. steps: steps per timed run;
    repeats timed rounds after warmup untimed ones, the median reported. compile: torch.compile the
    encoder. dataset: an embedded dataset with masks, or ``random`` uint8 tensors. peak_sizes: the
    square matmul sizes of the peak measurement (None: ``peak.default_sizes`` of the device).
    """

    device: str = "auto"
    precisions: tuple[str, ...] = PRECISIONS
    batch: int = 64
    model: str = "viny"
    regimes: tuple[str, ...] | None = None
    steps: int = 2
    warmup: int = 1
    repeats: int = 3
    compile: bool = False
    dataset: str = "toy-pets"
    peak_sizes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class SingleRunOptions:
    """What only the single-run figures of `viny bench` have (``run_bench``, not ``--fleet``).

    baseline: the regime of the plain eager fp32 baseline (None: no baseline). epoch: time a whole
    epoch with data included, of ``epoch_batches`` batches. threads: torch CPU threads (0: torch's
    default). workers: DataLoader workers of the baseline. optimizer: the AdamW variant timed
    (``harness.OPTIMIZERS``; ``loop`` is what training uses). streams: micro-batches side by side, as
    `viny train --streams` (0: the loop's auto choice, ``trainers.streams``).
    """

    baseline: str | None = "simmim"
    epoch: bool = True
    epoch_batches: int = 4
    threads: int = 0
    workers: int = 0
    optimizer: str = "loop"
    streams: int = 0


@dataclass(frozen=True)
class FleetOptions:
    """What only `viny bench --fleet` has (``run_fleet_bench``): the fleet ``sizes`` timed, the
    ``attention`` kernel of the vmapped step (``fleet.ATTENTIONS``), whether each step is replayed
    from a CUDA graph (``graphs``, on a GPU) and the fleet ``paths`` timed (``trainers.fleet.PATHS``:
    the stacked forward, vmap), each beside a run alone in the same rounds."""

    sizes: tuple[int, ...]
    attention: str = "math"
    graphs: bool = True
    paths: tuple[str, ...] = ("stacked",)
