"""One regime's model and optimiser for the benchmark, stepped by the training engine itself.

``Trainer.step`` is ``trainers.engine.train_step`` on a fixed batch and ``run_epoch`` is
``trainers.engine.train_one_epoch``: the benchmark times the loop's own step, and has none of its own
that could drift from it. What it chooses is only what a run would: the regime, the model, the
optimiser variant, the precision, the micro-batch and how often the loss is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..data.augment import normalize, to_float
from ..data.base import ImageSet
from ..distributed import DistInfo
from ..errors import VinyError
from ..model import ViNy, ViTConfig
from ..trainers.base import Regime, RegimeData, device_batch
from ..trainers.engine import (
    EpochMeter,
    StepSettings,
    TrainStep,
    activation_bytes,
    autocast,
    epoch_generator,
    loss_check_interval,
    make_optimizer,
    micro_batch_size,
    train_one_epoch,
    train_step,
    unused_cls_frozen,
)
from ..trainers.streams import resolve_streams
from .flops import regime_named

ONE_PROCESS = DistInfo()

# AdamW variants: "loop" = what training uses (trainers.engine.make_optimizer); the others name
# torch's implementations ("for-loop" is torch's default on CPU tensors; "default": torch's choice).
OPTIMIZERS: dict[str, dict | None] = {
    "loop": None,
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "for-loop": {"foreach": False},
    "default": {},
}


def bench_data(cfg: ViTConfig, n: int, dataset: str = "toy-pets", seed: int = 0) -> ImageSet:
    """``n`` images (with labels and trimaps) at the model's size: a dataset with both (the embedded
    toy-pets by default), or random uint8 tensors (``dataset="random"``). A dataset that cannot give
    them is an error, never a silent switch to random data (which would time other work)."""
    if dataset != "random":
        from ..data import load_dataset

        data = load_dataset(dataset, size=cfg.image_size, limit=n, seed=seed)
        if data.labels is None or data.masks is None or len(data) < n:
            raise VinyError(
                f"--dataset {dataset}: the bench needs {n} images with labels and trimaps, and {dataset} "
                f"gave {len(data)}{'' if data.masks is not None else ' without trimaps'}; use --dataset "
                "toy-pets or --dataset random"
            )
        return data
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    return ImageSet(
        name="random",
        images=torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8),
        labels=torch.randint(0, 6, (n,), generator=g),
        masks=torch.randint(0, 3, (n, s, s), generator=g, dtype=torch.uint8),
        class_names=[f"c{i}" for i in range(6)],
    )


def fixed_batch(data: ImageSet, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The first ``batch`` images (and labels/masks) of ``data`` on ``device``."""
    return device_batch(data, slice(0, batch), device)


@dataclass
class Trainer:
    """A regime's ``TrainStep`` (encoder + head + loss) and optimiser, as a training run sets them up."""

    regime: Regime
    step_module: TrainStep
    optimizer: torch.optim.Optimizer
    device: torch.device
    precision: str
    # Images per forward/backward, as --micro-batch: 0 = the loop's auto choice.
    micro_batch: int = 0
    # Micro-batches side by side, as --streams: 0 = the loop's auto choice (trainers/streams.py).
    streams: int = 0
    # Steps between reads of the loss on the host: the loop's loss_check_interval unless a variant asks.
    check_every: int = 1
    losses: list = field(default_factory=list)  # every fixed-batch step's loss (detached, not read)
    meter: EpochMeter = field(init=False)

    def __post_init__(self) -> None:
        self.meter = EpochMeter(self.device)

    @property
    def encoder(self) -> nn.Module:
        return self.step_module.encoder

    @property
    def head(self) -> nn.Module:
        return self.step_module.head

    def micro(self, batch_size: int) -> int:
        return micro_batch_size(self.micro_batch, self.device, batch_size, self.encoder.cfg, self.precision)

    def resolved_streams(self, batch_size: int) -> int:
        """The streams a run resolves for batches of ``batch_size`` (``streams.resolve_streams``)."""
        compiled = self.step_module.run_encoder is not self.step_module.encoder
        part = self.micro(batch_size) * activation_bytes(self.encoder.cfg, self.precision)
        return resolve_streams(self.streams, self.device, part_bytes=part, compiled=compiled)

    def settings(self, batch_size: int) -> StepSettings:
        """The engine's step settings for batches of ``batch_size`` images, as a run sets them."""
        return StepSettings(
            self.device,
            self.precision,
            self.micro(batch_size),
            ONE_PROCESS,
            self.check_every,
            self.resolved_streams(batch_size),
        )

    def step(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        """One ``train_step`` on a device-resident ``batch`` (augmentation included), reading the loss
        every ``check_every`` steps as the loop does. Returns the loss (detached)."""
        loss, _ = train_step(
            self.step_module,
            self.optimizer,
            self.regime,
            batch,
            gen,
            self.settings(batch["images"].shape[0]),
            meter=self.meter,
            check=(self.meter.batches + 1) % self.check_every == 0,
        )
        self.losses.append(loss)
        return loss

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor) -> torch.Tensor:
        """A no-grad forward of normalised uint8 ``images`` (B, 3, S, S) through encoder and head."""
        with autocast(self.device, self.precision):
            return self.head(self.step_module.run_encoder(normalize(to_float(images))))


