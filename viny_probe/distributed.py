"""Data-parallel training through torchrun, with no extra flags: the torchrun environment decides.

Without WORLD_SIZE (or with 1) everything here is a no-op and viny runs as one process. Under
``torchrun --nproc-per-node N viny train ...`` each process joins a group (nccl on CUDA, gloo on CPU),
takes its slice of every global batch, and rank 0 alone writes the run folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device."""
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def barrier(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()


def sum_across_ranks(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Elementwise sum of ``values`` over all ranks (itself when running as one process)."""
    if not info.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values


def even_slices(n: int, parts: int) -> list[slice]:
    """``n`` items cut into ``parts`` contiguous slices whose sizes differ by at most one."""
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False)]


@dataclass(frozen=True)
class Shard:
    """This rank's part of a prepared global batch.

    ``inputs``: what the rank runs forward on; ``images``: how many of the global batch's images are its
    own (0 when the batch has fewer images than there are ranks: ``inputs`` is then a one-image stand-in);
    ``loss_scale``: the factor on the rank's mean loss, ``images * world_size / global_images`` (0 for
    the stand-in), so that DistributedDataParallel's average of the ranks' gradients is the gradient of
    the whole global batch's mean loss even when the slices are unequal."""

    inputs: dict[str, torch.Tensor]
    images: int
    loss_scale: float


def shard(inputs: dict[str, torch.Tensor], info: DistInfo) -> Shard:
    """This rank's contiguous slice of a prepared global batch (sizes differ by at most one).

    A rank whose slice is empty still has to run a forward and a backward, or the gradient all-reduce
    of the other ranks would wait for it forever: it gets the batch's first image with loss scale 0,
    which gives every parameter an exact zero gradient and the epoch metrics a zero weight."""
    n = next(iter(inputs.values())).shape[0]
    if not info.enabled:
        return Shard(inputs, n, 1.0)
    part = even_slices(n, info.world_size)[info.rank]
    local = part.stop - part.start
    if local == 0:
        return Shard({k: v[:1] for k, v in inputs.items()}, 0, 0.0)
    return Shard({k: v[part] for k, v in inputs.items()}, local, local * info.world_size / n)
