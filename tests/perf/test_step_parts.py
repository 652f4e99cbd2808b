"""benchmarks/step_parts.py: self times by the nearest timed ancestor, and a step left as it was."""

import importlib.util
from pathlib import Path

import torch

from viny_probe import model
from viny_probe.model import model_config
from viny_probe.perf.harness import TrainerSetup, bench_data, fixed_batch, make_trainer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "step_parts.py"


def _script():
    spec = importlib.util.spec_from_file_location("step_parts", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_self_time_subtracts_the_nearest_timed_ancestor_of_the_same_direction():
    """Kills: backward parts subtracted from the forward parents (the " [backward]" suffix dropped in
    the parent lookup), and a part whose parent was never called (a ModuleList) left unsubtracted."""
    timer = _script().StepTimer()
    for name, seconds in {
        "encoder": 10.0,
        "encoder.blocks.*": 6.0,  # parent "encoder.blocks" (a ModuleList) is never timed
        "encoder.blocks.*.attn": 4.0,
        "encoder.blocks.* [backward]": 5.0,
        "encoder.blocks.*.attn [backward]": 3.0,
    }.items():
        timer.add(name, seconds)
    assert timer.self_times() == {
        "encoder": 4.0,
        "encoder.blocks.*": 2.0,
        "encoder.blocks.*.attn": 4.0,
        "encoder.blocks.* [backward]": 2.0,
        "encoder.blocks.*.attn [backward]": 3.0,
    }
    assert _script().part_name("encoder", "blocks.11.attn.qkv") == "encoder.blocks.*.attn.qkv"


def test_timing_covers_the_step_and_leaves_nothing_behind():
    """Kills: a hook or wrapper not removed on exit (the trainer would keep timing, or a wrapped
    attention backward would stay on the class), the backward hooks not registered, and the untimed
    rest left out (the parts would not add up to the hooked step)."""
    cfg = model_config("tiny")
    data = bench_data(cfg, 8)
    trainer = make_trainer("segment", cfg, data, torch.device("cpu"), TrainerSetup("fp32"))
    batch = fixed_batch(data, 8, torch.device("cpu"))
    backward = model.QKVAttention.__dict__["backward"]
    results = _script().measure({"t": trainer}, batch, torch.Generator().manual_seed(0), 1, 1)
    parts, plain, hooked = results["t"]
    for name in ("prepare (augmentation)", "loss", "optimizer step", "encoder.blocks.*.attn.qkv"):
        assert parts[name] > 0, name
    assert parts["encoder.blocks.*.attn.qkv [backward]"] > 0
    assert parts["encoder.blocks.*.attn.QKVAttention [backward]"] > 0
    assert plain > 0 and hooked > 0
    assert abs(sum(parts.values()) - hooked) < 1e-9  # the untimed rest closes the step
    for m in (*trainer.encoder.modules(), *trainer.head.modules()):
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert not m._backward_pre_hooks
    assert "prepare" not in vars(trainer.regime) and "loss" not in vars(trainer.regime)
    assert "step" not in vars(trainer.optimizer)
    assert model.QKVAttention.__dict__["backward"] is backward
