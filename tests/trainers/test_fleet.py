"""Fleets (viny_probe.trainers.fleet): K runs in lockstep, each member's numbers equal to training it
alone, to float tolerance."""

import json

import pytest
import torch

from viny_probe.checkpoint import load_checkpoint, save_checkpoint
from viny_probe.config import TrainConfig
from viny_probe.errors import VinyError
from viny_probe.trainers import fleet, train
from viny_probe.trainers.fleet import train_fleet

TINY = dict(model="tiny", epochs=2, batch_size=8, train_size=20, test_size=8, device="cpu")
TOL = dict(rtol=1e-4, atol=1e-5)
SCALE_FREE = ("seconds", "img_per_s", "fleet")  # wall-clock figures, and the fleet's own record


def tiny(regime: str, **kw) -> TrainConfig:
    return TrainConfig(regime=regime, **{**TINY, **kw})


def _numbers(tree, at: str = "") -> dict:
    """A results.json's values by their path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{at}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{at}/{i}").items()}
    return {at: tree}


def assert_same_run(solo_dir, fleet_dir):
    """Metrics of every epoch, held-out results, and final weights and optimiser state: equal."""
    solo = [json.loads(line) for line in (solo_dir / "metrics.jsonl").read_text().splitlines()]
    got = [json.loads(line) for line in (fleet_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(solo) == len(got) > 0
    for a, b in zip(solo, got, strict=True):
        assert set(a) == set(b) - {"fleet"}
        for k in a:
            if k not in SCALE_FREE:
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
    ra = json.loads((solo_dir / "results.json").read_text())
    rb = json.loads((fleet_dir / "results.json").read_text())
    ra.pop("final"), rb.pop("final")
    # evaluation of weights equal to float tolerance: equal to float tolerance (often bit for bit)
    na, nb = _numbers(ra), _numbers(rb)
    assert na.keys() == nb.keys()
    for k, v in na.items():
        if isinstance(v, float):
            assert nb[k] == pytest.approx(v, rel=1e-5, abs=1e-7), k
        else:
            assert nb[k] == v, k
    fa, fb = load_checkpoint(solo_dir / "final.pt"), load_checkpoint(fleet_dir / "final.pt")
    for part in ("encoder", "head"):
        assert fa[part].keys() == fb[part].keys()
        for k in fa[part]:
            torch.testing.assert_close(fb[part][k], fa[part][k], **TOL)
    ca, cb = load_checkpoint(solo_dir / "checkpoint.pt"), load_checkpoint(fleet_dir / "checkpoint.pt")
    assert ca["optimizer"]["state"].keys() == cb["optimizer"]["state"].keys()
    for j, state in ca["optimizer"]["state"].items():
        assert float(cb["optimizer"]["state"][j]["step"]) == float(state["step"])
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(cb["optimizer"]["state"][j][k], state[k], rtol=1e-3, atol=1e-7)
    assert cb["scheduler"] == ca["scheduler"]


@pytest.mark.parametrize(
    "regime,extra",
    [
        ("simmim", {}),
        ("classify", {"mixup": 0.1}),
        ("spatial", {}),
        ("spatial", {"targets": "patch-label", "dataset": "toy-scenes"}),
        ("segment", {}),
    ],
)
def test_every_regime_trains_as_a_fleet_of_four_sizes_as_each_would_alone(tmp_path, regime, extra):
    """Four members in one fleet (seeds 0-3; the third on another split) with 20, 12, 28 and 16
    training images in batches of 8: 3, 2, 4 and 2 steps per epoch, short last batches of 4 beside
    full ones (sub-steps), the learning rate halved after epoch 1 (each member at its own step), the
    12- and 16-image members leaving after step 4, when the 28-image member begins its epoch 2. Every member equals its run alone. Mutants: every
    member drawing member 0's generator (its batch order and augmentation), the losses' mean
    backpropagated instead of their sum (gradients / K), unstack skipping the optimiser state, one
    step count for all members (``StackedAdamW``: member 0's), the members sitting out a sub-step
    updated anyway (``active`` ignored), and member 0's learning rate for all, each fail here."""
    sizes = [20, 12, 28, 16]
    cfgs = [
        tiny(regime, seed=i, train_size=n, milestones=(1,), gamma=0.5, split_seed=int(i == 2), **extra)
        for i, n in enumerate(sizes)
    ]
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"solo{i}", progress=False)
    out = train_fleet([(cfg, tmp_path / f"fleet{i}", False) for i, cfg in enumerate(cfgs)], progress=False)
    assert [m.error for m in out] == [None] * 4
    assert [m.fleet_size for m in out] == [4, 4, 4, 4]
    for i in range(4):
        assert_same_run(tmp_path / f"solo{i}", tmp_path / f"fleet{i}")
    # how many members the fleet had as each epoch began
    fleets = [
        [
            json.loads(line)["fleet"]
            for line in (tmp_path / f"fleet{i}" / "metrics.jsonl").read_text().splitlines()
        ]
        for i in range(4)
    ]
    assert fleets == [[4, 4], [4, 4], [4, 2], [4, 4]]


