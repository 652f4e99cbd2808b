"""The fleet's stacked AdamW (viny_probe.trainers.adamw): each member's update equals torch's AdamW of
that member alone, with its own learning rate and its own step count."""

import pytest
import torch

from viny_probe.errors import VinyError
from viny_probe.trainers.adamw import StackedAdamW

SHAPES = [(5, 3), (7,), (2, 3, 4)]


def _members(k: int, seed: int = 0) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(k)]


def _grads(k: int, step: int) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(1000 + step)
    return [[torch.randn(s, generator=gen) for s in SHAPES] for _ in range(k)]


def _stacked(members: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [torch.stack([m[j] for m in members]).clone() for j in range(len(SHAPES))]


def _alone(start, rates, decay, before, fused: bool = False):
    """Each member alone with torch's AdamW (its fused kernel with ``fused``), after ``before[i]``
    steps of its own."""
    alone = [[t.clone().requires_grad_() for t in m] for m in start]
    kind = {"fused": True} if fused else {"foreach": True}
    optims = [
        torch.optim.AdamW(ps, lr=lr, weight_decay=decay, **kind) for ps, lr in zip(alone, rates, strict=True)
    ]
    for i, n in enumerate(before):
        for s in range(n):
            _step_alone(alone[i], optims[i], _grads(len(start), -1 - s)[i])
    return alone, optims


def _step_alone(params, optimizer, grads) -> None:
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    optimizer.step()


def _stacked_from(alone, optims, rates, decay, fused=False) -> tuple[list[torch.Tensor], StackedAdamW]:
    """The members stacked, each member's torch AdamW state loaded (as a resumed fleet loads it)."""
    k = len(alone)
    params = [
        torch.stack([alone[i][j].detach() for i in range(k)]).requires_grad_() for j in range(len(SHAPES))
    ]
    stacked = StackedAdamW(params, rates, decay, fused=fused)
    for i in range(k):
        for j, p in enumerate(alone[i]):
            if p in optims[i].state:
                stacked.load_member_state(i, j, optims[i].state[p])
    return params, stacked


@pytest.mark.parametrize("fused", [False, True], ids=["stacked-arithmetic", "fused-per-member"])
def test_each_member_steps_as_torch_adamw_alone_with_its_own_rate_and_step_count(fused):
    """Three members with rates 1e-3, 3e-2, 5e-4 that took 1, 4 and 0 steps before (members resumed at
    different epochs, or with different epoch lengths: their bias corrections differ), then step
    together, with member 1 sitting out one step (``active``; its gradient slot holds NaN, which must
    not matter) and member 0's rate cut tenfold halfway (a milestone). Each equals torch.optim.AdamW of
    the member alone: weights, moments and step count. Mutants watched failing: one step count shared
    by all members (member 0's), member 0's rate for all, the sitting-out member stepped anyway.
    Both ways of stepping: the stacked arithmetic (CUDA's, against torch's foreach AdamW) and torch's
    fused kernel per member (a CPU's, against torch's fused AdamW; mutants: member 0's step count or
    rate for every member, the sitting-out member stepped, all killed)."""
    k, decay = 3, 0.05
    rates, before = [1e-3, 3e-2, 5e-4], [1, 4, 0]
    alone, optims = _alone(_members(k), rates, decay, before, fused)
    params, stacked = _stacked_from(alone, optims, rates, decay, fused)
    assert stacked.fused is fused
    sits_out = {2: 1}  # at step 2, member 1 does not step
    for step in range(5):
        if step == 3:
            stacked.set_lr(0, rates[0] * 0.1)
            optims[0].param_groups[0]["lr"] = rates[0] * 0.1
        grads = _grads(k, step)
        active = [i != sits_out.get(step) for i in range(k)]
        for i in range(k):
            if active[i]:
                _step_alone(alone[i], optims[i], grads[i])
        for j, p in enumerate(params):
            nan = [torch.full_like(grads[i][j], float("nan")) for i in range(k)]
            p.grad = torch.stack([grads[i][j] if active[i] else nan[i] for i in range(k)])
        stacked.step(None if all(active) else torch.tensor(active))
    for i in range(k):
        for j, p in enumerate(alone[i]):
            torch.testing.assert_close(params[j][i], p.detach(), rtol=1e-6, atol=1e-7)
            state = stacked.member_state(i, j)
            assert float(state["step"]) == float(optims[i].state[p]["step"]) == before[i] + 5 - (i == 1)
            for key in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(state[key], optims[i].state[p][key], rtol=1e-6, atol=1e-9)


def test_keep_drops_members_with_their_state():
    params = [t.requires_grad_() for t in _stacked(_members(3))]
    stacked = StackedAdamW(params, [1e-3, 2e-3, 3e-3], 0.0)
    for p in params:
        p.grad = torch.ones_like(p)
    stacked.step(torch.tensor([True, False, True]))
    index = torch.tensor([0, 1])
    stacked.keep(index)
    stacked.replace_params([p.detach().index_select(0, index) for p in params])
    assert stacked.lr.tolist() == [1e-3, 2e-3] and stacked.step_count.tolist() == [1.0, 0.0]
    assert stacked.exp_avg[0].shape[0] == 2


def test_parameters_that_stop_getting_gradients_are_refused():
    params = [t.requires_grad_() for t in _stacked(_members(2))]
    stacked = StackedAdamW(params, [1e-3, 1e-3], 0.0)
    for p in params:
        p.grad = torch.ones_like(p)
    stacked.step()
    params[0].grad = None
    with pytest.raises(VinyError, match="parameters with gradients changed"):
        stacked.step()


def test_a_cpu_stack_steps_fused_by_default():
    """On a CPU the stack takes the fused kernel unless told otherwise (mutant: ``fused`` left False)."""
    params = [t.requires_grad_() for t in _stacked(_members(2))]
    assert StackedAdamW(params, [1e-3, 1e-3], 0.0).fused
    assert not StackedAdamW(params, [1e-3, 1e-3], 0.0, fused=False).fused
