"""Fleets: several runs of one regime trained together in one process, each as if alone.

A sweep's waves are many runs of the same small model that differ only in their seed, their parent
checkpoint, their data split or their number of training images. One such run is launch-bound on a GPU
(a few % of its peak at the study's batch of 64), so a fleet trains K of them at once: every parameter
is stacked along a leading member axis, the regime's forward and loss run once for all members, the
sum of the members' losses is backpropagated (each member's gradients are its own: members share
nothing), and one AdamW step updates all of them (``adamw.StackedAdamW``: AdamW is elementwise, so a
stacked step is each member's own step, with each member's own learning rate and step count).

The forward takes one of two paths (``Stack.path``), both from the one model definition: "stacked"
(the default) calls the regime's ``predict`` on ``model.Stacked`` views of the stacked parameters, so
each module runs its ``stacked_forward`` next to its ``forward`` (one batched matrix product per
layer for all members, attention on the members' batches folded together, (K * B, heads, T, d),
through the kernel a run alone uses), then maps the regime's ``loss`` over the members with vmap;
"vmap" runs the one ``TrainStep`` (the first member's) under ``torch.func.vmap`` (the same code a run
alone uses), with attention written out. vmap's layout copies made up about a third of a large
fleet's step on a GPU (docs/performance.md, fleets). A regime whose loss is a ``compute_loss`` of its
own (a plugin's), or whose head has no ``stacked_forward``, goes through vmap, and says so
(``Stack.note``) in the fleet's progress line and in `viny bench --fleet`.

Each member keeps everything that makes it itself: its ``loop.Run`` (run folder, config, data,
checkpoints, metrics, evaluation, final files, exactly as a run alone writes them), its seed (batch
order, augmentation and masks are drawn from its own ``epoch_generator`` by its own regime instance),
its train subset and size, its parent, and its own place in its training: its epoch, that epoch's
batches (``engine.epoch_pass``, the same iteration a run alone goes through), its learning rate (its
own schedule, stepped at its own epoch ends) and its AdamW step count. A member with fewer training
images takes fewer steps per epoch: it reaches its epoch ends, checkpoints, milestones and last epoch
at its own steps, and leaves the fleet when its epochs are done (the stack shrinks, ``Stack.keep``);
the others go on. A member's numbers equal training it alone, to float tolerance
(``tests/trainers/test_fleet.py``, every regime, members of different sizes).

Short batches: every member steps once per fleet step, on its own next batch, but the members' batches
stack only where their shapes are equal. A member at its short last batch (train size not a multiple of
the batch size) beside members at full ones makes the step split in sub-steps, one per batch shape
(largest first): each sub-step runs the whole stack, the members of the other shapes given a copy of a
stepping member's inputs and left untouched by the update (``active`` in ``StackedAdamW.step``; their
losses are not counted). This wastes the other members' compute on such sub-steps (one in
``steps per epoch`` per member) and keeps the stack, the CUDA graph of the full-batch step (replayed
with a mask) and every member's numbers as they are alone. Padding short batches would have changed
the members' means and augmentation draws; sub-stacks of the members would have cost a copy of their
parameters and a graph per subset.

Grouping: runs train together when their batches can stack and their steps are the same code: the
same regime, model, recipe, schedule, batch size, precision and micro-batches (``fleet_key``: the
resolved config up to ``MEMBER_FIELDS``, and equal parameter shapes). The number of training images is
a member field: it changes only how many steps a member takes. The schedule (epochs, learning rate,
milestones, weight decay) stays in the key: the stacked AdamW keeps one weight decay, and the runs of
one wave share their schedule in every plan (the rate per member is for members at different steps of
the same schedule), so per-member schedules would buy no fleet a plan forms.

Resume: members resumed from different epochs (a fleet killed while its members saved different
epochs) train as one fleet, each from its own epoch, in the micro-batches of the whole fleet (the
group's size), as they would have uninterrupted. A resumed fleet equals the uninterrupted one exactly
(``tests/faults/test_sweep_faults.py``; ``tests/trainers/test_fleet.py`` on both paths) as long as the device's batched kernels compute each member's
slice the same whatever the other members (so on this CPU, in fp32 and bf16).

A member whose loss goes non-finite stops alone, with the message a run alone gives, before its
update is applied on a CPU (on a GPU, at the next read of the losses: ``loss_check_interval``): it
is taken out of the stack and the others go on.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..config import TrainConfig
from ..errors import VinyError
from ..model import ATTENTION, Stacked, StackedParams, ViNy, count_parameters, has_stacked_forward
from ..progress import epoch_progress
from .adamw import StackedAdamW
from .engine import (
    TrainStep,
    activation_bytes,
    epoch_generator,
    epoch_pass,
    forward_backward,
    loss_check_interval,
    micro_batch_size,
    non_finite_error,
)
from .loop import LAST, Run, RunResult, _resident, resolve_device, run_model_config, train_epochs
from .streams import resolve_streams

# Config fields a fleet's members may differ in. Everything else in the resolved config (regime,
# model, schedule, batch size, recipe, dataset, precision, ...) must be equal; see ``fleet_key``.
MEMBER_FIELDS = ("seed", "draw", "split_seed", "init", "train_size", "test_size", "data_root")


@dataclass
class MemberResult:
    """What became of one member: its ``RunResult``, or the exception that stopped it."""

    run_dir: Path
    result: RunResult | None = None
    error: BaseException | None = None
    fleet_size: int = 1  # how many runs it trained alongside (itself included) when it began


def fleet_config_key(cfg: TrainConfig) -> str:
    """What of a (resolved) config must be equal for runs to train as one fleet, as a string: all but
    ``MEMBER_FIELDS`` (the train size among them: members step at their own pace)."""
    config = cfg.resolved().to_dict()
    return json.dumps({k: v for k, v in config.items() if k not in MEMBER_FIELDS}, sort_keys=True)


def auto_fleet_size(cfg: TrainConfig, cap: int = 64) -> int:
    """How many runs of ``cfg`` to train at once on a GPU: as many as half its free memory holds (the
    weights, gradients and AdamW moments of each member plus its batch's saved activations,
    ``ViTConfig.activation_bytes_per_image``'s estimate), at most ``cap``. On a CPU, 1: a CPU step is
    compute-bound already, and a fleet measured no faster there (docs/performance.md)."""
    cfg = cfg.resolved()
    device = resolve_device(cfg.device)
    if device.type != "cuda":
        return 1
    mcfg = run_model_config(cfg)
    weights = 4 * 4 * count_parameters(ViNy(mcfg))  # weights, gradients, two moments, fp32
    activations = cfg.batch_size * mcfg.activation_bytes_per_image() // (2 if cfg.precision == "bf16" else 1)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(cap, int(free // 2 // (weights + activations))))


def fleet_key(run: Run) -> tuple:
    """Runs with equal keys can train in one fleet: the same resolved config up to ``MEMBER_FIELDS``
    and the same parameter shapes (a head's classes). Their numbers of training images and their first
    epochs may differ: each member goes through its own epochs."""
    shapes = tuple(tuple(p.shape) for p in _parameters(run))
    return (fleet_config_key(run.cfg), shapes)


def group_runs(runs: list[Run]) -> list[list[Run]]:
    """The runs split into fleets of equal ``fleet_key``, in the order of their first member."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(fleet_key(run), []).append(run)
    return list(groups.values())


def describe_fleet(names: list[str], starts: list[int], epochs: int) -> str:
    """What of a sweep's fleet (its stages' ``names``, at epochs ``starts``) trains together, in words:
    "2 stages as one fleet", or for members resumed at different epochs "2 stages as one fleet, each
    from its own epoch (b at 1, a at 2)"; members with every epoch trained already are named apart."""
    training = [(n, s) for n, s in zip(names, starts, strict=True) if s < epochs]
    if len(training) == 1:
        text = f"{training[0][0]} alone"
    elif training:
        text = f"{len(training)} stages as one fleet"
        if len({s for _, s in training}) > 1:
            at = sorted(training, key=lambda t: t[1])
            text += f", each from its own epoch ({', '.join(f'{n} at {s}' for n, s in at)})"
    else:
        text = ""
    done = [n for n, s in zip(names, starts, strict=True) if s >= epochs]
    if done:
        text += ("; " if text else "") + f"{', '.join(done)}: every epoch trained already"
    return text


def _parameters(run: Run) -> list[nn.Parameter]:
    """The run's parameters in its optimiser's order (encoder, then head)."""
    return list(run.encoder.parameters()) + list(run.head.parameters())


PATHS = ("stacked", "vmap")


class Stack:
    """The members' parameters stacked along a leading axis, their AdamW state likewise
    (``adamw.StackedAdamW``: a learning rate and a step count per member), and the regime's forward
    and loss run over them on one of two ``PATHS``. ``unstack`` copies members' slices back into their
    own modules and optimisers, so each member's checkpoint is written as alone.

    ``path`` "stacked" (the default, ``Stack.path``): the model's own ``stacked_forward`` (model.py,
    heads.py) on the stacked parameters, called by the regime's ``predict``, then its ``loss`` mapped
    over the members by vmap; "vmap": the one ``TrainStep`` (the first member's) run over them by
    ``torch.func.vmap``. A regime with a ``compute_loss`` of its own, or a head or encoder without a
    ``stacked_forward`` (a plugin's), goes through vmap whatever the setting; ``note`` then says why.

    ``graphs`` (CUDA only): forward, backward and the AdamW step of a full batch are captured once as
    a CUDA graph and replayed (``step``): the per-operation dispatch (vmap's most of all), paid on
    the host every step, is what bounds a fleet's step on a GPU otherwise. The graph reads the
    members' learning rates and which members step (``active``) from tensors, so a milestone or a
    member's short batch does not drop it. The first ``WARMUP`` full batches, every short batch, and the steps after a change of
    members run eagerly."""

    WARMUP = 3
    # The attention kernel inside the vmapped step (model.ATTENTION): "math" (written out) or "auto"
    # (torch's fused kernel on CUDA). Fleets write it out: torch's fused kernels under vmap failed
    # in fp32 on a GPU ("LSE is not correctly aligned") (docs/performance.md, fleets). The stacked
    # path calls no kernel under vmap and takes ``model.attend``'s choice, as a run alone.
    attention = "math"
    # The forward's path when the constructor is given none: one of PATHS.
    path = "stacked"

    def __init__(self, runs: list[Run], graphs: bool = False, path: str | None = None) -> None:
        self.runs = list(runs)
        first = runs[0]
        self.device = first.device
        self.graphs = graphs and graphs_available(self.device)
        self.weight_decay = first.cfg.weight_decay  # equal for all members (fleet_key)
        self.template = TrainStep(first.regime, first.encoder, first.head)
        self.path, self.note = stack_path(first.regime, first.encoder, first.head, path or self.path)
        self.names = [n for n, _ in self.template.named_parameters()]
        own = [_parameters(r) for r in runs]  # in the order of self.names: encoder, then head
        self.params = {
            n: torch.stack([o[j].detach() for o in own]).requires_grad_(own[0][j].requires_grad)
            for j, n in enumerate(self.names)
        }
        rates = [r.optimizer.param_groups[0]["lr"] for r in runs]  # as each member's schedule left it
        self.optimizer = StackedAdamW([self.params[n] for n in self.names], rates, self.weight_decay)
        self._load_optimizer_states()
        # tie_weights=False: the template holds its encoder twice (``encoder``, ``run_encoder``); tying
        # would restore the second name last and leave the member's modules holding the stacked tensors.
        if self.path == "stacked":
            forward = self._stacked
            self._member_losses = torch.func.vmap(first.regime.loss)
        else:
            one = functools.partial(torch.func.functional_call, self.template, tie_weights=False)
            forward = torch.func.vmap(lambda params, inputs: one(params, (inputs,)))
        self._forward = torch.compile(forward) if first.cfg.compile else forward
        self.streams = 1  # micro-batches side by side: ``use_streams``
        self._forget_graph()

    def __len__(self) -> int:
        return len(self.runs)

    def __call__(self, inputs: dict[str, torch.Tensor]):
        """(members, batch, ...) inputs -> (members,) losses and per-member statistics."""
        if self.path == "stacked":
            return self._forward(self.params, inputs)
        token = ATTENTION.set(self.attention)
        try:
            return self._forward(self.params, inputs)
        finally:
            ATTENTION.reset(token)

    def use_streams(self, requested: int, micro_batch: int, precision: str) -> None:
        """Train micro-batches of ``micro_batch`` images per member side by side on a CPU as a run alone
        would (``streams.resolve_streams``, the activations of all members counted), on the stacked
        path only: vmap's functional_call swaps the template's parameters in place, which two threads
        cannot share."""
        first = self.runs[0]
        part = micro_batch * activation_bytes(first.encoder.cfg, precision, len(self))
        streams = resolve_streams(requested, self.device, part_bytes=part, compiled=first.cfg.compile)
        self.streams = streams if self.path == "stacked" else 1

    def trainable_parameters(self) -> list[torch.Tensor]:
        """What the members' gradients are taken with respect to (``streams.run_side_by_side``): the
        stacked parameters that train."""
        return [self.params[n] for n in self.names if self.params[n].requires_grad]

    def _stacked(self, params: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]):
        """The stacked path: every member's outputs from one ``predict`` on the stacked model, then
        each member's loss and statistics from its own outputs."""
        step = self.template
        encoder = Stacked(step.encoder, StackedParams(params, "encoder."))
        head = Stacked(step.head, StackedParams(params, "head."))
        return self._member_losses(step.regime.predict(encoder, head, inputs), inputs)

    def _forget_graph(self) -> None:
        self._graph = self._static = self._out = self._shape = self._active = None
        self._eager_full = 0  # full batches stepped eagerly since the last change

    def step(
        self,
        inputs: dict[str, torch.Tensor],
        micro_batch: int,
        precision: str,
        active: torch.Tensor | None = None,
    ) -> tuple:
        """Forward, backward and the AdamW step on (members, batch, ...) ``inputs`` (replayed from the
        CUDA graph where there is one for their shape), updating the members where ``active`` (members,)
        is set (all: None). Returns the (members,) losses and statistics."""
        shape = {k: tuple(v.shape) for k, v in inputs.items()}
        if self._shape is None:
            self._shape = shape
        full = shape == self._shape
        if self.graphs and full and self._graph is None and self._eager_full >= self.WARMUP:
            self._capture(inputs, micro_batch, precision)
        if self._graph is not None and full:
            for k, v in inputs.items():
                self._static[k].copy_(v)
            self._active.copy_(True if active is None else active)
            self._graph.replay()
            return self._out
        self._eager_full += int(full)
        with _side_stream(self.device):  # warm-up away from the capture stream, as torch advises
            return self._eager(inputs, micro_batch, precision, active)

    def _eager(self, inputs, micro_batch: int, precision: str, active: torch.Tensor | None = None) -> tuple:
        self.optimizer.zero_grad(set_to_none=True)
        out = forward_backward(
            self, inputs, micro_batch, self.device, precision, axis=1, streams=self.streams
        )
        self.optimizer.step(active)
        return out

    def _capture(self, inputs, micro_batch: int, precision: str) -> None:
        self._static = {k: v.clone() for k, v in inputs.items()}
        self._active = torch.ones(len(self), dtype=torch.bool, device=self.device)
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        # autocast's weight cache must be off while capturing (torch.cuda.graph's documentation)
        cast = (
            torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
            if precision == "bf16"
            else contextlib.nullcontext()
        )
        with torch.cuda.graph(graph), cast:
            out = forward_backward(self, self._static, micro_batch, self.device, "fp32", axis=1)
            self.optimizer.step(self._active)
        self._graph, self._out = graph, out

    def _load_optimizer_states(self) -> None:
        """Resumed members: each member's AdamW moments and step count, from its own optimiser (a fresh
        member's: none, as a fresh AdamW). One step count per member stands for all its parameters."""
        for i, run in enumerate(self.runs):
            states = run.optimizer.state_dict()["state"]
            steps = {float(state["step"]) for state in states.values()}
            if len(steps) > 1:
                raise VinyError(
                    f"{run.run_dir}: its optimiser's parameters are at different steps ({sorted(steps)}); "
                    "a fleet keeps one step count per member: train it alone"
                )
            for j, state in states.items():
                self.optimizer.load_member_state(i, j, state)

    def set_lr(self, position: int) -> None:
        """The member's learning rate, as its own schedule set it (at its epoch end), into the stack."""
        self.optimizer.set_lr(position, self.runs[position].optimizer.param_groups[0]["lr"])

    @torch.no_grad()
    def unstack(self, positions: list[int] | None = None) -> None:
        """Copy the slices of the members at ``positions`` (all: None) of the stack (weights and AdamW
        state) into their own modules and optimisers, which their checkpoints save."""
        for i in range(len(self)) if positions is None else positions:
            run = self.runs[i]
            own = _parameters(run)
            for j, name in enumerate(self.names):
                own[j].copy_(self.params[name][i])
                state = self.optimizer.member_state(i, j)
                if state is not None:
                    # as the member's own AdamW keeps its step: on the device when fused, else on the host
                    step = state["step"] if _fused(run.optimizer) else state["step"].cpu()
                    run.optimizer.state[own[j]] = {**state, "step": step}

    def keep(self, members: list[int]) -> None:
        """Go on with the members at these positions only (the others stopped or finished)."""
        index = torch.tensor(members, device=self.device)
        self.runs = [self.runs[i] for i in members]
        self.params = {
            n: p.detach().index_select(0, index).requires_grad_(p.requires_grad)
            for n, p in self.params.items()
        }
        self.optimizer.keep(index)
        self.optimizer.replace_params([self.params[n] for n in self.names])
        self._forget_graph()


def stack_path(regime, encoder: nn.Module, head: nn.Module, path: str = "stacked") -> tuple[str, str]:
    """The path a fleet of ``regime`` takes when ``path`` is asked for, and a one-line note when that
    is not the one asked for (why it goes through vmap), else ""."""
    if path not in PATHS:
        raise VinyError(f"unknown fleet path {path!r}; choose one of {', '.join(PATHS)}")
    if path == "vmap":
        return path, ""
    if not regime.stacks():
        why = "its loss is a compute_loss of its own, not predict + loss"
    elif not has_stacked_forward(head):
        why = f"its head ({type(head).__name__}) has no stacked_forward"
    elif not has_stacked_forward(encoder):
        why = f"its encoder ({type(encoder).__name__}) has no stacked_forward"
    else:
        return path, ""
    return "vmap", f"{regime.name}: through vmap, not stacked: {why}"


def graphs_available(device: torch.device) -> bool:
    """CUDA graphs exist on CUDA devices only."""
    return device.type == "cuda"


@contextlib.contextmanager
def _side_stream(device: torch.device):
    """Run the body on a fresh CUDA stream, then make the current stream wait for it (a no-op off CUDA)."""
    if device.type != "cuda":
        yield
        return
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        yield
    torch.cuda.current_stream(device).wait_stream(side)


def _fused(optimizer: torch.optim.Optimizer) -> bool:
    group = optimizer.param_groups[0]
    return bool(group.get("fused") or group.get("capturable"))


class FleetMeter:
    """``EpochMeter`` for a fleet: per-member running sums (members,) on the device over each member's
    own epoch (``reset`` at its end), the losses read only at checks, each member's first non-finite
    batch. Members that sat out a sub-step (``active``) add nothing."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count: list[int] = []  # images per member so far in its epoch
        self.batches: list[int] = []  # batches per member so far in its epoch
        # (losses (members,), each member's batch number in its epoch, 0 where it sat out)
        self.pending: list[tuple[torch.Tensor, list[int]]] = []

    def add(self, losses: torch.Tensor, stats: dict, images: int, active: list[bool] | None = None) -> None:
        members = losses.shape[0]
        if not self.count:
            self.count, self.batches = [0] * members, [0] * members
        stepped = [True] * members if active is None else active
        for i in range(members):
            if stepped[i]:
                self.count[i] += images
                self.batches[i] += 1
        numbers = [b if a else 0 for a, b in zip(stepped, self.batches, strict=True)]
        self.pending.append((losses.detach().float().clone(), numbers))  # a graph's output is overwritten
        mask = None if active is None else torch.tensor(active, device=self.device)
        for k, v in {"loss": losses, **stats}.items():
            v = torch.as_tensor(v, device=self.device).detach().to(torch.float64) * images
            if mask is not None:
                v = torch.where(mask, v, 0.0)  # a sitting-out member's slot computed on another's batch
            self.sums[k] = self.sums[k] + v if k in self.sums else v

    def non_finite(self) -> dict[int, int]:
        """{member position: its first batch (1-based, in its epoch) with a non-finite loss} among the
        losses added since the last call."""
        if not self.pending:
            return {}
        bad = (~torch.isfinite(torch.stack([losses for losses, _ in self.pending]))).tolist()
        numbers = [n for _, n in self.pending]
        self.pending.clear()
        first: dict[int, int] = {}
        for row, at in zip(bad, numbers, strict=True):
            for i, (is_bad, batch) in enumerate(zip(row, at, strict=True)):
                if is_bad and batch and i not in first:
                    first[i] = batch
        return first

    def keep(self, members: list[int]) -> None:
        index = torch.tensor(members, device=self.device)
        self.sums = {k: v.index_select(0, index) for k, v in self.sums.items()}
        self.count = [self.count[i] for i in members]
        self.batches = [self.batches[i] for i in members]
        self.pending = [(p.index_select(0, index), [n[i] for i in members]) for p, n in self.pending]

    def means(self, member: int) -> dict[str, float]:
        return {k: float(v[member] / self.count[member]) for k, v in self.sums.items()}

    def reset(self, member: int) -> None:
        """The member begins a new epoch."""
        for v in self.sums.values():
            v[member] = 0.0
        self.count[member] = self.batches[member] = 0


def _batch_shape(inputs: dict[str, torch.Tensor]) -> tuple:
    return tuple((k, tuple(v.shape)) for k, v in sorted(inputs.items()))


def fleet_step(
    stack: Stack,
    batches: list[dict[str, torch.Tensor]],
    gens: list[torch.Generator],
    *,
    micro_batch: int,
    precision: str,
    meter: FleetMeter,
    check: bool = False,
) -> dict[int, int]:
    """One optimiser step of every member on its own batch (uint8 ``batches`` on the device), each
    augmented by its own regime from its own generator, stacked to (members, batch, ...): the fleet's
    ``engine.train_step``. Batches of different shapes (a member's short last batch) step in sub-steps,
    one per shape, largest first, the other members sitting out (module docstring). With ``check`` the
    losses are read after each sub-step's backward, and a member found non-finite is left out of the
    update, as a run alone checks on a CPU; under CUDA graphs the step is one replay, and the check
    follows it (the update of a member found non-finite is then applied, but never saved, as on a GPU
    alone). Returns {position: first non-finite batch} of the members found non-finite (the caller
    takes them out of the stack)."""
    prepared = [run.regime.prepare(b, g) for run, b, g in zip(stack.runs, batches, gens, strict=True)]
    by_shape: dict[tuple, list[int]] = {}
    for i, inputs in enumerate(prepared):
        by_shape.setdefault(_batch_shape(inputs), []).append(i)
    bad: dict[int, int] = {}
    for members in sorted(by_shape.values(), key=lambda m: -batches[m[0]]["images"].shape[0]):
        fill = prepared[members[0]]  # what the members sitting out compute on (and nothing keeps)
        inputs = {
            k: torch.stack([prepared[i][k] if i in members else fill[k] for i in range(len(stack))])
            for k in fill
        }
        active = None if len(members) == len(stack) else [i in members for i in range(len(stack))]
        images = batches[members[0]]["images"].shape[0]
        bad.update(_sub_step(stack, inputs, active, images, micro_batch, precision, meter, check))
    return bad


def _sub_step(
    stack: Stack,
    inputs: dict,
    active: list[bool] | None,
    images: int,
    micro_batch: int,
    precision: str,
    meter: FleetMeter,
    check: bool,
) -> dict[int, int]:
    """One forward, backward and AdamW step of the stack, updating the ``active`` members (all: None)."""
    mask = None if active is None else torch.tensor(active, device=stack.device)
    if stack.graphs:
        losses, stats = stack.step(inputs, micro_batch, precision, mask)
        meter.add(losses, stats, images, active)
        return meter.non_finite() if check else {}
    stack.optimizer.zero_grad(set_to_none=True)
    losses, stats = forward_backward(
        stack, inputs, micro_batch, stack.device, precision, axis=1, streams=stack.streams
    )
    meter.add(losses, stats, images, active)
    bad = meter.non_finite() if check else {}
    if bad:
        active = [(True if active is None else active[i]) and i not in bad for i in range(len(stack))]
        mask = torch.tensor(active, device=stack.device)
    if mask is None or active is None or any(active):
        stack.optimizer.step(mask)
    return bad


class _Member:
    """One member's place in its own training: its epoch, that epoch's generator and batches (the
    iteration its run alone goes through, ``engine.epoch_pass``), how many are left, when the epoch
    began and how many members the fleet had then."""

    def __init__(self, run: Run, check_every: int, fleet: int) -> None:
        self.run, self.check_every = run, check_every
        self.epoch = run.start_epoch - 1
        self.begin(fleet)

    def begin(self, fleet: int) -> None:
        """Start the member's next epoch."""
        run, cfg = self.run, self.run.cfg
        self.epoch += 1
        self.gen = epoch_generator(cfg.random_seed, self.epoch)
        self.batches = epoch_pass(run.train_set, self.gen, cfg.batch_size, run.device, self.check_every)
        self.left = math.ceil(len(run.train_set) / cfg.batch_size)
        self.fleet, self.t0 = fleet, time.perf_counter()

    def next(self) -> tuple[dict[str, torch.Tensor], bool]:
        self.left -= 1
        return next(self.batches)

    @property
    def last_epoch(self) -> bool:
        return self.epoch + 1 >= self.run.cfg.epochs


def _end_epoch(stack: Stack, meter: FleetMeter, member: _Member, position: int, errors: dict) -> bool:
    """The member's epoch end, as alone: its slice of the stack into its own modules and optimiser,
    its schedule stepped, its record and checkpoint saved, its new learning rate into the stack.
    Returns False when that failed (a full disk, say: recorded in ``errors``, the member stops)."""
    run = member.run
    stack.unstack([position])
    seconds = time.perf_counter() - member.t0
    try:
        with warnings.catch_warnings():  # its optimiser stepped through the stack, not itself
            warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
            run.end_epoch(
                member.epoch, meter.means(position), seconds, len(run.train_set), {"fleet": member.fleet}
            )
    except KeyboardInterrupt:
        raise
    except Exception as e:  # noqa: BLE001 - this member stops (a full disk, say); the rest go on
        errors[run.run_dir] = e
        return False
    stack.set_lr(position)
    return True


def _train_together(runs: list[Run], fleet: int, progress: bool, errors: dict, graphs: bool) -> list[Run]:
    """Train ``runs`` (one ``fleet_key``, each from its own ``start_epoch``) as one fleet, each member
    through its own epochs, in the micro-batches of a fleet of ``fleet`` (the whole group's, also
    while part of it trains: a resumed fleet steps as the uninterrupted one did). Members leave as
    they finish or fail (failures recorded in ``errors``); returns those that finished."""
    stack = Stack(runs, graphs)
    first = runs[0]
    cfg, device = first.cfg, first.device
    check_every = loss_check_interval(device)
    micro = micro_batch_size(cfg.micro_batch, device, cfg.batch_size, first.mcfg, cfg.precision, fleet)
    stack.use_streams(cfg.streams, micro, cfg.precision)
    members = [_Member(run, check_every, len(runs)) for run in runs]
    meter = FleetMeter(device)
    for run in runs:
        run.encoder.train(), run.head.train()
    finished: list[Run] = []
    total = sum((r.cfg.epochs - r.start_epoch) * len(r.train_set) for r in runs)
    description = f"{cfg.regime} x{len(runs)}" + (f" ({stack.note})" if stack.note else "")
    with epoch_progress(enabled=progress, description=description) as bar:
        task = bar.start_task(description, total)
        t0, done = time.perf_counter(), 0
        while members:
            drawn = [m.next() for m in members]
            batches = [b for b, _ in drawn]
            bad = fleet_step(
                stack,
                batches,
                [m.gen for m in members],
                micro_batch=micro,
                precision=cfg.precision,
                meter=meter,
                check=any(read for _, read in drawn),
            )
            done += sum(b["images"].shape[0] for b in batches)
            bar.advance(
                task, sum(b["images"].shape[0] for b in batches), None, done / (time.perf_counter() - t0)
            )
            leaving, beginning = set(), []
            for position, batch in bad.items():
                run = members[position].run
                errors[run.run_dir] = non_finite_error(
                    members[position].epoch, f"batch {batch}", run.run_dir / LAST
                )
                leaving.add(position)
            for position, member in enumerate(members):
                if member.left or position in leaving:
                    continue
                if not _end_epoch(stack, meter, member, position, errors):
                    leaving.add(position)
                elif member.last_epoch:
                    finished.append(member.run)
                    leaving.add(position)
                else:
                    beginning.append(member)
                    meter.reset(position)
            if leaving:
                kept = [i for i in range(len(members)) if i not in leaving]
                members = [members[i] for i in kept]
                if kept:
                    stack.keep(kept)
                    meter.keep(kept)
            for member in beginning:
                member.begin(len(stack))
    return finished


def _share_training_sets(runs: list[Run]) -> None:
    """Runs that train on the same images share one copy of them, placed on the device once."""
    shared: dict[tuple, object] = {}
    for run in runs:
        key = (run.cfg.dataset, run.cfg.data_root, run.used["ids_sha256"], run.train_set.size, run.cfg.resize)
        if key not in shared:
            shared[key] = _resident(run.train_set, run.device)
        run.train_set = run.data.train = shared[key]


def train_fleet(
    members: list[tuple[TrainConfig, str | Path, bool]],
    progress: bool = True,
    cuda_graphs: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[MemberResult]:
    """Train every (config, run folder, resume) in ``members``: runs that can train together
    (``fleet_key``) do so as one fleet, each from its own epoch (resumed ones from their checkpoints'),
    each leaving when its epochs are done; a run with no partner trains as alone. Each member's failure
    is its own (recorded in its ``MemberResult``); an interrupt stops all of them, each with its
    finished epochs saved for ``--resume``. ``cuda_graphs``: replay each fleet's step from a CUDA graph
    on a GPU (``Stack``); no effect elsewhere. ``log``, given more than one member, is told what trains
    together (``describe_fleet``, runs named by their folder's name), before each fleet trains."""
    if distributed.from_environment().enabled:
        raise VinyError("fleets train in one process: run them without torchrun")
    outcome = {Path(d): MemberResult(Path(d)) for _, d, _ in members}
    runs: list[Run] = []
    errors: dict[Path, BaseException] = {}
    try:
        for cfg, run_dir, resume in members:
            try:
                runs.append(Run(cfg, run_dir, resume, resident=False))
            except KeyboardInterrupt:
                raise
            except Exception as e:  # noqa: BLE001 - this member cannot start; the others can
                outcome[Path(run_dir)].error = e
        _share_training_sets(runs)
        for group in group_runs(runs):
            if log is not None and len(members) > 1:
                names = [run.run_dir.name for run in group]
                starts = [run.start_epoch for run in group]
                log(describe_fleet(names, starts, group[0].cfg.epochs))
            training = [run for run in group if run.start_epoch < run.cfg.epochs]
            for run in training:
                outcome[run.run_dir].fleet_size = len(training)
            finished = _train_group(group, progress, errors, cuda_graphs)
            for run in finished:
                try:
                    outcome[run.run_dir].result = run.finish()
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - recorded for this member alone
                    errors[run.run_dir] = e
    finally:
        for run in runs:
            run.release()  # each run folder's lock (a finished run let go of its own already)
    for run_dir, error in errors.items():
        outcome[run_dir].error = error
    return list(outcome.values())


def _train_group(group: list[Run], progress: bool, errors: dict, graphs: bool) -> list[Run]:
    """Train one fleet (a run alone as ``loop.train`` does); returns the members that got to their
    last epoch (those resumed there already included)."""
    if len(group) == 1:
        try:
            train_epochs(group[0], progress)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - recorded for this member alone
            errors[group[0].run_dir] = e
            return []
        return group
    training = [run for run in group if run.start_epoch < run.cfg.epochs]
    if training:
        try:
            _train_together(training, len(group), progress, errors, graphs)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a fault of the fleet itself (memory, say) stops its members
            for run in training:
                errors.setdefault(run.run_dir, e)
    return [run for run in group if run.run_dir not in errors]
