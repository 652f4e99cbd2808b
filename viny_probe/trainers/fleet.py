"""Fleets: several runs of one regime trained in lockstep in one process, each as if alone.

A sweep's waves are many runs of the same small model that differ only in their seed, their parent
checkpoint or their data split. One such run is launch-bound on a GPU (a few % of its peak at the
study's batch of 64), so a fleet trains K of them at once: every parameter is stacked along a leading
member axis, the regime's forward and loss run once for all members, the sum of the members' losses
is backpropagated (each member's gradients are its own: members share nothing), and one AdamW step
updates all of them (AdamW is elementwise, so a stacked step is each member's own step).

The forward takes one of two paths (``Stack.path``), both from the one model definition: "stacked"
(the default) calls the regime's ``predict`` on ``model.Stacked`` views of the stacked parameters, so
each module runs its ``stacked_forward`` next to its ``forward`` (one batched matrix product per
layer for all members, attention on the members' batches folded together, (K * B, heads, T, d),
through the kernel a run alone uses), then maps the regime's ``loss`` over the members with vmap;
"vmap" runs the one ``TrainStep`` (the first member's) under ``torch.func.vmap``, with attention
written out. vmap's layout copies made up about a third of a large fleet's step on a GPU
(docs/performance.md, fleets). A regime whose loss is a ``compute_loss`` of its own (a plugin's),
or whose head has no ``stacked_forward``, goes through vmap, and says so (``Stack.note``) in the
fleet's progress line and in `viny bench --fleet`.

Each member keeps everything that makes it itself: its ``loop.Run`` (run folder, config, data,
checkpoints, metrics, evaluation, final files, exactly as a run alone writes them), its seed (batch
order, augmentation and masks are drawn from its own ``epoch_generator`` by its own regime instance),
its train subset, its parent. A member's numbers equal training it alone, to float tolerance
(``tests/trainers/test_fleet.py``, every regime).

Grouping: runs train together only when every batch has the same shape and every step the same
learning rate: the same regime, model, schedule and batch size and the same number of training images
(so the same steps per epoch and the same short last batch). ``fleet_key`` says what must be equal;
other runs form other fleets, and a run left alone trains exactly as ``loop.train`` does. Grouping by
equal step counts, rather than masking finished members, keeps every member's learning-rate
schedule, Adam step count and checkpoint epochs the ones of its run alone.

Regrouping: members of one fleet resumed from different epochs (a fleet killed while its members
saved one epoch) train in phases (``fleet_phases``): those furthest behind train, as a fleet of
their own, until they reach the next member's epoch, then go on together with it, and so on. Every
epoch of a member goes through the fleet's step, with the micro-batches of the whole fleet,
as it would have uninterrupted, even an epoch it trains alone: the plain loop's kernels round
differently (in bf16 visibly), and a resumed fleet equals the uninterrupted one exactly
(``tests/faults/test_sweep_faults.py``, ``tests/trainers/test_fleet.py`` on both paths), as long as
the device's batched kernels compute each member's slice the same whatever the number of members (so
on this CPU, in fp32 and bf16).

A member whose loss goes non-finite stops alone, with the message a run alone gives, before its
update is applied on a CPU (on a GPU, at the next read of the losses: ``loss_check_interval``): it
is taken out of the stack and the others go on.
"""

from __future__ import annotations

import contextlib
import functools
import json
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
from .base import device_batch
from .engine import (
    TrainStep,
    _accumulate,
    epoch_batches,
    epoch_generator,
    epoch_order,
    forward_backward,
    loss_check_interval,
    make_optimizer,
    micro_batch_size,
    non_finite_error,
)
from .loop import LAST, Run, RunResult, _resident, resolve_device, run_model_config, train_epochs

# Config fields a fleet's members may differ in. Everything else in the resolved config (regime,
# model, schedule, batch size, recipe, dataset, precision, ...) must be equal; see ``fleet_key``.
MEMBER_FIELDS = ("seed", "draw", "split_seed", "init", "train_size", "test_size", "data_root")


@dataclass
class MemberResult:
    """What became of one member: its ``RunResult``, or the exception that stopped it."""

    run_dir: Path
    result: RunResult | None = None
    error: BaseException | None = None
    fleet_size: int = 1  # how many runs it trained alongside (itself included) at its first epoch


