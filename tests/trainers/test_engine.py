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
