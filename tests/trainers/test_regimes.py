import dataclasses
import json
import shutil

import pytest
import torch

from viny_probe.checkpoint import encoder_from_checkpoint, load_checkpoint
from viny_probe.config import TrainConfig
from viny_probe.data.base import ImageSet
from viny_probe.errors import VinyError
from viny_probe.trainers import REGISTRY, loop, train

TINY = dict(model="tiny", epochs=1, batch_size=8, train_size=16, test_size=8, device="cpu")


def tiny(regime: str, **kw) -> TrainConfig:
    return TrainConfig(regime=regime, **{**TINY, **kw})


def tiny_set(n: int) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(
        name="t",
        images=torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),
        labels=torch.arange(n) % 2,
        masks=torch.randint(0, 3, (n, 8, 8), generator=g, dtype=torch.uint8),
        class_names=["a", "b"],
    )


@pytest.mark.parametrize(
    "regime,extra",
    [
        ("simmim", {}),
        ("classify", {}),
        ("classify", {"mixup": 0.1}),
        ("spatial", {}),
        ("spatial", {"targets": "patch-label", "dataset": "toy-scenes"}),
        ("segment", {}),
    ],
)
def test_each_regime_trains_and_writes_a_loadable_run(tmp_path, regime, extra):
    result = train(tiny(regime, **extra), tmp_path / "run", progress=False)
    for name in ["config.json", "metrics.jsonl", "checkpoint.pt", "final.pt", "results.json", "data.json"]:
        assert (tmp_path / "run" / name).exists(), name
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and torch.isfinite(torch.tensor(json.loads(lines[0])["loss"]))
    ckpt = load_checkpoint(result.final_checkpoint)
    assert ckpt["regime"] == regime and ckpt["config"]["seed"] == 0
    enc = encoder_from_checkpoint(ckpt)
    assert enc.cfg.image_size == 32
    if regime == "segment":
        res = json.loads((tmp_path / "run" / "eval.json").read_text())
        assert set(res["baselines"]) == {"all_background", "position_prior"}
        assert (tmp_path / "run" / "predictions.png").stat().st_size > 1000
        # The reported mIoU and pixel accuracy are the ones its confusion matrix gives, and that matrix
        # counts every pixel of the 8 test images at 32 x 32 once (replaces a bound 0 <= mIoU <= 1 that
        # could not fail). Mutants killed: IoU's union without "- tp" (metrics.iou_from_confusion);
        # pixel accuracy scaled by 0.99.
        cm = torch.tensor(res["test"]["confusion"], dtype=torch.float64)
        assert int(cm.sum()) == 8 * 32 * 32
        tp = cm.diag()
        assert res["test"]["miou"] == pytest.approx(float((tp / (cm.sum(0) + cm.sum(1) - tp)).nanmean()))
        assert res["test"]["pixel_accuracy"] == pytest.approx(float(tp.sum() / cm.sum()))


def test_init_chains_stages_and_records_lineage(tmp_path):
    a = train(tiny("simmim"), tmp_path / "a", progress=False)
    b = train(tiny("classify", init=str(a.final_checkpoint)), tmp_path / "b", progress=False)
    c = train(tiny("segment", init=str(b.final_checkpoint)), tmp_path / "c", progress=False)
    lineage = load_checkpoint(c.final_checkpoint)["lineage"]
    assert [e["regime"] for e in lineage] == ["simmim", "classify"]
    assert all(len(e["digest"]) == 64 for e in lineage)
    # the segment run really started from the classify encoder: its first-epoch weights differ from a fresh run's
    fresh = train(tiny("segment"), tmp_path / "fresh", progress=False)
    assert fresh.history[0]["loss"] != c.history[0]["loss"]


def test_init_with_another_model_is_refused(tmp_path):
    a = train(tiny("simmim"), tmp_path / "a", progress=False)
    with pytest.raises(VinyError, match="--model"):
        train(tiny("segment", model="demo", init=str(a.final_checkpoint)), tmp_path / "b", progress=False)