def fleet_config_key(cfg: TrainConfig) -> str:
    """What of a (resolved) config must be equal for runs to train as one fleet, as a string; the
    train size stays in it (it decides the steps per epoch), ``fleet_key`` checks the image count."""
    config = cfg.resolved().to_dict()
    return json.dumps(
        {k: v for k, v in config.items() if k not in MEMBER_FIELDS or k == "train_size"}, sort_keys=True
    )


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
    """Runs with equal keys can train in one fleet: the same resolved config up to ``MEMBER_FIELDS``,
    the same number of training images (equal batch shapes and steps per epoch) and the same parameter
    shapes (a head's classes). Their first epochs may differ: ``fleet_phases`` regroups them."""
    shapes = tuple(tuple(p.shape) for p in _parameters(run))
    return (fleet_config_key(run.cfg), len(run.train_set), shapes)


def group_runs(runs: list[Run]) -> list[list[Run]]:
    """The runs split into fleets of equal ``fleet_key``, in the order of their first member."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(fleet_key(run), []).append(run)
    return list(groups.values())


@dataclass(frozen=True)
class Phase:
    """Epochs ``first`` .. ``stop - 1`` (0-based) trained in lockstep by the fleet's ``members``
    (positions in the fleet)."""

    first: int
    stop: int
    members: tuple[int, ...]


def fleet_phases(starts: list[int], epochs: int) -> list[Phase]:
    """How a fleet whose members start at epochs ``starts`` (their checkpoints' epochs) trains to
    ``epochs``: the members furthest behind train alone, as a fleet of their own, until they reach the
    next start, where those members join them, and so on; from the last start on, all together. A
    member at ``epochs`` already trains in no phase. Members resumed at 3 and 4 of 6: [3, 4) the
    first, [4, 6) both."""
    meet = sorted({s for s in starts if s < epochs}) + [epochs]
    return [
        Phase(first, stop, tuple(i for i, s in enumerate(starts) if s <= first))
        for first, stop in zip(meet, meet[1:], strict=False)
    ]


def _epochs(first: int, stop: int) -> str:
    """0-based epochs [first, stop) as the 1-based words a log uses."""
    return f"epoch {stop}" if stop == first + 1 else f"epochs {first + 1}-{stop}"


def describe_fleet(names: list[str], starts: list[int], epochs: int) -> str:
    """What of a sweep's fleet (its stages' ``names``, at epochs ``starts``) trains together when, in
    words: "2 stages as one fleet", or for members resumed at different epochs each phase, e.g. "...:
    epoch 2: a alone (b waits at epoch 2); epoch 3: 2 stages as one fleet"."""
    phases = fleet_phases(starts, epochs)
    parts = []
    for phase in phases:
        notes = [
            f"{n} waits at epoch {s}" for n, s in zip(names, starts, strict=True) if phase.first < s < epochs
        ]
        if len(phase.members) == 1:
            who = f"{names[phase.members[0]]} alone"
        else:
            who = f"{len(phase.members)} stages as one fleet"
            if len(phases) > 1 and len(phase.members) < len(names):
                notes.insert(0, ", ".join(names[i] for i in phase.members))
        if len(phases) > 1:
            who = f"{_epochs(phase.first, phase.stop)}: {who}"
        parts.append(who + (f" ({'; '.join(notes)})" if notes else ""))
    text = "; ".join(parts)
    if len(phases) > 1:
        at = sorted(set(starts))
        at_text = f"{', '.join(map(str, at[:-1]))} and {at[-1]}"
        text = f"{len(names)} stages resumed at epochs {at_text} train apart until their epochs meet: {text}"
    done = [n for n, s in zip(names, starts, strict=True) if s >= epochs]
    if done:
        text += ("; " if text else "") + f"{', '.join(done)}: every epoch trained already"
    return text


def _parameters(run: Run) -> list[nn.Parameter]:
    """The run's parameters in its optimiser's order (encoder, then head)."""
    return list(run.encoder.parameters()) + list(run.head.parameters())


PATHS = ("stacked", "vmap")


