"""A CPU step's micro-batches side by side: ``streams`` threads, each with its share of torch's threads,
each running whole micro-batches (forward and backward), their gradients summed in micro-batch order.

Why: one micro-batch on all of a CPU's threads spends much of its time in what does not spread over
threads (Python between operations, the many small elementwise kernels, OpenMP's fork and join around
each). Two micro-batches at once, each on half the threads, keep every core busy: on two cores of an
AMD EPYC, ViNy's bf16 segmentation step (two micro-batches of 32) trained 1.05 to 1.20x the img/s of
the same micro-batches one after the other, in fp32 (four of 16) 1.04x (docs/performance.md,
"Micro-batches side by side"). Small micro-batches lose instead (``MIN_PART_BYTES``).

Determinism: each micro-batch's gradients come back on their own (``torch.autograd.grad``) and are
added into ``.grad`` in micro-batch order, as the sequential loop adds them; so a step gives the same
bits run after run, and the same bits as the sequential loop run with each stream's thread count
(the test: ``tests/trainers/test_streams.py``). Against the sequential loop on all threads it differs in float
rounding only, as any change of thread count does.

Where (auto): CPUs with at least two torch threads, micro-batches of ``MIN_PART_BYTES`` or more, not
a compiled encoder (torch.compile's tracing is not made for two threads at once), not data-parallel
ranks (DistributedDataParallel's gradient hooks expect ``backward``). ``--streams 1`` is the
sequential loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

AUTO_STREAMS = 2  # streams on a CPU with >= 2 torch threads (measured on 2 cores only: see above)
# Auto takes streams only for micro-batches with at least this many bytes of saved activations
# (``engine.activation_bytes`` x images): below it the threads' hand-offs and Python's lock cost more
# than they gain (the tiny test model, micro-batches of 4: 0.60x; the demo model's batch split in two
# halves side by side against the whole batch: 1.00x; ViNy's micro-batches of 16 in fp32 and of 32
# in bf16, about 210 MB each: 1.04x to 1.20x).
MIN_PART_BYTES = 128 * 1024**2

_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def resolve_streams(
    requested: int,
    device: torch.device,
    *,
    part_bytes: int = 0,
    compiled: bool = False,
    ranks: int = 1,
) -> int:
    """Micro-batches trained side by side: ``requested`` > 0 as given on a CPU (1 elsewhere); auto (0):
    ``AUTO_STREAMS`` on a CPU with at least that many torch threads, for an eager encoder in one
    process, when a micro-batch saves at least ``MIN_PART_BYTES`` of activations (``part_bytes``);
    else 1 (the sequential loop). A batch in one micro-batch steps as one whatever the streams."""
    if device.type != "cpu" or compiled or ranks > 1:
        return 1
    if requested > 0:
        return requested
    big = part_bytes >= MIN_PART_BYTES
    return AUTO_STREAMS if big and torch.get_num_threads() >= AUTO_STREAMS else 1


def _pool(streams: int) -> ThreadPoolExecutor:
    """The streams' threads, each set to its share of torch's threads (the caller's count now: a later
    ``torch.set_num_threads`` gets a new pool)."""
    share = max(1, torch.get_num_threads() // streams)
    key = (streams, share)
    if key not in _pools:
        _pools[key] = ThreadPoolExecutor(
            streams, thread_name_prefix="viny-stream", initializer=torch.set_num_threads, initargs=(share,)
        )
    return _pools[key]


def trainable_parameters(step) -> list[torch.Tensor]:
    """What a step's gradients are taken with respect to: its own ``trainable_parameters()`` where it
    has one (a fleet's ``Stack``), else its parameters that require gradients."""
    own = getattr(step, "trainable_parameters", None)
    return own() if own is not None else [p for p in step.parameters() if p.requires_grad]


def run_side_by_side(
    step: nn.Module, parts: Sequence, run_part: Callable[[object], tuple], streams: int
) -> list[tuple]:
    """``run_part(part) -> (loss_to_backpropagate, *rest)`` for every part on ``streams`` threads; each
    part's gradients with respect to ``step``'s trainable parameters (``trainable_parameters``) are
    added into their ``.grad`` in part order (a parameter no part reaches keeps its ``.grad``). Returns
    each part's ``rest``, in order. An exception in a part is raised here."""
    params = trainable_parameters(step)
    grad_enabled = torch.is_grad_enabled()

    def one(part):
        with torch.set_grad_enabled(grad_enabled):
            backprop, *rest = run_part(part)
            grads = torch.autograd.grad(backprop, params, allow_unused=True)
        return grads, rest

    results = []
    for grads, rest in _pool(streams).map(one, parts):  # in part order, as each finishes
        for p, g in zip(params, grads, strict=True):
            if g is None:
                continue
            if p.grad is None:  # as backward's accumulation: the parameter's own layout
                p.grad = g if g.stride() == p.stride() else torch.empty_like(p).copy_(g)
            else:
                p.grad.add_(g)
        results.append(rest)
    return results