class Interrupt(Exception):
    pass


def _cut_in_epoch_3(cfg: TrainConfig, run_dir, monkeypatch) -> None:
    """Train a segment run into ``run_dir`` and interrupt it at the first batch of epoch 3 (2 batches
    an epoch), so its checkpoint.pt holds epoch 2."""
    seg = REGISTRY["segment"]
    original = seg.prepare  # once per batch, however many micro-batches it is trained in
    calls = {"n": 0}

    def cut(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Interrupt
        return original(self, *a, **k)

    monkeypatch.setattr(seg, "prepare", cut)
    with pytest.raises(Interrupt):
        train(cfg, run_dir, progress=False)
    monkeypatch.setattr(seg, "prepare", original)
    assert load_checkpoint(run_dir / "checkpoint.pt")["epoch"] == 2


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    cfg = tiny("segment", epochs=3, milestones=(2,))
    whole = train(cfg, tmp_path / "whole", progress=False)

    _cut_in_epoch_3(cfg, tmp_path / "cut", monkeypatch)
    with pytest.raises(VinyError, match="--resume"):
        train(cfg, tmp_path / "cut", progress=False)
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]
    assert resumed.results["test"]["miou"] == whole.results["test"]["miou"]
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 3


def test_resume_restores_the_schedule_when_the_cut_comes_before_a_milestone(tmp_path, monkeypatch):
    """Milestone 3 of 4 epochs, cut in epoch 3 (checkpoint at 2): only a restored scheduler knows that
    two of its three steps before the decay are done, so epoch 4 trains at the decayed rate as in the
    uninterrupted run. Mutant watched failing: ``scheduler.load_state_dict`` dropped from the resume
    (a fresh scheduler decays one epoch late: epoch 4's loss differs). The cut after a milestone, as in
    test_resume_equals_uninterrupted, cannot tell, since the optimizer's saved lr is decayed already."""
    cfg = tiny("segment", epochs=4, milestones=(3,), gamma=0.1)
    whole = train(cfg, tmp_path / "whole", progress=False)
    _cut_in_epoch_3(cfg, tmp_path / "cut", monkeypatch)
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in whole.history]


def test_resume_from_a_damaged_checkpoint_says_the_way_forward(tmp_path):
    """An empty checkpoint.pt under --resume: one line naming it and what to do; doing it works.
    Mutant: load_checkpoint without if_damaged -> the generic advice, no --resume in the message."""
    cfg = tiny("simmim", epochs=2)
    train(cfg, tmp_path / "r", progress=False)
    last = tmp_path / "r" / "checkpoint.pt"
    (tmp_path / "r" / "final.pt").unlink()
    last.write_bytes(b"")
    with pytest.raises(VinyError) as err:
        train(cfg, tmp_path / "r", resume=True, progress=False)
    text = str(err.value)
    assert "\n" not in text and str(last) in text and "empty" in text
    assert f"delete {last} and --resume again" in text
    last.unlink()
    again = train(cfg, tmp_path / "r", resume=True, progress=False)
    assert len(again.history) == 2
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_refuses_a_changed_config(tmp_path):
    train(tiny("simmim"), tmp_path / "r", progress=False)
    with pytest.raises(VinyError, match=r"lr: .* -> 0\.5"):
        train(tiny("simmim", lr=0.5), tmp_path / "r", resume=True, progress=False)