def test_a_draw_is_its_own_run_alone_and_in_a_fleet(tmp_path):
    """A stage's later draw (config.draw, a plan's unshared stage) trains as the run whose seed is its
    random_seed, alone and as a member beside draw 0 of the same seed. Mutants killed: the run's
    initialisation seeded with cfg.seed (loop.py), its epoch generator from cfg.seed (loop.py), the
    fleet's generators from cfg.seed (fleet.py: the draw-7 member differs from its run alone)."""
    drawn = tiny("segment", seed=1, draw=7)
    same = tiny("segment", seed=drawn.random_seed)
    train(drawn, tmp_path / "drawn", progress=False)
    train(same, tmp_path / "same", progress=False)
    a, b = load_checkpoint(tmp_path / "drawn" / "final.pt"), load_checkpoint(tmp_path / "same" / "final.pt")
    for k in a["encoder"]:
        torch.testing.assert_close(a["encoder"][k], b["encoder"][k], rtol=0, atol=0)
    plain = tiny("segment", seed=1)
    out = train_fleet([(plain, tmp_path / "f0", False), (drawn, tmp_path / "f7", False)], progress=False)
    assert [m.error for m in out] == [None, None] and out[0].fleet_size == 2
    assert_same_run(tmp_path / "drawn", tmp_path / "f7")
    c = load_checkpoint(tmp_path / "f0" / "final.pt")
    assert not torch.equal(c["encoder"]["pos_embed"], a["encoder"]["pos_embed"])


def _parents(tmp_path):
    """Two SimMIM parents; a third whose final norm's weight is finite but so large (3e38, near float32's
    largest) that its tokens overflow to infinity: the loss of a run from it goes non-finite at once.
    (Infinite weights are refused when the checkpoint is read: tests/faults/test_bad_inputs.py.)"""
    a = train(tiny("simmim", seed=0, epochs=1), tmp_path / "pa", progress=False).final_checkpoint
    b = train(tiny("simmim", seed=1, epochs=1), tmp_path / "pb", progress=False).final_checkpoint
    ckpt = load_checkpoint(b)
    ckpt["encoder"]["norm.weight"] = torch.full_like(ckpt["encoder"]["norm.weight"], 3e38)
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, ckpt)
    return str(a), str(b), str(bad)


@pytest.mark.parametrize("check_every", [1, 3])
def test_a_member_whose_loss_goes_non_finite_stops_alone(tmp_path, monkeypatch, check_every):
    """Segmentation members fine-tuned from different parents; the second member's parent is poisoned.
    It stops with the message its run alone gives (naming the first bad batch, also when the losses
    are read only every 3 steps, as on a GPU); the other two go on and equal their runs alone.
    Mutants: not taking the stopped member out of the per-member generators (the others then draw
    its batches), and ignoring the check, each fail here."""
    monkeypatch.setattr(fleet, "loss_check_interval", lambda device: check_every)
    good_a, good_b, bad = _parents(tmp_path)
    cfgs = [
        tiny("segment", seed=0, init=good_a),
        tiny("segment", seed=1, init=bad),
        tiny("segment", seed=2, init=good_b),
    ]
    with pytest.raises(VinyError, match="non-finite loss at epoch 1, batch 1;") as alone:
        train(cfgs[1], tmp_path / "solo1", progress=False)
    for i in (0, 2):
        train(cfgs[i], tmp_path / f"solo{i}", progress=False)
    out = train_fleet([(cfg, tmp_path / f"fleet{i}", False) for i, cfg in enumerate(cfgs)], progress=False)
    assert out[0].error is None and out[2].error is None
    assert isinstance(out[1].error, VinyError)
    assert str(out[1].error) == str(alone.value).replace("solo1", "fleet1")
    assert not (tmp_path / "fleet1" / "final.pt").exists()
    for i in (0, 2):
        assert_same_run(tmp_path / f"solo{i}", tmp_path / f"fleet{i}")


