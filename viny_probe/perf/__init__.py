"""How fast viny trains here (`viny bench`), measured by running the training engine's own step and
epoch (``trainers.engine``) against a plain baseline, with analytic FLOPs and the measured matmul peak.

- ``bench``: ``run_bench``, everything `viny bench` reports, in one run;
- ``options``: its parameter objects (``BenchOptions``, ``SingleRunOptions``, ``FleetOptions``), each
  default written once;
- ``harness``: a regime's model and optimiser stepped by ``train_step`` / ``train_one_epoch``;
- ``flops``: FLOPs per image from the configs, the head's from its regime;
- ``peak``: the matrix-multiply peak; ``timing``: interleaved, synchronised rounds;
- ``baseline``: the plain eager model, JPEG DataLoader and step it is compared against;
- ``plan``: the study's plan in image-steps; ``variants``: alternative settings, fp32 against bf16.

Figures and the commands that produced them: docs/performance.md.
"""

from .bench import run_bench
from .flops import FLOP_CONVENTION, analytic_flops, regime_named
from .harness import Trainer, TrainerSetup, bench_data, fixed_batch, make_trainer, run_epoch
from .options import BenchOptions, FleetOptions, SingleRunOptions
from .peak import matmul_peak
from .plan import paper_plan, project_plan
from .variants import precision_agreement, step_variants

__all__ = [
    "FLOP_CONVENTION",
    "BenchOptions",
    "FleetOptions",
    "SingleRunOptions",
    "Trainer",
    "TrainerSetup",
    "analytic_flops",
    "bench_data",
    "fixed_batch",
    "make_trainer",
    "matmul_peak",
    "paper_plan",
    "precision_agreement",
    "project_plan",
    "regime_named",
    "run_bench",
    "run_epoch",
    "step_variants",
]