def test_resume_refuses_a_checkpoint_whose_parent_was_replaced(tmp_path):
    """--resume of a run whose --init file now holds another parent (same path, another digest) is
    refused in one line naming the checkpoint and both lineages; a parent moved to another path (same
    digest, config.json's init updated as a sweep does) still resumes. Failed before the fix (it resumed,
    and its final.pt claimed a parent it never trained from). Mutant watched failing: ``Run._set_up``
    without its ``_check_checkpoint_lineage`` call."""
    train(tiny("simmim"), tmp_path / "p", progress=False)
    train(tiny("simmim", seed=1), tmp_path / "q", progress=False)
    child = tiny("segment", init=str(tmp_path / "p" / "final.pt"))
    train(child, tmp_path / "c", progress=False)
    (tmp_path / "c" / "final.pt").unlink()

    (tmp_path / "moved").mkdir()
    shutil.copy(tmp_path / "p" / "final.pt", tmp_path / "moved" / "final.pt")
    shutil.copy(tmp_path / "q" / "final.pt", tmp_path / "p" / "final.pt")
    with pytest.raises(VinyError) as err:
        train(child, tmp_path / "c", resume=True, progress=False)
    text = str(err.value)
    assert "\n" not in text and f"--resume refused: {tmp_path / 'c' / 'checkpoint.pt'}" in text
    assert "continues another lineage" in text and "simmim" in text

    config = json.loads((tmp_path / "c" / "config.json").read_text())
    moved = str(tmp_path / "moved" / "final.pt")
    (tmp_path / "c" / "config.json").write_text(json.dumps({**config, "init": moved}))
    assert train(dataclasses.replace(child, init=moved), tmp_path / "c", resume=True, progress=False).history


@pytest.mark.parametrize("check_every", [1, 3])
def test_non_finite_loss_stops_names_the_batch_and_keeps_last_good_checkpoint(
    tmp_path, monkeypatch, check_every
):
    """Every step is checked on a CPU; on a GPU the loss is read every few steps (no sync per step).
    Either way the run stops at the first non-finite loss, names its batch, and keeps the last good
    checkpoint (4 batches per epoch here; the loss goes NaN at epoch 2, batch 2)."""
    monkeypatch.setattr(loop, "loss_check_interval", lambda device: check_every)
    seg = REGISTRY["simmim"]
    original, prepare = seg.compute_loss, seg.prepare
    batches = {"n": 0}

    def counted(self, *a, **k):  # once per batch, however many micro-batches it is trained in
        batches["n"] += 1
        return prepare(self, *a, **k)

    def nan_later(self, *a, **k):
        loss, stats = original(self, *a, **k)
        return (loss * float("nan") if batches["n"] > 5 else loss), stats

    monkeypatch.setattr(seg, "prepare", counted)
    monkeypatch.setattr(seg, "compute_loss", nan_later)
    with pytest.raises(VinyError, match="non-finite loss at epoch 2, batch 2;") as caught:
        train(tiny("simmim", epochs=2, train_size=32), tmp_path / "n", progress=False)
    assert load_checkpoint(tmp_path / "n" / "checkpoint.pt")["epoch"] == 1
    assert f"The last good checkpoint is kept in {tmp_path / 'n' / 'checkpoint.pt'}." in str(caught.value)


def test_a_non_finite_loss_in_the_first_epoch_says_no_checkpoint_was_saved(tmp_path, monkeypatch):
    """The loss goes NaN at epoch 1, batch 1: no checkpoint.pt exists, and the message says so instead
    of pointing to it. Failed before the fix ("The last good checkpoint is kept in .../checkpoint.pt").
    Mutant watched failing: ``engine.non_finite_error`` without its ``is_file()`` check (this test), and
    with it inverted (this one and the one above)."""
    seg = REGISTRY["simmim"]
    original = seg.compute_loss

    def nan(self, *a, **k):
        loss, stats = original(self, *a, **k)
        return loss * float("nan"), stats

    monkeypatch.setattr(seg, "compute_loss", nan)
    with pytest.raises(VinyError, match="non-finite loss at epoch 1, batch 1;") as caught:
        train(tiny("simmim"), tmp_path / "n", progress=False)
    last = tmp_path / "n" / "checkpoint.pt"
    assert not last.exists()
    message = str(caught.value)
    assert f"No checkpoint was saved yet: {last} does not exist." in message
    assert "last good checkpoint" not in message and "\n" not in message


