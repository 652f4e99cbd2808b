"""AdamW over a fleet's stacked parameters, each member with its own learning rate and step count.

A fleet (``trainers.fleet``) stacks K runs' parameters along a leading member axis. AdamW is
elementwise, so one update of the stack is each member's own update, provided every per-member number
is per member: the learning rate (its own schedule: members with different steps per epoch reach their
milestones at different steps), the step count (its bias corrections; members resumed at different
epochs, or with different epoch lengths, are at different steps), and whether it steps at all (a
member whose batch is stepped in another sub-step of the fleet's step, or whose loss went non-finite,
is left exactly as it was: ``active``).

On a CPU each member's slices step through torch's fused AdamW kernel (what its run alone uses). On
CUDA the arithmetic is torch's AdamW (``torch.optim.adam._multi_tensor_adam``, decoupled weight decay,
no amsgrad) written with (K, 1, ...) tensors where torch uses one Python number per parameter, in the
same order: ``tests/trainers/test_stacked_adamw.py`` checks it against ``torch.optim.AdamW`` of each
member alone. Everything stays on the device (no host reads), so a CUDA graph can capture the step and
replay it after a learning rate changed: the rates are a tensor it reads.
"""

from __future__ import annotations

import torch

from ..errors import VinyError


class StackedAdamW:
    """AdamW for ``params`` (each (K, ...), member i at index i) with per-member learning rates ``lr``
    (K,), one weight decay, torch's default betas and eps. ``step_count`` (K,) counts each member's
    steps, as torch's per-parameter ``step`` does; every parameter with a gradient shares it."""

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: list[float],
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool | None = None,
    ) -> None:
        self.params = list(params)
        members, device = self.params[0].shape[0], self.params[0].device
        # On a CPU each member steps through torch's fused AdamW kernel, as its run alone does
        # (``engine.make_optimizer``): one kernel call per member instead of about ten activation-sized
        # passes per parameter (ViNy, 8 members: 27 ms against 230 ms a step). On CUDA the stacked
        # arithmetic below, which a CUDA graph captures with the rates as a tensor.
        self.fused = device.type == "cpu" if fused is None else fused
        if len(lr) != members:
            raise VinyError(f"StackedAdamW: {len(lr)} learning rates for {members} members")
        self.lr = torch.tensor(lr, dtype=torch.float64, device=device)
        self.step_count = torch.zeros(members, dtype=torch.float32, device=device)
        self.weight_decay, self.betas, self.eps = weight_decay, betas, eps
        # AdamW's moments, created at a parameter's first gradient (as torch's lazily created state)
        self.exp_avg: list[torch.Tensor | None] = [None] * len(self.params)
        self.exp_avg_sq: list[torch.Tensor | None] = [None] * len(self.params)

    def __len__(self) -> int:
        return int(self.lr.shape[0])

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: ARG002 - as torch's: grads are always dropped
        for p in self.params:
            p.grad = None

    def has_state(self, j: int) -> bool:
        return self.exp_avg[j] is not None

    def _moments(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.exp_avg[j] is None:
            self.exp_avg[j] = torch.zeros_like(self.params[j], memory_format=torch.preserve_format)
            self.exp_avg_sq[j] = torch.zeros_like(self.params[j], memory_format=torch.preserve_format)
        return self.exp_avg[j], self.exp_avg_sq[j]

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None) -> None:
        """One AdamW step of every member, or of the members where ``active`` (K,) bool is set (the
        others' weights, moments and step counts are left as they were, whatever their gradients hold)."""
        beta1, beta2 = self.betas
        grads = [(j, p, p.grad) for j, p in enumerate(self.params) if p.grad is not None]
        stepped = {j for j, _, _ in grads}
        known = {j for j in range(len(self.params)) if self.has_state(j)}
        if known and stepped != known:
            # one step count per member stands for every parameter's: all must step together (as they
            # do: every trainable parameter of a regime's step gets a gradient every step)
            raise VinyError("StackedAdamW: the parameters with gradients changed between steps")
        self.step_count += 1 if active is None else active.to(self.step_count.dtype)
        if self.fused:
            self._fused_step(grads, active)
            return
        steps = self.step_count.double()  # torch reads its float32 step into a Python double
        bias_correction1 = 1 - beta1**steps
        bias_correction2 = 1 - beta2**steps
        step_size = (-(self.lr / bias_correction1)).float()
        bias_correction2_sqrt = bias_correction2.sqrt().float()
        decay = (1 - self.lr * self.weight_decay).float()
        for j, p, grad in grads:
            exp_avg, exp_avg_sq = self._moments(j)
            shape = (-1,) + (1,) * (p.ndim - 1)
            new_avg = torch.lerp(exp_avg, grad, 1 - beta1)
            new_avg_sq = exp_avg_sq.mul(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (new_avg_sq.sqrt() / bias_correction2_sqrt.view(shape)).add_(self.eps)
            # torch: param.mul_(1 - lr * wd), then param.addcdiv_(exp_avg, denom, value=-step_size),
            # which computes param + (value * exp_avg) / denom
            new_p = p.mul(decay.view(shape)).add_(new_avg.mul(step_size.view(shape)).div_(denom))
            if active is None:
                exp_avg.copy_(new_avg), exp_avg_sq.copy_(new_avg_sq), p.copy_(new_p)
            else:
                keep = active.view(shape)
                exp_avg.copy_(torch.where(keep, new_avg, exp_avg))
                exp_avg_sq.copy_(torch.where(keep, new_avg_sq, exp_avg_sq))
                p.copy_(torch.where(keep, new_p, p))

    def _fused_step(self, grads: list, active: torch.Tensor | None) -> None:
        """Each stepping member's update by torch's fused AdamW kernel on its slices of the stacks, with
        its own rate and step count (already counted by ``step``)."""
        beta1, beta2 = self.betas
        moments = [self._moments(j) for j, _, _ in grads]
        members = range(len(self)) if active is None else active.nonzero().flatten().tolist()
        for i in members:
            torch._fused_adamw_(
                [p[i] for _, p, _ in grads],
                [g[i] for _, _, g in grads],
                [avg[i] for avg, _ in moments],
                [avg_sq[i] for _, avg_sq in moments],
                [],
                [self.step_count[i]] * len(grads),
                lr=float(self.lr[i]),
                beta1=beta1,
                beta2=beta2,
                weight_decay=self.weight_decay,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )

    def member_state(self, i: int, j: int) -> dict | None:
        """Member ``i``'s AdamW state of parameter ``j``, as torch's AdamW keeps it (step a float32
        scalar tensor, here on the stack's device), or None before its first step."""
        if not self.has_state(j):
            return None
        return {
            "step": self.step_count[i].clone(),
            "exp_avg": self.exp_avg[j][i].clone(),
            "exp_avg_sq": self.exp_avg_sq[j][i].clone(),
        }

    @torch.no_grad()
    def load_member_state(self, i: int, j: int, state: dict) -> None:
        """Member ``i``'s torch AdamW state of parameter ``j`` (a resumed run's): its moments and its step
        count (the caller checks that the member's parameters agree on it)."""
        exp_avg, exp_avg_sq = self._moments(j)
        exp_avg[i].copy_(state["exp_avg"])
        exp_avg_sq[i].copy_(state["exp_avg_sq"])
        self.step_count[i] = float(state["step"])

    def set_lr(self, i: int, lr: float) -> None:
        self.lr[i] = lr  # in place: a captured step reads the new rate

    def keep(self, index: torch.Tensor) -> None:
        """Go on with the members at ``index`` only (their parameters, already selected by the caller,
        replace ``params``: ``replace_params``)."""
        self.lr = self.lr.index_select(0, index)
        self.step_count = self.step_count.index_select(0, index)
        for j in range(len(self.params)):
            if self.has_state(j):
                self.exp_avg[j] = self.exp_avg[j].index_select(0, index)
                self.exp_avg_sq[j] = self.exp_avg_sq[j].index_select(0, index)

    def replace_params(self, params: list[torch.Tensor]) -> None:
        self.params = list(params)