def assert_identical_run(reference_dir, run_dir):
    """Every metrics line (but its wall-clock figures and fleet size), results.json, the final weights
    and the last checkpoint's AdamW state and schedule: bit for bit."""

    def lines(d):
        records = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in SCALE_FREE} for r in records]

    def results(d):
        found = json.loads((d / "results.json").read_text())
        return {**found, "final": {k: v for k, v in found["final"].items() if k not in SCALE_FREE}}

    assert lines(run_dir) == lines(reference_dir)
    assert results(run_dir) == results(reference_dir)
    fa, fb = load_checkpoint(reference_dir / "final.pt"), load_checkpoint(run_dir / "final.pt")
    for part in ("encoder", "head"):
        assert fa[part].keys() == fb[part].keys()
        for k in fa[part]:
            assert torch.equal(fb[part][k], fa[part][k]), (part, k)
    ca, cb = load_checkpoint(reference_dir / "checkpoint.pt"), load_checkpoint(run_dir / "checkpoint.pt")
    assert ca["optimizer"]["state"].keys() == cb["optimizer"]["state"].keys()
    for j, state in ca["optimizer"]["state"].items():
        for k, v in state.items():
            assert torch.equal(cb["optimizer"]["state"][j][k], v), (j, k)
    assert cb["scheduler"] == ca["scheduler"]