def test_reading_the_loss_less_often_changes_no_metric(tmp_path, monkeypatch):
    cfg = tiny("segment", epochs=2, train_size=40)  # 5 batches per epoch, the last one short
    every = train(cfg, tmp_path / "every", progress=False).history
    monkeypatch.setattr(loop, "loss_check_interval", lambda device: 2)
    sparse = train(cfg, tmp_path / "sparse", progress=False).history
    keys = ["epoch", "loss", "train_pixel_accuracy", "lr"]
    assert [[h[k] for k in keys] for h in sparse] == [[h[k] for k in keys] for h in every]
    assert 0 < every[0]["train_pixel_accuracy"] <= 1


def test_training_set_is_kept_on_a_gpu_only_when_it_fits(monkeypatch):
    data = tiny_set(8)
    moved = []
    monkeypatch.setattr(ImageSet, "to", lambda self, device: moved.append(device) or self)
    assert loop._resident(data, torch.device("cpu")) is data and moved == []
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * data.nbytes, 10 * data.nbytes))
    loop._resident(data, torch.device("cuda"))
    assert moved == [torch.device("cuda")]
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * data.nbytes - 4, 10 * data.nbytes))
    assert loop._resident(data, torch.device("cuda")) is data and len(moved) == 1


def test_dataset_too_small_says_how_many(tmp_path):
    with pytest.raises(VinyError, match="3000 images"):
        train(tiny("segment", train_size=2500, test_size=1000), tmp_path / "x", progress=False)


def test_micro_batches_give_the_whole_batch_gradient(tmp_path):
    """Batch 8 in parts of 3, 2, 3 (uneven, so each part must be weighted by its share of the images):
    the same losses, statistics and weights as the whole batch at once, to float noise."""
    whole = train(tiny("segment", epochs=2, lr=5e-3, micro_batch=8), tmp_path / "whole", progress=False)
    parts = train(tiny("segment", epochs=2, lr=5e-3, micro_batch=3), tmp_path / "parts", progress=False)
    assert json.loads((tmp_path / "parts" / "data.json").read_text())["micro_batch"] == 3
    for a, b in zip(whole.history, parts.history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5)
        assert b["train_pixel_accuracy"] == pytest.approx(a["train_pixel_accuracy"], abs=1e-3)
    one, three = load_checkpoint(whole.final_checkpoint), load_checkpoint(parts.final_checkpoint)
    for k, v in one["encoder"].items():
        torch.testing.assert_close(three["encoder"][k], v, atol=1e-5, rtol=1e-4)


def test_micro_batch_size_auto_and_requested():
    from viny_probe.model import model_config

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    viny, demo = model_config("viny"), model_config("demo")
    assert loop.micro_batch_size(0, cpu, 64, viny) == 16  # 13.2 MB per image against 256 MB: 4 x 16
    assert loop.micro_batch_size(0, cpu, 64, viny, "bf16") == 32  # bf16 activations: half the bytes
    assert loop.micro_batch_size(0, cpu, 64, demo) == 64  # 2.1 MB per image: the whole batch fits
    assert loop.micro_batch_size(0, cpu, 90, viny) == 18  # 20 fit: 5 parts of 18, not 4 x 20 + 10
    assert loop.micro_batch_size(0, cuda, 64, viny) == 64
    assert loop.micro_batch_size(8, cpu, 64, viny) == 8
    assert loop.micro_batch_size(100, cpu, 64, viny) == 64


def _as_format_1(path):
    """Rewrite a checkpoint as viny before format 2 wrote it: no cls_in_sequence in its model config."""
    ckpt = torch.load(path, weights_only=True)
    ckpt["format_version"] = 1
    del ckpt["model_config"]["cls_in_sequence"]
    torch.save(ckpt, path)


