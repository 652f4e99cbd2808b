"""One training step and one training epoch, the way every regime runs them (MAE's ``engine_pretrain``).

``train_one_epoch`` is what ``loop.train`` runs each epoch and what the benchmark times as its whole-
epoch figure; ``train_step`` is its body for one batch, which the benchmark also times on a fixed
batch. Neither knows about run folders, checkpoints or schedules: ``loop`` sets those up around them.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..data.base import ImageSet
from ..errors import VinyError
from ..model import ViTConfig
from .base import Regime, device_batch
from .streams import run_side_by_side


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """One generator per (seed, epoch): batch order, augmentation and masking of that epoch. Resuming
    at any epoch boundary therefore replays exactly what an uninterrupted run would have drawn."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def loss_check_interval(device: torch.device) -> int:
    """Steps between reads of the loss on the host. Reading it waits for the device to finish, which
    on a GPU stalls the queue of kernels every step; on a CPU it costs nothing, so every step is
    checked there and a non-finite loss stops the run before its update is applied."""
    return 1 if device.type == "cpu" else 25


ACTIVATION_BUDGET = 256 * 1024**2  # bytes of saved activations per micro-batch on a CPU


def micro_batch_size(
    requested: int,
    device: torch.device,
    batch_size: int,
    mcfg: ViTConfig,
    precision: str = "fp32",
    members: int = 1,
) -> int:
    """Images per forward/backward. ``requested`` > 0 is taken as given (at most the batch). Auto (0):
    the whole batch on a GPU; on a CPU as many images as keep the saved activations under
    ``ACTIVATION_BUDGET``, evened out over the batch, bf16 activations counting half (ViNy at batch
    64: 4 x 16 in fp32, 2 x 32 in bf16; the demo model: 64).
    Smaller live activations keep a CPU step's peak memory down, and a CPU step in such parts measured
    no slower than the whole batch at once (figures in docs/performance.md). A fleet of ``members``
    runs trains that many images per batch position at once, so each counts ``members`` times."""
    if requested > 0:
        return min(requested, batch_size)
    if device.type != "cpu":
        return batch_size
    fits = max(1, ACTIVATION_BUDGET // activation_bytes(mcfg, precision, members))
    if fits >= batch_size:
        return batch_size
    parts = math.ceil(batch_size / fits)
    return math.ceil(batch_size / parts)


def activation_bytes(mcfg: ViTConfig, precision: str = "fp32", members: int = 1) -> int:
    """Saved activations per image of a batch position (``members`` images in a fleet), bf16 half."""
    return members * mcfg.activation_bytes_per_image() // (2 if precision == "bf16" else 1)


def unused_cls_frozen(encoder: nn.Module, regime: Regime) -> None:
    """Train the CLS token only where it enters the blocks: frozen elsewhere, the optimiser leaves it as
    it was (weight decay included) and DistributedDataParallel sees no unused parameter."""
    encoder.cls_token.requires_grad_(regime.uses_cls or encoder.cfg.cls_in_sequence)


# Device types with torch's fused AdamW.
FUSED_ADAMW_DEVICES = ("cuda", "cpu")


def make_optimizer(
    params, lr: float, weight_decay: float, device: torch.device, options: dict | None = None
) -> torch.optim.AdamW:
    """The loop's AdamW: fused on CUDA and on CPUs (one kernel per parameter, or for all of them on
    CUDA, instead of about ten per parameter: ViNy's step 3.5 ms against 11.9 ms for torch's default
    on a CPU, docs/performance.md), torch's default elsewhere. ``options`` replace that choice (the
    benchmark's variants)."""
    options = {"fused": device.type in FUSED_ADAMW_DEVICES} if options is None else options
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **options)