@dataclass(frozen=True)
class TrainerSetup:
    """How the benchmark sets up one model to time (``make_trainer``), as a run would: the
    ``precision`` (fp32 | bf16), the AdamW variant (``optimizer``, one of ``OPTIMIZERS``), whether the
    encoder is ``torch.compile``d, the optimiser's ``lr`` and ``weight_decay``, the encoder class
    (``encoder_cls``: ViNy; the baseline's ``PlainViT``) and ``streams`` (as `viny train --streams`)."""

    precision: str = "fp32"
    optimizer: str = "loop"
    compile: bool = False
    lr: float = 1e-4
    weight_decay: float = 0.05
    encoder_cls: type[nn.Module] = ViNy
    streams: int = 0  # micro-batches side by side, as --streams (0: the loop's auto choice)


def make_trainer(
    regime: str,
    cfg: ViTConfig,
    data: ImageSet,
    device: torch.device,
    setup: TrainerSetup = TrainerSetup(),
    seed: int = 0,
) -> Trainer:
    """A fresh encoder (``setup.encoder_cls``, seeded with ``seed``) + ``regime``'s head for ``data`` +
    AdamW, set up with the training engine's pieces (CLS token frozen where unused, the loop's
    optimiser) as ``setup`` says."""
    reg = regime_named(regime)
    if setup.optimizer not in OPTIMIZERS:
        raise VinyError(
            f"unknown optimizer variant {setup.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}"
        )
    torch.manual_seed(seed)
    encoder = setup.encoder_cls(cfg)
    head = reg.make_head(cfg, RegimeData(train=data))
    unused_cls_frozen(encoder, reg)
    encoder.to(device), head.to(device)
    encoder.train(), head.train()
    params = list(encoder.parameters()) + list(head.parameters())
    opt = make_optimizer(params, setup.lr, setup.weight_decay, device, OPTIMIZERS[setup.optimizer])
    step = TrainStep(reg, encoder, head, setup.compile)
    return Trainer(
        reg,
        step,
        opt,
        device,
        setup.precision,
        check_every=loss_check_interval(device),
        streams=setup.streams,
    )


def run_epoch(
    trainer: Trainer, data: ImageSet, batch: int, seed: int = 0, epoch: int = 0
) -> dict[str, float]:
    """One epoch of ``data`` through ``train_one_epoch``, with the generator a run with ``seed`` draws
    at ``epoch`` (shuffled indexing of the cached set, per-batch transfer, augmentation, step).
    Returns the epoch's mean loss and statistics."""
    return train_one_epoch(
        trainer.step_module,
        trainer.optimizer,
        data,
        trainer.regime,
        epoch_generator(seed, epoch),
        trainer.settings(batch),
        batch_size=batch,
        meter=EpochMeter(trainer.device, ONE_PROCESS, epoch),
    )
