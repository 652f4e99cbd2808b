"""What a regime supplies to the one generic loop: its data, its head, its loss, its evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..config import NoOptions, TrainConfig
from ..data.augment import normalize
from ..data.base import ImageSet
from ..errors import VinyError
from ..model import ViTConfig
from ..registry import REGIMES


@dataclass
class RegimeData:
    """A regime's training images and (optionally) the held-out images it is evaluated on."""

    train: ImageSet
    test: ImageSet | None = None
    info: dict = field(default_factory=dict)  # provenance written into the run folder


class Regime:
    """Base class of a training regime: everything viny knows about it, in one place.

    A subclass sets the facts below and implements the hooks (data, head, batch preparation, loss;
    optionally evaluation, outputs and the summary), then registers itself with ``@register``: config
    resolution, `viny train <name>`, the benchmark, plans, sweeps and reports all read it from
    ``viny_probe.registry.REGIMES``."""

    name: str = ""
    # Which schedule row of a preset it trains with by default (config.PHASES).
    phase: str = "intermediate"
    # Dataset used when no --dataset is given: an embedded one, so every regime runs with no data.
    default_dataset: str = "toy-pets"
    # One line for `viny train --help`.
    description: str = ""
    # Whether the regime's head reads the CLS token. Only then is it prepended to the patch tokens
    # (the study's token path); elsewhere it is frozen, as it gets no gradient.
    uses_cls: bool = False
    # The batch augmentations it offers (config.AUGMENTS), its default first: ``TrainConfig.augment``.
    augments: tuple[str, ...] = ("flip",)
    # Its own options: a dataclass, one typed field with a default and ``metadata={"help": ...}`` per
    # option (config.option_specs). `viny train NAME` offers exactly these as flags; the values reach
    # the hooks as ``cfg.options`` (an instance of it), config.json records them, --resume compares them.
    Options: type = NoOptions

    def load_data(self, cfg: TrainConfig, model_cfg: ViTConfig) -> RegimeData:
        raise NotImplementedError

    def make_head(self, model_cfg: ViTConfig, data: RegimeData) -> nn.Module:
        raise NotImplementedError

    def prepare(self, batch: dict[str, torch.Tensor], gen: torch.Generator) -> dict[str, torch.Tensor]:
        """Augment one training batch (uint8 ``images`` (B, 3, S, S) plus ``labels``/``masks`` where the
        data has them) into model inputs and targets, every tensor with the batch as its first axis.
        All randomness (augmentation, masking, MixUp) is drawn here, from ``gen``, for the whole global
        batch, so data-parallel ranks can each take a slice and still match a one-process run."""
        raise NotImplementedError

    def compute_loss(
        self, encoder: nn.Module, head: nn.Module, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Prepared inputs -> scalar loss (a mean over the batch) and per-batch statistics as detached
        0-d tensors: the loop sums them on the device and reads them only now and then (never per step).

        By default ``loss(predict(...))``. A regime may override this instead of the two (a plugin's
        regime, say): it then trains alone as before, and a fleet of it runs through vmap."""
        return self.loss(self.predict(encoder, head, inputs), inputs)

    def predict(self, encoder: nn.Module, head: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The model's part of the loss: prepared inputs -> the head's outputs. Written once for a run
        alone and a fleet: in a fleet, ``encoder`` and ``head`` are ``model.Stacked`` (K members'
        stacked parameters), every input and the output have the members first (K, B, ...); so it only
        calls the encoder and the head and reads their parameters (``head.mask_token``)."""
        raise NotImplementedError

    def loss(
        self, outputs: torch.Tensor, inputs: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One run's ``predict`` outputs and prepared inputs -> ``compute_loss``'s loss and statistics.
        A fleet maps it over its members (``torch.func.vmap``)."""
        raise NotImplementedError

    @classmethod
    def stacks(cls) -> bool:
        """Whether a fleet can run it stacked (``trainers.fleet.Stack``): its loss is ``predict`` then
        ``loss``, not a ``compute_loss`` of its own."""
        return cls.compute_loss is Regime.compute_loss and cls.predict is not Regime.predict

    @torch.no_grad()
    def evaluate(self, encoder: nn.Module, head: nn.Module, data: RegimeData, batch_size: int) -> dict:
        """Held-out metrics at the end of training (no augmentation). Default: none."""
        return {}

    def finish(
        self, run_dir: Path, encoder: nn.Module, head: nn.Module, data: RegimeData, results: dict
    ) -> None:
        """Write regime-specific outputs (tables, pictures) into the run folder."""

    # The columns its held-out results give a sweep's results.csv and the report's table of stages
    # (``result_row`` fills them from results.json): by default none of its own.
    result_columns: tuple[str, ...] = ()

    @classmethod
    def result_row(cls, results: dict) -> dict:
        """Its ``result_columns`` from a run's results.json (``{"test_accuracy": 0.9, ...}``): by default
        the top-level values of those names."""
        return {c: results[c] for c in cls.result_columns if c in results}

    def headline(self, results: dict) -> dict[str, float]:
        """The few held-out numbers a one-line summary shows (the demo's table): by default every
        scalar result."""
        return {k: v for k, v in results.items() if isinstance(v, float)}

    def summary(self, results: dict) -> object | None:
        """What `viny train` prints of the held-out results (anything rich can print): by default
        the scalar metrics, rounded."""
        scalars = {k: round(v, 4) for k, v in results.items() if isinstance(v, float)}
        return scalars or None

    # What `viny bench` counts for the head (viny_probe.perf.flops): its width in the study (None: the
    # head has no classes), and the multiply-adds of its matrix products per image at a given width.
    bench_classes: int | None = None

    def head_macs(self, model_cfg: ViTConfig, num_classes: int | None) -> int:
        raise VinyError(
            f"regime {self.name!r} does not count its head's multiply-adds (Regime.head_macs), "
            "which `viny bench` needs for its FLOPs"
        )


# The registry of regimes (name -> Regime subclass); see viny_probe.registry.
REGISTRY = REGIMES


def register(cls: type[Regime]) -> type[Regime]:
    """Class decorator: register a Regime subclass under its ``name``."""
    return REGIMES.register(cls.name, cls)


def encoder_input(images: torch.Tensor, inputs: str) -> torch.Tensor:
    """Float [0, 1] images (B, 3, S, S) -> what the encoder reads: ImageNet-normalised (``normalized``)
    or as they are (``raw``, the study's code in its Pets stages)."""
    return normalize(images) if inputs == "normalized" else images


def batched(n: int, batch_size: int):
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def device_batch(
    data: ImageSet, index: torch.Tensor | slice, device: torch.device
) -> dict[str, torch.Tensor]:
    """The images (and labels/masks) at ``index`` on ``device``."""
    batch = {"images": data.images[index].to(device, non_blocking=True)}
    if data.labels is not None:
        batch["labels"] = data.labels[index].to(device, non_blocking=True)
    if data.masks is not None:
        batch["masks"] = data.masks[index].to(device, non_blocking=True)
    if data.extents is not None:
        batch["extents"] = data.extents[index].to(device, non_blocking=True)
    return batch
