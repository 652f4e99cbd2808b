"""The engine's step settings (``engine.StepSettings``): what every step of a run shares, set once."""

from __future__ import annotations

import torch

from viny_probe.trainers.engine import StepSettings, loss_check_interval


def test_step_settings_read_the_loss_as_often_as_the_loop_does_by_default():
    """Left out, ``check_every`` is ``loss_check_interval`` of the device (every step on a CPU, every 25th
    on a GPU); given, it is kept. Mutant seen failing: ``__post_init__`` setting 1 instead of
    ``loss_check_interval(self.device)``."""
    gpu = torch.device("cuda")  # a device object only: nothing runs on it
    assert StepSettings(gpu, "bf16", 8).check_every == loss_check_interval(gpu) > 1
    assert StepSettings(torch.device("cpu"), "fp32", 8).check_every == 1
    assert StepSettings(gpu, "fp32", 8, check_every=3).check_every == 3


def test_a_cpu_run_steps_with_torchs_fused_adamw_and_it_updates_as_the_default_does():
    """The loop's AdamW on a CPU is torch's fused one (mutant: fused on CUDA only, killed by the flag)
    and it takes the same step as torch's default AdamW, to float rounding (mutant: the weight decay
    not passed, killed by the values)."""
    from viny_probe.trainers.engine import make_optimizer

    torch.manual_seed(0)
    params = [torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    ours = make_optimizer(params, 1e-2, 0.5, torch.device("cpu"))
    reference = torch.optim.AdamW(twins, lr=1e-2, weight_decay=0.5, foreach=False)
    assert ours.param_groups[0]["fused"] is True
    for _ in range(3):
        grads = [torch.randn_like(p) for p in params]
        for p, t, g in zip(params, twins, grads, strict=True):
            p.grad, t.grad = g.clone(), g.clone()
        ours.step(), reference.step()
    for p, t in zip(params, twins, strict=True):
        torch.testing.assert_close(p, t, rtol=1e-6, atol=1e-7)