class TrainStep(nn.Module):
    """Encoder + head + the regime's loss as one module, so DistributedDataParallel sees one forward.

    ``run_encoder`` is the encoder, or its ``torch.compile`` wrapper with ``use_compile``."""

    def __init__(self, regime: Regime, encoder: nn.Module, head: nn.Module, use_compile: bool = False):
        super().__init__()
        self.regime, self.encoder, self.head = regime, encoder, head
        self.run_encoder = torch.compile(encoder) if use_compile else encoder

    def forward(self, inputs: dict[str, torch.Tensor]):
        return self.regime.compute_loss(self.run_encoder, self.head, inputs)


def forward_backward(
    step,
    inputs: dict,
    micro_batch: int,
    device,
    precision: str,
    no_sync=None,
    loss_scale: float = 1.0,
    axis: int = 0,
    streams: int = 1,
):
    """One batch's forward and backward, in micro-batches of at most ``micro_batch`` images whose
    gradients accumulate to the whole batch's: each part's loss is weighted by its share of the
    images, which is exact because every regime's loss is a mean in which each image weighs the same.
    ``no_sync`` (DistributedDataParallel.no_sync) defers the gradient all-reduce to the last part.
    ``loss_scale`` multiplies what is backpropagated, not what is returned: a data-parallel rank's
    ``distributed.Shard.loss_scale``, which makes the ranks' averaged gradients the global batch's.
    Returns the batch's loss (detached) and statistics, as the same weighted means.

    ``axis``: the inputs' batch axis. A fleet's inputs are (members, batch, ...) and its step returns
    one loss per member: their sum is backpropagated, which gives each member its own gradients.

    ``streams`` > 1 (``streams.resolve_streams``; not with ``no_sync``): the micro-batches run that many
    side by side on a CPU, their gradients added in micro-batch order (``streams.run_side_by_side``)."""
    n = next(iter(inputs.values())).shape[axis]
    parts = distributed.even_slices(n, max(1, math.ceil(n / micro_batch)))

    def run_part(part: slice):
        """The part's forward: what to backpropagate, its loss (detached) and statistics, its weight."""
        weight = (part.stop - part.start) / n
        factor = weight * loss_scale
        with autocast(device, precision):
            loss, stats = step(
                {k: v.narrow(axis, part.start, part.stop - part.start) for k, v in inputs.items()}
            )
        scaled = loss * factor if factor != 1.0 else loss
        return (scaled.sum() if scaled.ndim else scaled), loss.detach() * weight, stats, weight

    if streams > 1 and len(parts) > 1 and no_sync is None:
        outcomes = run_side_by_side(step, parts, run_part, streams)
    else:
        outcomes = []
        for i, part in enumerate(parts):
            sync = no_sync() if no_sync is not None and i < len(parts) - 1 else contextlib.nullcontext()
            with sync:
                backprop, *rest = run_part(part)
                backprop.backward()
            outcomes.append(rest)
    total, stats_total = None, {}
    for loss, stats, weight in outcomes:
        total = loss if total is None else total + loss
        _accumulate(stats_total, stats, weight, loss.device)
    return total, stats_total


def _accumulate(sums: dict, values: dict, factor, device, dtype: torch.dtype | None = None) -> None:
    """sums[k] += values[k] * factor for every key, as detached tensors on ``device``."""
    for k, v in values.items():
        v = torch.as_tensor(v, device=device).detach()
        v = (v if dtype is None else v.to(dtype)) * factor
        sums[k] = sums[k] + v if k in sums else v


def non_finite_error(epoch: int, where: str, last_checkpoint: Path | None) -> VinyError:
    """What stops a run at a non-finite loss (0-based ``epoch``; ``where``: "batch N"). It names the
    last good checkpoint only where one was saved (a run that fails in its first epoch has none)."""
    if last_checkpoint is None:
        kept = ""
    elif Path(last_checkpoint).is_file():
        kept = f" The last good checkpoint is kept in {last_checkpoint}."
    else:
        kept = f" No checkpoint was saved yet: {last_checkpoint} does not exist."
    return VinyError(
        f"non-finite loss at epoch {epoch + 1}, {where}; stopped.{kept} Try a lower --lr or --precision fp32."
    )


