"""Micro-batches side by side on a CPU (trainers/streams.py): the same gradients, losses and statistics
as the sequential loop, the parts on the streams' threads, and the choice of streams."""

import json
import threading

import pytest
import torch
from torch import nn

from viny_probe.config import TrainConfig
from viny_probe.model import model_config
from viny_probe.perf.harness import TrainerSetup, bench_data, fixed_batch, make_trainer
from viny_probe.trainers import loop, train
from viny_probe.trainers.engine import activation_bytes, forward_backward
from viny_probe.trainers.streams import MIN_PART_BYTES, resolve_streams

CPU = torch.device("cpu")


@pytest.fixture
def threads():
    """Set torch's thread count inside a test; the count before is restored after it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


class Recording(nn.Module):
    """A train step that notes the thread each part runs on and that thread's torch threads, with one
    parameter no loss reaches (its gradient must stay as it was)."""

    def __init__(self, step: nn.Module):
        super().__init__()
        self.step, self.unused = step, nn.Parameter(torch.zeros(3))
        self.calls: list[tuple[str, int]] = []

    def forward(self, inputs):
        self.calls.append((threading.current_thread().name, torch.get_num_threads()))
        return self.step(inputs)


def _segment_step(regime: str = "segment"):
    cfg = model_config("tiny")
    data = bench_data(cfg, 8)
    trainer = make_trainer(regime, cfg, data, CPU, TrainerSetup("fp32"))
    inputs = trainer.regime.prepare(fixed_batch(data, 8, CPU), torch.Generator().manual_seed(1))
    return Recording(trainer.step_module), inputs


def _gradients(step, inputs, precision: str, streams: int, start: list):
    """forward_backward over batch 8 in parts of 2, each parameter's .grad starting at ``start``."""
    for p, g in zip(step.parameters(), start, strict=True):
        p.grad = None if g is None else g.clone()
    loss, stats = forward_backward(step, inputs, 2, CPU, precision, streams=streams)
    return loss, stats, [None if p.grad is None else p.grad.clone() for p in step.parameters()]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("regime", ["segment", "simmim"])
def test_side_by_side_gives_the_sequential_loops_bits(threads, precision, regime):
    """Four parts on two streams of one thread each against the sequential loop on one thread: the
    same loss, statistics and gradients bit for bit, added onto the gradients already there (a
    parameter no part reaches keeps None). Mutants killed: only the first part's gradients kept
    (``p.grad.add_`` dropped), the parts' gradients added in reverse order, each stream on all of
    torch's threads (``share`` = the thread count), the unused parameter's None made zeros."""
    step, inputs = _segment_step(regime)
    g = torch.Generator().manual_seed(2)
    start = [
        None if i % 3 == 0 else torch.randn(p.shape, generator=g) for i, p in enumerate(step.parameters())
    ]
    unused = [p is step.unused for p in step.parameters()].index(True)  # no loss reaches it
    start[unused] = None
    threads(2)
    side = _gradients(step, inputs, precision, 2, start)
    assert {name.startswith("viny-stream") for name, _ in step.calls} == {True} and len(step.calls) == 4
    threads(1)
    alone = _gradients(step, inputs, precision, 1, start)
    assert torch.equal(side[0], alone[0])
    assert side[1].keys() == alone[1].keys() and all(torch.equal(side[1][k], alone[1][k]) for k in side[1])
    assert side[2][unused] is None and alone[2][unused] is None
    for a, b in zip(side[2], alone[2], strict=True):
        assert (a is None and b is None) or torch.equal(a, b)
    assert sum(a is not None for a in side[2]) == len(start) - 1


def test_each_part_runs_on_a_stream_thread_with_its_share_of_threads(threads):
    """With 4 torch threads and 2 streams, every part runs on a stream's thread with 2 torch threads,
    and the caller keeps its 4; with streams=1 every part runs on the caller's thread. Mutants killed:
    forward_backward ignoring ``streams``, the share not divided by the streams."""
    step, inputs = _segment_step()
    threads(4)
    forward_backward(step, inputs, 2, CPU, "fp32", streams=2)
    assert len(step.calls) == 4
    assert all(name.startswith("viny-stream") and n == 2 for name, n in step.calls), step.calls
    assert torch.get_num_threads() == 4
    step.calls.clear()
    forward_backward(step, inputs, 2, CPU, "fp32", streams=1)
    assert step.calls == [(threading.current_thread().name, 4)] * 4


def test_an_error_in_a_part_is_raised_to_the_caller(threads):
    class Failing(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, inputs):
            if inputs["x"][0] > 3:
                raise ValueError("part two failed")
            return (self.w * inputs["x"]).mean(), {}

    threads(2)
    with pytest.raises(ValueError, match="part two failed"):
        forward_backward(Failing(), {"x": torch.arange(8.0)}, 4, CPU, "fp32", streams=2)


