"""The benchmark trains with the training engine itself: its epoch and its fixed-batch step give exactly
what `train()` gives, and both match one epoch written out by hand (the spec of a training step)."""

from __future__ import annotations

import pytest
import torch

from viny_probe.checkpoint import load_checkpoint
from viny_probe.config import TrainConfig
from viny_probe.errors import VinyError
from viny_probe.model import ViNy
from viny_probe.perf import (
    BenchOptions,
    TrainerSetup,
    analytic_flops,
    fixed_batch,
    make_trainer,
    run_bench,
    run_epoch,
)
from viny_probe.registry import REGIMES
from viny_probe.trainers import Regime, train
from viny_probe.trainers.base import RegimeData, device_batch
from viny_probe.trainers.engine import epoch_generator
from viny_probe.trainers.loop import run_model_config

CPU = torch.device("cpu")


def _config(regime: str, streams: int = 1) -> TrainConfig:
    """3 batches of 8 (so a missing zero_grad accumulates), an lr that moves the weights visibly, and a
    seed whose epoch generator is not simply ``manual_seed(seed)`` (as it is for seed 0, epoch 0).
    ``streams`` 1: the whole batch at once, as the hand-written reference steps; 2: the batch in two
    micro-batches of 4, side by side."""
    return TrainConfig(
        regime=regime,
        model="tiny",
        epochs=1,
        batch_size=8,
        train_size=24,
        test_size=8,
        device="cpu",
        lr=5e-3,
        seed=3,
        streams=streams,
        micro_batch=4 if streams > 1 else 0,
    ).resolved()


def _reference(cfg: TrainConfig, train_set, batches: list[torch.Tensor], gen: torch.Generator):
    """Seeded model, then for each batch (indices into ``train_set``): augment from ``gen``, zero the
    gradients, backpropagate the mean loss, one AdamW step. Returns encoder, head and the losses."""
    mcfg = run_model_config(cfg)
    regime = REGIMES[cfg.regime]()
    torch.manual_seed(cfg.seed)
    encoder = ViNy(mcfg)
    head = regime.make_head(mcfg, RegimeData(train=train_set))
    encoder.cls_token.requires_grad_(regime.uses_cls)
    params = [*encoder.parameters(), *head.parameters()]
    # torch's fused AdamW, as a CPU run steps (the loop's choice, engine.make_optimizer)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    losses = []
    for index in batches:
        inputs = regime.prepare(device_batch(train_set, index, CPU), gen)
        optimizer.zero_grad()
        loss, _ = regime.compute_loss(encoder, head, inputs)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return encoder, head, losses


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("regime", ["simmim", "segment"])
def test_bench_epoch_is_the_training_epoch(tmp_path, regime, streams):
    """One epoch of `train()` and one of the bench's ``run_epoch`` on the same images and seed: the same
    weights bit for bit, the same mean loss, both with the whole batch at once and with two
    micro-batches side by side (the bench follows the loop's streams: mutant killed, the harness's
    ``StepSettings`` without them); and with the whole batch, the weights of the hand-written reference.
    Mutants seen failing: ``optimizer.zero_grad`` dropped from ``engine.train_step`` (bench and train
    still agree, the reference does not); ``optimizer.step`` skipped there (likewise); ``run_epoch``
    drawing from ``torch.Generator().manual_seed(seed)`` instead of the run's ``epoch_generator``
    (bench and train disagree)."""
    cfg = _config(regime, streams)
    trained = train(cfg, tmp_path / "run", progress=False)
    ckpt = load_checkpoint(trained.final_checkpoint)

    mcfg = run_model_config(cfg)
    train_set = REGIMES[regime]().load_data(cfg, mcfg).train
    assert len(train_set) == 24
    setup = TrainerSetup(lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr = make_trainer(regime, mcfg, train_set, CPU, setup, seed=cfg.seed)
    tr.streams, tr.micro_batch = streams, cfg.micro_batch
    means = run_epoch(tr, train_set, cfg.batch_size, seed=cfg.seed, epoch=0)

    _assert_same_weights(ckpt["encoder"], tr.encoder.state_dict())
    _assert_same_weights(ckpt["head"], tr.head.state_dict())
    assert means["loss"] == trained.history[0]["loss"]

    gen = epoch_generator(cfg.seed, 0)
    order = torch.randperm(len(train_set), generator=gen)
    if streams != 1:  # Adam's first steps amplify the micro-batches' rounding: no tolerance holds
        return
    encoder, head, losses = _reference(cfg, train_set, list(order.split(cfg.batch_size)), gen)
    _assert_same_weights(encoder.state_dict(), tr.encoder.state_dict())
    _assert_same_weights(head.state_dict(), tr.head.state_dict())
    assert means["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-6)


def test_bench_fixed_batch_step_is_the_training_step():
    """The bench's step timing (``Trainer.step``, the engine's ``train_step``) on one resident batch,
    three times: the reference's weights and losses exactly. Mutant seen failing: ``Trainer.step``
    with its own copy of the step that leaves out ``zero_grad``."""
    cfg = _config("segment")
    mcfg = run_model_config(cfg)
    train_set = REGIMES["segment"]().load_data(cfg, mcfg).train
    setup = TrainerSetup(lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr = make_trainer("segment", mcfg, train_set, CPU, setup, seed=cfg.seed)
    tr.streams = 1  # the whole batch at once, as the reference
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        tr.step(fixed_batch(train_set, 8, CPU), gen)

    first = torch.arange(8)
    encoder, head, losses = _reference(cfg, train_set, [first] * 3, torch.Generator().manual_seed(1))
    _assert_same_weights(encoder.state_dict(), tr.encoder.state_dict())
    _assert_same_weights(head.state_dict(), tr.head.state_dict())
    assert [float(v) for v in tr.losses] == losses


def test_unknown_regime_names_the_registered_ones():
    for call in (
        lambda: analytic_flops("tiny", "simclr"),
        lambda: make_trainer("simclr", None, None, CPU),
        lambda: run_bench(BenchOptions(device="cpu", model="tiny", regimes=("simclr",))),
    ):
        with pytest.raises(VinyError, match="unknown regime 'simclr'; choose one of") as err:
            call()
        assert all(name in str(err.value) for name in REGIMES)


def test_head_flops_come_from_the_regime(monkeypatch):
    """perf asks the regime for its head; it has no table of its own."""
    monkeypatch.setattr(REGIMES["spatial"], "head_macs", lambda self, cfg, classes: 1000 * classes)
    assert analytic_flops("tiny", "spatial")["head"] == 2 * 1000 * 3
    assert analytic_flops("tiny", "spatial", 5)["head"] == 2 * 1000 * 5


def test_a_regime_that_does_not_count_its_head_is_named():
    class Toy(Regime):
        name = "toy-uncounted"

    with REGIMES.registered("toy-uncounted", Toy):
        with pytest.raises(VinyError, match="'toy-uncounted' does not count its head"):
            analytic_flops("tiny", "toy-uncounted")