class EpochMeter:
    """Running sums of one epoch's loss and statistics, kept on the device (no host sync per step).

    ``check`` reads the losses added since the last check, once, and stops the run at the first
    non-finite one, naming its batch; ``means`` gives the epoch's averages, summed over all ranks.
    ``last_checkpoint``, where the run keeps one, is named in that error."""

    def __init__(
        self,
        device: torch.device,
        info: distributed.DistInfo = distributed.DistInfo(),
        epoch: int = 0,
        last_checkpoint: Path | None = None,
    ) -> None:
        self.device, self.info, self.epoch, self.last_checkpoint = device, info, epoch, last_checkpoint
        self.sums: dict[str, torch.Tensor] = {}
        self.count = torch.zeros((), dtype=torch.float64, device=device)  # this rank's images
        self.pending: list[torch.Tensor] = []
        self.batches = 0  # batches added so far this epoch
        self.seen = 0  # images of the global batches so far (host-side, for the progress bar)

    def add(self, loss: torch.Tensor, stats: dict, local: int, global_batch: int) -> None:
        self.pending.append(loss.detach().float())
        _accumulate(self.sums, {"loss": loss, **stats}, local, self.device, torch.float64)
        self.count += local
        self.batches += 1
        self.seen += global_batch

    def check(self) -> float:
        """Stop at a non-finite loss among those added since the last check; else the running mean loss."""
        finite = torch.isfinite(torch.stack(self.pending))
        bad = (~finite).any().to(torch.float64).reshape(1)
        bad = distributed.sum_across_ranks(bad, self.info)
        if float(bad) > 0:
            first = self.batches - len(self.pending) + 1
            if not bool(finite.all()):
                first += int((~finite).nonzero()[0, 0])
                where = f"batch {first}"
            else:
                where = f"batch {first}..{self.batches} (on another rank)"
            raise non_finite_error(self.epoch, where, self.last_checkpoint)
        self.pending.clear()
        return float(self.sums["loss"] / self.count.clamp(min=1))  # 0 on a rank given no images yet

    def means(self) -> dict[str, float]:
        keys = list(self.sums)
        totals = distributed.sum_across_ranks(
            torch.stack([self.sums[k] for k in keys] + [self.count]), self.info
        )
        return {k: float(v) for k, v in zip(keys, (totals[:-1] / totals[-1]).tolist(), strict=True)}


@dataclass(frozen=True)
class StepSettings:
    """How every step of one run is taken, set once per run (``loop.Run.settings``, the benchmark's
    ``harness.Trainer``) and read by ``train_step`` and ``train_one_epoch``.

    device: where the batches and the model are; precision: ``fp32`` or ``bf16`` (autocast);
    micro_batch: images per forward/backward (``micro_batch_size``: the run's choice, resolved);
    info: this process's rank among the data-parallel ones (one process by default);
    check_every: steps between reads of the loss on the host; None: ``loss_check_interval(device)``;
    streams: micro-batches trained side by side (``streams.resolve_streams``: the run's choice, resolved).
    """

    device: torch.device
    precision: str
    micro_batch: int
    info: distributed.DistInfo = field(default_factory=distributed.DistInfo)
    check_every: int | None = None
    streams: int = 1

    def __post_init__(self) -> None:
        if self.check_every is None:
            object.__setattr__(self, "check_every", loss_check_interval(self.device))