def test_streams_are_chosen_for_large_eager_cpu_micro_batches_of_one_process(threads):
    """Auto: 2 streams for micro-batches of at least MIN_PART_BYTES of activations on a CPU with 2
    threads, else 1; asked for: as given on a CPU; never on a GPU, compiled or under DDP. And what the
    study's and the demo's auto micro-batches resolve to. Mutants killed: the size test dropped (the
    tiny model's micro-batches side by side), the compile and DDP exclusions dropped."""
    threads(2)
    big = MIN_PART_BYTES
    assert resolve_streams(0, CPU, part_bytes=big) == 2 and resolve_streams(0, CPU, part_bytes=big - 1) == 1
    assert resolve_streams(1, CPU, part_bytes=big) == 1 and resolve_streams(3, CPU) == 3
    assert resolve_streams(0, CPU, part_bytes=big, compiled=True) == 1  # torch.compile: one thread at a time
    assert resolve_streams(0, CPU, part_bytes=big, ranks=2) == 1  # DDP's hooks expect backward()
    assert resolve_streams(2, torch.device("cuda"), part_bytes=big) == 1
    viny, demo = model_config("viny"), model_config("demo")
    for precision, micro in (("fp32", 16), ("bf16", 32)):  # ViNy at batch 64: 4 x 16, 2 x 32
        assert loop.micro_batch_size(0, CPU, 64, viny, precision) == micro
        assert resolve_streams(0, CPU, part_bytes=micro * activation_bytes(viny, precision)) == 2
    assert resolve_streams(0, CPU, part_bytes=32 * activation_bytes(demo)) == 1  # the demo's halves
    threads(1)
    assert resolve_streams(0, CPU, part_bytes=big) == 1


def test_a_run_takes_auto_streams_for_micro_batches_with_enough_activations(tmp_path, threads, monkeypatch):
    """With the threshold lowered below the tiny model's micro-batch of 2, auto takes 2 streams in a
    run and trains as --streams 2 does, bit for bit. Mutant killed: the loop resolving auto without
    its micro-batches' activations (``part_bytes=0``)."""
    from viny_probe.trainers import streams

    threads(2)
    monkeypatch.setattr(streams, "MIN_PART_BYTES", 2 * activation_bytes(model_config("tiny")))
    cfg = dict(model="tiny", epochs=1, batch_size=8, train_size=8, test_size=8, device="cpu", micro_batch=2)
    auto = train(TrainConfig(regime="segment", **cfg), tmp_path / "auto", progress=False)
    two = train(TrainConfig(regime="segment", streams=2, **cfg), tmp_path / "two", progress=False)
    assert json.loads((tmp_path / "auto" / "data.json").read_text())["streams"] == 2
    assert auto.history[0]["loss"] == two.history[0]["loss"]


def test_a_run_records_its_streams_and_matches_the_sequential_run(tmp_path, threads):
    """The same two-epoch run with its 4 micro-batches side by side (--streams 2) and one after the
    other (auto, which the tiny model's small micro-batches resolve to 1): the run says which in
    data.json, and its metrics and weights agree to float noise (one thread per part against two)."""
    threads(2)
    cfg = dict(model="tiny", epochs=2, batch_size=8, train_size=16, test_size=8, device="cpu", lr=5e-3)
    side = train(
        TrainConfig(regime="segment", micro_batch=2, streams=2, **cfg), tmp_path / "side", progress=False
    )
    seq = train(TrainConfig(regime="segment", micro_batch=2, **cfg), tmp_path / "seq", progress=False)
    assert json.loads((tmp_path / "side" / "data.json").read_text())["streams"] == 2
    assert json.loads((tmp_path / "side" / "config.json").read_text())["streams"] == 2
    assert json.loads((tmp_path / "seq" / "data.json").read_text())["streams"] == 1
    for a, b in zip(side.history, seq.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    a = torch.load(side.final_checkpoint, weights_only=True)["encoder"]
    b = torch.load(seq.final_checkpoint, weights_only=True)["encoder"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_a_fleet_trains_its_micro_batches_side_by_side(threads, monkeypatch):
    """A fleet on the stacked path takes the streams it is given (2: its batch of 8 in two micro-batches
    of 4, each on a stream's thread); auto resolves by the activations of all members' micro-batch
    (the tiny model's: 1); on the vmap path it steps one micro-batch after the other (vmap's
    functional_call swaps the template's parameters, which two threads cannot share). Mutants killed:
    ``_sub_step`` not passing ``stack.streams`` to forward_backward; one member's activations counted."""
    from viny_probe.perf.fleet import make_fleet
    from viny_probe.trainers import streams

    threads(2)
    cfg = model_config("tiny")
    assert make_fleet("segment", cfg, bench_data(cfg, 8), CPU, 2, batch=8).stack.streams == 1
    # both members' activations count: a threshold that two members' whole batches reach, one's not
    monkeypatch.setattr(streams, "MIN_PART_BYTES", 2 * 8 * activation_bytes(cfg))
    assert make_fleet("segment", cfg, bench_data(cfg, 8), CPU, 2, batch=8).stack.streams == 2
    monkeypatch.undo()
    two = TrainerSetup(streams=2)
    fleet = make_fleet("segment", cfg, bench_data(cfg, 8), CPU, 2, two, batch=8)
    fleet.micro = 4
    assert fleet.stack.streams == 2
    seen, forward = [], fleet.stack._forward

    def recording(*args):
        seen.append(threading.current_thread().name)
        return forward(*args)

    fleet.stack._forward = recording
    fleet.step()
    assert len(seen) == 2 and all(name.startswith("viny-stream") for name in seen), seen
    vmap = make_fleet("segment", cfg, bench_data(cfg, 8), CPU, 2, two, batch=8, path="vmap")
    assert vmap.stack.streams == 1