def test_the_cls_token_is_trained_only_where_classification_reads_it(tmp_path):
    """The study's token path: SimMIM and segmentation never touch the CLS token (it is not in their
    blocks, and frozen there, so DDP sees no unused parameter); classification trains it. Mutants: the
    CLS token in every stage's blocks (run_model_config forcing cls_in_sequence=True: SimMIM moves
    it), or frozen in classify too."""
    a = train(tiny("simmim", weight_decay=0.5, lr=0.05), tmp_path / "a", progress=False)
    b = train(tiny("classify", init=str(a.final_checkpoint)), tmp_path / "b", progress=False)
    c = train(tiny("segment", init=str(b.final_checkpoint), weight_decay=0.5), tmp_path / "c", progress=False)
    torch.manual_seed(0)  # the seed the simmim run initialised with
    from viny_probe.model import ViNy

    initial = ViNy("tiny").cls_token
    cls = [load_checkpoint(r.final_checkpoint)["encoder"]["cls_token"] for r in (a, b, c)]
    torch.testing.assert_close(cls[0], initial)
    assert (cls[1] - cls[0]).abs().max() > 1e-4
    torch.testing.assert_close(cls[2], cls[1])


def test_format_1_checkpoints_are_read_as_they_ran_and_refused_for_resume(tmp_path):
    """Before format 2 every stage ran the CLS token through the blocks: such a checkpoint is read
    with cls_in_sequence=True (its tokens as trained), --init from it asks for --cls-in-sequence, and
    --resume of such a run folder is refused with the reason."""
    from viny_probe.checkpoint import checkpoint_model_config

    a = train(tiny("simmim", epochs=2), tmp_path / "a", progress=False)
    _as_format_1(a.final_checkpoint)
    old = load_checkpoint(a.final_checkpoint)
    assert checkpoint_model_config(old).cls_in_sequence is True
    assert encoder_from_checkpoint(old).cfg.cls_in_sequence is True
    with pytest.raises(VinyError, match="--cls-in-sequence"):
        train(tiny("segment", init=str(a.final_checkpoint)), tmp_path / "b", progress=False)
    seg = train(
        tiny("segment", init=str(a.final_checkpoint), cls_in_sequence=True), tmp_path / "b", progress=False
    )
    assert load_checkpoint(seg.final_checkpoint)["model_config"]["cls_in_sequence"] is True

    _as_format_1(tmp_path / "a" / "checkpoint.pt")
    with pytest.raises(VinyError, match="older viny") as err:
        train(tiny("simmim", epochs=2), tmp_path / "a", resume=True, progress=False)
    assert "new --out" in str(err.value)
    # a format-1 run folder's config.json has no split_seed (nor phase, augment ...): the same reason,
    # not a list of config differences
    config = tmp_path / "a" / "config.json"
    old = {
        k: v for k, v in json.loads(config.read_text()).items() if k not in ("split_seed", "phase", "augment")
    }
    config.write_text(json.dumps(old))
    with pytest.raises(VinyError, match="older viny"):
        train(tiny("simmim", epochs=2), tmp_path / "a", resume=True, progress=False)


def test_each_epoch_draws_its_own_order_and_the_same_epoch_draws_it_again():
    """``epoch_generator(seed, epoch)``: epochs 0, 1 and 2 of seed 5 give three different batch orders
    (randperm of 32), epoch 1 asked twice the same one, seed 6's epoch 1 another. Mutant: the epoch
    ignored (``seed * 1_000_003 + epoch`` -> ``seed * 1_000_003``) -> every epoch the same order,
    augmentation and masks."""
    from viny_probe.trainers.engine import epoch_generator

    def order(seed: int, epoch: int) -> list[int]:
        return torch.randperm(32, generator=epoch_generator(seed, epoch)).tolist()

    orders = [order(5, e) for e in range(3)]
    assert len({tuple(o) for o in orders}) == 3
    assert order(5, 1) == orders[1] and order(6, 1) != orders[1]