def train_step(
    step: nn.Module,
    optimizer: torch.optim.Optimizer,
    regime: Regime,
    batch: dict[str, torch.Tensor],
    gen: torch.Generator,
    settings: StepSettings,
    *,
    meter: EpochMeter,
    check: bool,
) -> tuple[torch.Tensor, float | None]:
    """One optimiser step on one global batch (uint8 ``images`` (B, 3, S, S) and its labels/masks on
    ``settings.device``): the regime's augmentation for the whole batch from ``gen``, this rank's shard,
    forward and backward in micro-batches, the meter, and with ``check`` a read of the losses (before
    the update, so a non-finite loss never reaches the weights). Returns this rank's loss (detached,
    not read) and, with ``check``, the running mean loss."""
    info = settings.info
    part = distributed.shard(regime.prepare(batch, gen), info)
    optimizer.zero_grad(set_to_none=True)
    no_sync = step.no_sync if info.enabled else None
    loss, stats = forward_backward(
        step,
        part.inputs,
        settings.micro_batch,
        settings.device,
        settings.precision,
        no_sync,
        part.loss_scale,
        streams=settings.streams,
    )
    meter.add(loss, stats, part.images, batch["images"].shape[0])
    shown = meter.check() if check else None
    optimizer.step()
    return loss, shown


def epoch_order(gen: torch.Generator, train_set: ImageSet) -> torch.Tensor:
    """The order an epoch visits ``train_set`` in: the epoch generator's permutation (a lone run and
    every fleet member draw it the same way, so a member equals its run alone)."""
    return torch.randperm(len(train_set), generator=gen).to(train_set.images.device)


def epoch_batches(n: int, batch_size: int, check_every: int) -> Iterator[tuple[int, bool]]:
    """``(start, check)`` of every batch of an epoch over ``n`` images, for a lone run and a fleet alike:
    the batch is ``order[start : start + batch_size]``; ``check``: read the loss on the host after its
    step (every ``check_every`` steps and after the last, ``loss_check_interval``)."""
    for i, start in enumerate(range(0, n, batch_size)):
        yield start, (i + 1) % check_every == 0 or start + batch_size >= n


def epoch_pass(
    train_set: ImageSet, gen: torch.Generator, batch_size: int, device: torch.device, check_every: int
) -> Iterator[tuple[dict[str, torch.Tensor], bool]]:
    """One epoch of one run, batch by batch, as a run alone (``train_one_epoch``) and a fleet member
    (``fleet``) both go through it: the epoch's order drawn from ``gen`` (``epoch_order``), then each
    batch of ``batch_size`` images (uint8, on ``device``) with whether to read the loss after its step
    (``epoch_batches``). The order is drawn at the first batch, before the run's augmentation of it
    draws from ``gen`` too, so a member draws exactly what its run alone draws."""
    order = epoch_order(gen, train_set)
    for start, check in epoch_batches(len(train_set), batch_size, check_every):
        yield device_batch(train_set, order[start : start + batch_size], device), check


def train_one_epoch(
    step: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_set: ImageSet,
    regime: Regime,
    gen: torch.Generator,
    settings: StepSettings,
    *,
    batch_size: int,
    meter: EpochMeter,
    progress: Callable[[int, float | None, float], None] | None = None,
) -> dict[str, float]:
    """One pass over ``train_set`` in batches of ``batch_size``, in the order ``gen`` draws (the epoch's
    generator, ``epoch_generator(seed, epoch)``, which then draws that epoch's augmentation too).

    ``step``: a ``TrainStep`` (or its DistributedDataParallel wrapper); ``settings``: the run's
    ``StepSettings``; ``meter``: a fresh ``EpochMeter``; the loss is read every
    ``settings.check_every`` steps and after the last batch (``loss_check_interval``).
    ``progress(images, loss or None, img_per_s)`` is called after every step. Returns the epoch's mean
    loss and statistics over all ranks' images."""
    step.train()
    t0 = time.perf_counter()
    for batch, check in epoch_pass(train_set, gen, batch_size, settings.device, settings.check_every):
        _, shown = train_step(step, optimizer, regime, batch, gen, settings, meter=meter, check=check)
        if progress is not None:
            progress(batch["images"].shape[0], shown, meter.seen / (time.perf_counter() - t0))
    return meter.means()