class Stack:
    """The members' parameters stacked along a leading axis, their AdamW state likewise, and the
    regime's forward and loss run over them on one of two ``PATHS``. ``unstack`` copies the stack back
    into each member's own modules and optimiser, so each member's checkpoint is written as alone.

    ``path`` "stacked" (the default, ``Stack.path``): the model's own ``stacked_forward`` (model.py,
    heads.py) on the stacked parameters, called by the regime's ``predict``, then its ``loss`` mapped
    over the members by vmap; "vmap": the one ``TrainStep`` (the first member's) run over them by
    ``torch.func.vmap``. A regime with a ``compute_loss`` of its own, or a head or encoder without a
    ``stacked_forward`` (a plugin's), goes through vmap whatever the setting; ``note`` then says why.

    ``graphs`` (CUDA only): forward, backward and the AdamW step of a full batch are captured once as
    a CUDA graph and replayed (``step``): the per-operation dispatch (vmap's most of all), paid on
    the host every step, is what bounds a fleet's step on a GPU otherwise. The first ``WARMUP`` full
    batches, every short last batch, and the steps after a change of learning rate or of members run
    eagerly."""

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
        self.weight_decay = first.cfg.weight_decay
        self.template = TrainStep(first.regime, first.encoder, first.head)
        self.path, self.note = stack_path(first.regime, first.encoder, first.head, path or self.path)
        self.names = [n for n, _ in self.template.named_parameters()]
        own = [_parameters(r) for r in runs]  # in the order of self.names: encoder, then head
        self.params = {
            n: torch.stack([o[j].detach() for o in own]).requires_grad_(own[0][j].requires_grad)
            for j, n in enumerate(self.names)
        }
        self.optimizer = self._optimizer(self.params, first.cfg.lr)
        self._load_optimizer_states()
        self.sync_lr()
        # tie_weights=False: the template holds its encoder twice (``encoder``, ``run_encoder``); tying
        # would restore the second name last and leave the member's modules holding the stacked tensors.
        if self.path == "stacked":
            forward = self._stacked
            self._member_losses = torch.func.vmap(first.regime.loss)
        else:
            one = functools.partial(torch.func.functional_call, self.template, tie_weights=False)
            forward = torch.func.vmap(lambda params, inputs: one(params, (inputs,)))
        self._forward = torch.compile(forward) if first.cfg.compile else forward
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

    def _stacked(self, params: dict[str, torch.Tensor], inputs: dict[str, torch.Tensor]):
        """The stacked path: every member's outputs from one ``predict`` on the stacked model, then
        each member's loss and statistics from its own outputs."""
        step = self.template
        encoder = Stacked(step.encoder, StackedParams(params, "encoder."))
        head = Stacked(step.head, StackedParams(params, "head."))
        return self._member_losses(step.regime.predict(encoder, head, inputs), inputs)

    def _optimizer(self, params: dict, lr: float) -> torch.optim.Optimizer:
        # a captured AdamW step must be capturable (its step count on the device); fused: one kernel
        options = {"fused": True, "capturable": True} if self.graphs and self.device.type == "cuda" else None
        return make_optimizer([params[n] for n in self.names], lr, self.weight_decay, self.device, options)

    def _forget_graph(self) -> None:
        self._graph = self._static = self._out = self._shape = None
        self._eager_full = 0  # full batches stepped eagerly since the last change

    def step(self, inputs: dict[str, torch.Tensor], micro_batch: int, precision: str) -> tuple:
        """Forward, backward and the AdamW step on (members, batch, ...) ``inputs`` (replayed from the
        CUDA graph where there is one for their shape). Returns the (members,) losses and statistics."""
        shape = {k: tuple(v.shape) for k, v in inputs.items()}
        if self._shape is None:
            self._shape = shape
        full = shape == self._shape
        if self.graphs and full and self._graph is None and self._eager_full >= self.WARMUP:
            self._capture(inputs, micro_batch, precision)
        if self._graph is not None and full:
            for k, v in inputs.items():
                self._static[k].copy_(v)
            self._graph.replay()
            return self._out
        self._eager_full += int(full)
        with _side_stream(self.device):  # warm-up away from the capture stream, as torch advises
            return self._eager(inputs, micro_batch, precision)

    def _eager(self, inputs, micro_batch: int, precision: str) -> tuple:
        self.optimizer.zero_grad(set_to_none=True)
        out = forward_backward(self, inputs, micro_batch, self.device, precision, axis=1)
        self.optimizer.step()
        return out

    def _capture(self, inputs, micro_batch: int, precision: str) -> None:
        self._static = {k: v.clone() for k, v in inputs.items()}
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
            self.optimizer.step()
        self._graph, self._out = graph, out

    def _load_optimizer_states(self) -> None:
        """A resumed fleet: each member's AdamW moments, stacked; the step count is the members' own
        (equal: they resumed at the same epoch of the same schedule)."""
        states = [r.optimizer.state_dict()["state"] for r in self.runs]
        for j, name in enumerate(self.names):
            if j not in states[0]:
                continue
            steps = {float(s[j]["step"]) for s in states}
            if len(steps) != 1:
                raise VinyError(f"fleet members resumed at different optimiser steps ({sorted(steps)})")
            param = self.params[name]
            step = states[0][j]["step"].clone()
            self.optimizer.state[param] = {
                "step": step.to(self.device, torch.float32) if _fused(self.optimizer) else step,
                **{k: torch.stack([s[j][k] for s in states]).to(param) for k in ("exp_avg", "exp_avg_sq")},
            }

    def sync_lr(self) -> None:
        """The members' schedules are equal (``fleet_key``): the stack takes their learning rate (a
        captured graph holds the old one, so a change drops it)."""
        rates = {r.optimizer.param_groups[0]["lr"] for r in self.runs}
        if len(rates) != 1:
            raise VinyError(f"fleet members are at different learning rates ({sorted(rates)})")
        lr = rates.pop()
        if self.optimizer.param_groups[0]["lr"] != lr:
            self.optimizer.param_groups[0]["lr"] = lr
            self._forget_graph()

    @torch.no_grad()
    def unstack(self) -> None:
        """Copy every member's slice of the stack (weights and AdamW state) into its own modules and
        optimiser, which its checkpoint saves."""
        for i, run in enumerate(self.runs):
            own = _parameters(run)
            for j, name in enumerate(self.names):
                stacked = self.params[name]
                own[j].copy_(stacked[i])
                state = self.optimizer.state.get(stacked)
                if state:
                    step = state["step"].clone()
                    run.optimizer.state[own[j]] = {
                        # as the member's own AdamW keeps it: on the device when fused, else on the host
                        "step": step if _fused(run.optimizer) else step.cpu(),
                        "exp_avg": state["exp_avg"][i].clone(),
                        "exp_avg_sq": state["exp_avg_sq"][i].clone(),
                    }

    def keep(self, members: list[int]) -> None:
        """Go on with the members at these positions only (the others stopped)."""
        index = torch.tensor(members, device=self.device)
        old = self.optimizer
        self.runs = [self.runs[i] for i in members]
        params = {}
        for n, p in self.params.items():  # the current step's gradients go with them
            params[n] = p.detach().index_select(0, index).requires_grad_(p.requires_grad)
            if p.grad is not None:
                params[n].grad = p.grad.index_select(0, index)
        self.optimizer = self._optimizer(params, old.param_groups[0]["lr"])
        for n in self.names:
            state = old.state.get(self.params[n])
            if state:
                self.optimizer.state[params[n]] = {
                    "step": state["step"],
                    "exp_avg": state["exp_avg"].index_select(0, index),
                    "exp_avg_sq": state["exp_avg_sq"].index_select(0, index),
                }
        self.params = params
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
    """``EpochMeter`` for a fleet: per-member running sums (members,) on the device, the losses read
    only at checks, and each member's first non-finite batch."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0  # images per member so far this epoch (equal for all members)
        self.pending: list[torch.Tensor] = []
        self.batches = 0

    def add(self, losses: torch.Tensor, stats: dict, images: int) -> None:
        self.pending.append(losses.detach().float().clone())  # a graph's output is overwritten next step
        _accumulate(self.sums, {"loss": losses, **stats}, images, self.device, torch.float64)
        self.count += images
        self.batches += 1

    def non_finite(self) -> dict[int, int]:
        """{member position: its first batch (1-based, this epoch) with a non-finite loss} among the
        losses added since the last call."""
        if not self.pending:
            return {}
        bad = ~torch.isfinite(torch.stack(self.pending))  # (steps, members)
        first = self.batches - len(self.pending) + 1
        self.pending.clear()
        if not bool(bad.any()):
            return {}
        return {int(m): first + int(bad[:, m].nonzero()[0, 0]) for m in bad.any(0).nonzero().flatten()}

    def keep(self, members: list[int]) -> None:
        index = torch.tensor(members, device=self.device)
        self.sums = {k: v.index_select(0, index) for k, v in self.sums.items()}
        self.pending = [p.index_select(0, index) for p in self.pending]

    def means(self, member: int) -> dict[str, float]:
        return {k: float(v[member] / self.count) for k, v in self.sums.items()}


@dataclass
class _Epoch:
    """One fleet epoch's per-member generators and orders (positions follow the stack's members)."""

    gens: list[torch.Generator]
    orders: list[torch.Tensor]

    def keep(self, members: list[int]) -> None:
        self.gens = [self.gens[i] for i in members]
        self.orders = [self.orders[i] for i in members]


def fleet_step(
    stack: Stack,
    batches: list[dict[str, torch.Tensor]],
    gens: list[torch.Generator],
    *,
    micro_batch: int,
    precision: str,
    meter: FleetMeter,
    check: Callable[[], bool] | None = None,
) -> torch.Tensor:
    """One optimiser step of every member on its own batch (uint8 ``batches`` on the device), each
    augmented by its own regime from its own generator, stacked to (members, batch, ...): the fleet's
    ``engine.train_step``. ``check`` (called after the backward, it may take members out of the stack)
    goes before the AdamW step, as a run alone checks on a CPU; under CUDA graphs the step is one
    replay, and the check follows it (the update of a member found non-finite is then applied, but
    never saved, as on a GPU alone). Returns the (members,) losses (detached, not read)."""
    prepared = [run.regime.prepare(b, g) for run, b, g in zip(stack.runs, batches, gens, strict=True)]
    inputs = {k: torch.stack([p[k] for p in prepared]) for k in prepared[0]}
    images = batches[0]["images"].shape[0]
    if stack.graphs:
        losses, stats = stack.step(inputs, micro_batch, precision)
        meter.add(losses, stats, images)
        if check is not None:
            check()
        return losses
    stack.optimizer.zero_grad(set_to_none=True)
    losses, stats = forward_backward(stack, inputs, micro_batch, stack.device, precision, axis=1)
    meter.add(losses, stats, images)
    if check is None or check():
        stack.optimizer.step()
    return losses


def _stop_non_finite(stack: Stack, meter: FleetMeter, ep: _Epoch, epoch: int, results: dict) -> bool:
    """Take every member whose loss went non-finite out of the fleet, with a run alone's message.
    Returns whether any member is left."""
    bad = meter.non_finite()
    if not bad:
        return True
    for position, batch in bad.items():
        run = stack.runs[position]
        results[run.run_dir] = non_finite_error(epoch, f"batch {batch}", run.run_dir / LAST)
    keep = [i for i in range(len(stack)) if i not in bad]
    if not keep:
        stack.runs = []
        return False
    stack.keep(keep)
    meter.keep(keep)
    ep.keep(keep)
    return True


def _fleet_epoch(
    stack: Stack, epoch: int, fleet: int, check_every: int, bar, task, errors: dict
) -> dict[int, dict]:
    """One epoch of every member in lockstep, in the micro-batches of a fleet of ``fleet`` members (the
    whole fleet's, also while only part of it trains: ``fleet_phases``). Returns {id(run): epoch
    means} for the members that finished it; members that stopped are recorded in ``errors`` (run
    folder -> exception)."""
    first = stack.runs[0]
    cfg, device, n = first.cfg, first.device, len(first.train_set)
    gens = [epoch_generator(r.cfg.random_seed, epoch) for r in stack.runs]
    ep = _Epoch(gens, [epoch_order(g, r.train_set) for g, r in zip(gens, stack.runs, strict=True)])
    micro = micro_batch_size(cfg.micro_batch, device, cfg.batch_size, first.mcfg, cfg.precision, fleet)
    meter = FleetMeter(device)
    for r in stack.runs:
        r.encoder.train(), r.head.train()
    t0 = time.perf_counter()
    for start, read in epoch_batches(n, cfg.batch_size, check_every):
        batches = [
            device_batch(run.train_set, order[start : start + cfg.batch_size], device)
            for run, order in zip(stack.runs, ep.orders, strict=True)
        ]
        images = batches[0]["images"].shape[0]
        fleet_step(
            stack,
            batches,
            ep.gens,
            micro_batch=micro,
            precision=cfg.precision,
            meter=meter,
            check=functools.partial(_stop_non_finite, stack, meter, ep, epoch, errors) if read else None,
        )
        if not stack.runs:
            return {}
        bar.advance(task, images * len(stack), None, meter.count * len(stack) / (time.perf_counter() - t0))
    return {id(r): meter.means(i) for i, r in enumerate(stack.runs)}


def _train_lockstep(
    runs: list[Run], phase: Phase, fleet: int, progress: bool, errors: dict, graphs: bool
) -> list[Run]:
    """Train ``runs`` (one ``fleet_key``, all at epoch ``phase.first``) together through the phase's
    epochs, in the micro-batches of a fleet of ``fleet``; returns those that got to its end."""
    stack = Stack(runs, graphs)
    first = runs[0]
    cfg = first.cfg
    check_every = loss_check_interval(first.device)
    description = f"{cfg.regime} x{len(runs)}" + (f" ({stack.note})" if stack.note else "")
    with epoch_progress(enabled=progress, description=description) as bar:
        for epoch in range(phase.first, phase.stop):
            t0 = time.perf_counter()
            task = bar.start_epoch(epoch, cfg.epochs, len(first.train_set) * len(stack))
            means = _fleet_epoch(stack, epoch, fleet, check_every, bar, task, errors)
            if not stack.runs:
                break
            seconds = time.perf_counter() - t0
            stack.unstack()
            size = len(stack)
            kept = []
            for i, run in enumerate(stack.runs):
                try:
                    with warnings.catch_warnings():  # its optimiser stepped through the stack, not itself
                        warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()`"))
                        run.end_epoch(epoch, means[id(run)], seconds, len(run.train_set), {"fleet": size})
                    kept.append(i)
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - this member stops (a full disk, say); the rest go on
                    errors[run.run_dir] = e
            if len(kept) < size:
                if not kept:
                    break
                stack.keep(kept)
            stack.sync_lr()
    return list(stack.runs)


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
    (``fleet_key``) do so in lockstep, regrouping as their epochs meet when they resume from different
    ones (``fleet_phases``); a run with no partner trains as alone. Each member's failure is its own
    (recorded in its ``MemberResult``); an interrupt stops all of them, each with its finished epochs
    saved for ``--resume``. ``cuda_graphs``: replay each fleet's step from a CUDA graph on a GPU
    (``Stack``); no effect elsewhere. ``log``, given more than one member, is told what trains together
    when (``describe_fleet``, runs named by their folder's name), before each fleet trains."""
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
            starts = [run.start_epoch for run in group]
            if log is not None and len(members) > 1:
                names = [run.run_dir.name for run in group]
                log(
                    describe_fleet(names, starts, group[0].cfg.epochs)
                    if len(group) > 1
                    else f"{names[0]} alone"
                )
            for phase in reversed(fleet_phases(starts, group[0].cfg.epochs)):
                for i in phase.members:
                    outcome[group[i].run_dir].fleet_size = len(phase.members)
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
    """Train one fleet (a run alone as ``loop.train`` does), phase by phase; returns the members that
    got to their last epoch."""
    if len(group) == 1:
        try:
            train_epochs(group[0], progress)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - recorded for this member alone
            errors[group[0].run_dir] = e
            return []
        return group
    for phase in fleet_phases([run.start_epoch for run in group], group[0].cfg.epochs):
        runs = [group[i] for i in phase.members if group[i].run_dir not in errors]
        if not runs:
            continue
        fleet = sum(run.run_dir not in errors for run in group)  # as many as the uninterrupted fleet has now
        try:
            _train_lockstep(runs, phase, fleet, progress, errors, graphs)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - a fault of the fleet itself (memory, say) stops its members
            for run in runs:
                errors.setdefault(run.run_dir, e)
    return [run for run in group if run.run_dir not in errors]