def test_the_log_says_what_trains_together():
    """Members resumed at different epochs train as one fleet, each from its own epoch; members with
    every epoch trained already are named apart. Mutant watched failing: the epochs left out."""
    assert fleet.describe_fleet(["a", "b"], [0, 0], 3) == "2 stages as one fleet"
    assert fleet.describe_fleet(["a", "b", "c"], [2, 1, 1], 3) == (
        "3 stages as one fleet, each from its own epoch (b at 1, c at 1, a at 2)"
    )
    assert fleet.describe_fleet(["a", "b"], [1, 3], 3) == "a alone; b: every epoch trained already"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_an_interrupted_fleet_resumes_each_member_from_its_epoch_and_equals_the_uninterrupted_fleet(
    tmp_path, monkeypatch, precision
):
    """A fleet of members with 24, 12 and 24 training images (3, 2 and 3 steps per epoch, 3 epochs) is
    interrupted at its 5th checkpoint write (the first member's epoch 2; the second saved its epoch 2
    already): the members hold epochs 1, 2 and 1. Resumed, they train as one fleet again, each from its
    own epoch (the second leaves first, after its epoch 3), and every member equals the uninterrupted
    fleet's bit for bit (each metrics line too, with how many members the fleet had as its epoch
    began), in fp32 and in bf16 (skipped where the CPU emulates bf16). The activation budget is cut so
    that a fleet of 3 steps in micro-batches of 4 and one of 2 in whole batches of 8: the resumed fleet
    steps in the whole fleet's even after the second member left (the first member's last full batch of
    epoch 2 steps beside it uninterrupted, without it resumed). Watched failing: micro-batches taken
    from the members in the stack at each step, on the numbers; every member restarting at epoch 1
    (its checkpoint's epoch ignored), on the epochs of the metrics."""
    from viny_probe.precision import cpu_bf16_native
    from viny_probe.trainers import engine
    from viny_probe.trainers.loop import run_model_config

    native, how = cpu_bf16_native()
    if precision == "bf16" and not native:
        pytest.skip(f"bf16 is emulated on this CPU ({how})")
    per_image = run_model_config(tiny("segment")).activation_bytes_per_image()
    per_image //= 2 if precision == "bf16" else 1
    monkeypatch.setattr(engine, "ACTIVATION_BUDGET", 2 * 8 * per_image)  # 2 members x 8 images fit, 3 do not
    cfgs = [
        tiny("segment", seed=s, epochs=3, precision=precision, train_size=n)
        for s, n in enumerate([24, 12, 24])
    ]
    reference = train_fleet(
        [(cfg, tmp_path / f"ref{i}", False) for i, cfg in enumerate(cfgs)], progress=False
    )
    assert [m.error for m in reference] == [None] * 3
    original = fleet.Run.end_epoch
    saves = {"n": 0}

    def interrupted(self, epoch, *a, **k):
        saves["n"] += 1
        if saves["n"] == 5:  # epoch 2 of member 0 (saves: 1 at step 2, 0 and 2 at 3, 1 at 4, 0 at 6)
            raise KeyboardInterrupt
        return original(self, epoch, *a, **k)

    members = [(cfg, tmp_path / f"fleet{i}", False) for i, cfg in enumerate(cfgs)]
    monkeypatch.setattr(fleet.Run, "end_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_fleet(members, progress=False)
    monkeypatch.setattr(fleet.Run, "end_epoch", original)
    epochs = [load_checkpoint(tmp_path / f"fleet{i}" / "checkpoint.pt")["epoch"] for i in range(3)]
    assert epochs == [1, 2, 1]
    said = []
    out = train_fleet([(cfg, d, True) for cfg, d, _ in members], progress=False, log=said.append)
    assert said == ["3 stages as one fleet, each from its own epoch (fleet0 at 1, fleet2 at 1, fleet1 at 2)"]
    assert [m.error for m in out] == [None] * 3
    assert [m.fleet_size for m in out] == [3, 3, 3]
    for i in range(3):
        records = [
            json.loads(line) for line in (tmp_path / f"fleet{i}" / "metrics.jsonl").read_text().splitlines()
        ]
        assert [r["epoch"] for r in records] == [1, 2, 3]
        assert [r["fleet"] for r in records] == ([3, 3, 3] if i == 1 else [3, 3, 2])
        assert_identical_run(tmp_path / f"ref{i}", tmp_path / f"fleet{i}")


def test_runs_train_together_only_when_their_steps_match(tmp_path):
    """Different learning rates or batch sizes make separate fleets; seeds, splits, parents and image
    counts do not. Mutant watched failing: the image count kept in ``fleet_key``."""
    runs = [
        fleet.Run(tiny("simmim", seed=0), tmp_path / "a"),
        fleet.Run(tiny("simmim", seed=1, split_seed=3), tmp_path / "b"),
        fleet.Run(tiny("simmim", seed=0, lr=0.01), tmp_path / "c"),
        fleet.Run(tiny("simmim", seed=0, batch_size=4), tmp_path / "d"),
        fleet.Run(tiny("simmim", seed=0, train_size=12), tmp_path / "e"),
    ]
    groups = fleet.group_runs(runs)
    assert [[r.run_dir.name for r in g] for g in groups] == [["a", "b", "e"], ["c"], ["d"]]


def test_the_replay_path_steps_as_alone(tmp_path, monkeypatch):
    """The CUDA-graph path's bookkeeping, on a CPU: a stand-in "graph" replays the eager step on the
    static input buffers and the static mask of stepping members it copied in. Members of 20, 12 and 20
    images in batches of 8 (3, 2 and 3 steps per epoch, 3 epochs, the rate halved after epoch 2):
    warm-up batches and short batches go eagerly, full batches by replay, also while a member sits out
    at its short batch (the mask) and after a member's rate changed (the graph reads the rates); the
    graph is captured again once the 12-image member left. Every member still equals its run alone.
    Mutants: replaying a stale buffer (inputs not copied in), and the mask not copied in (a member
    sitting out updated by the replay), each fail here."""
    replays = {"n": 0, "captures": 0}

    def capture(self, inputs, micro_batch, precision):
        self._static = {k: v.clone() for k, v in inputs.items()}
        self._active = torch.ones(len(self), dtype=torch.bool)
        replays["captures"] += 1

        def replay():
            replays["n"] += 1
            self._out = self._eager(self._static, micro_batch, precision, self._active)

        self._graph = type("Graph", (), {"replay": staticmethod(replay)})()

    monkeypatch.setattr(fleet, "graphs_available", lambda device: True)
    monkeypatch.setattr(fleet.Stack, "WARMUP", 1)
    monkeypatch.setattr(fleet.Stack, "_capture", capture)
    cfgs = [
        tiny("segment", seed=s, epochs=3, milestones=(2,), gamma=0.5, train_size=n)
        for s, n in enumerate([20, 12, 20])
    ]
    for i, cfg in enumerate(cfgs):
        train(cfg, tmp_path / f"solo{i}", progress=False)
    out = train_fleet([(c, tmp_path / f"fleet{i}", False) for i, c in enumerate(cfgs)], progress=False)
    assert [m.error for m in out] == [None] * 3
    # Steps (b: the members' batches, F full, s short): 1 FFF eager warm-up; 2 FsF capture + replay
    # with the 12 sitting out, s eager; 3 sFs replay (F), eager (s s); 4 FsF replay, eager; 5 FFF
    # replay (the 12 at its new rate); 6 sss eager; the 12 leaves; 7 FF eager warm-up; 8 FF capture +
    # replay; 9 ss eager.
    assert replays["captures"] == 2 and replays["n"] == 5
    for i in range(3):
        assert_same_run(tmp_path / f"solo{i}", tmp_path / f"fleet{i}")
