import os
import subprocess
import sys

import torch

from viny_probe import distributed
from viny_probe.checkpoint import load_checkpoint
from viny_probe.config import TrainConfig
from viny_probe.trainers import train


def test_two_gloo_processes_match_one_process(tmp_path, tiny_train_args):
    """torchrun with 2 CPU processes (gloo), same global batch, each rank in micro-batches: same losses
    and weights as 1 process taking the whole batch at once."""
    single = train(
        TrainConfig(
            regime="segment", model="tiny", epochs=2, batch_size=8, train_size=16, test_size=8, device="cpu"
        ),
        tmp_path / "one",
        progress=False,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "29517",
        "-m",
        "viny_probe",
        "train",
        "segment",
        *tiny_train_args(epochs=2),
        "--micro-batch",  # each rank's 4 images in 2 parts: gradients accumulate, all-reduced once
        "2",
        "--out",
        str(tmp_path / "two"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_checkpoint(tmp_path / "two" / "final.pt")
    one = load_checkpoint(single.final_checkpoint)
    assert ddp["history"][-1]["epoch"] == 2
    for a, b in zip(one["history"], ddp["history"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-4
    for k, v in one["encoder"].items():
        torch.testing.assert_close(ddp["encoder"][k], v, atol=1e-4, rtol=1e-3)


def test_three_gloo_ranks_uneven_and_empty_slices_match_one_process(tmp_path):
    """torchrun with 3 CPU processes, global batch 64 over 66 images: the first batch splits 21/22/21
    (uneven), the last batch of 2 splits 1/0/1 (rank 1 gets nothing). Each rank's loss is scaled by its
    share of the global batch, and the empty rank runs a zero-weighted stand-in forward, so the update
    equals one process taking the whole batch: same per-epoch loss and pixel accuracy (the exact
    global-batch-weighted means), same encoder and head weights. --micro-batch 21 also gives the
    ranks different numbers of parts (1, 2, 1). Kills: each rank's mean loss unscaled (DDP's plain
    average of unequal slices), a division by the empty rank's zero images, an empty rank that skips
    the forward (its all-reduce would never come), metrics weighted per rank instead of per image."""
    sizes = dict(model="tiny", epochs=2, batch_size=64, train_size=66, test_size=8, lr=5e-3)
    single = train(TrainConfig(regime="segment", device="cpu", **sizes), tmp_path / "one", progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    options = [f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "3"]
    cmd += ["-m", "viny_probe", "train", "segment", *options, "--device", "cpu", "--precision", "fp32", "-q"]
    cmd += ["--micro-batch", "21"]
    proc = subprocess.run(
        cmd + ["--out", str(tmp_path / "three")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_checkpoint(tmp_path / "three" / "final.pt")
    one = load_checkpoint(single.final_checkpoint)
    assert [h["epoch"] for h in ddp["history"]] == [1, 2]
    for a, b in zip(one["history"], ddp["history"], strict=True):
        assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
        assert abs(a["train_pixel_accuracy"] - b["train_pixel_accuracy"]) < 1e-5, (a, b)
    for part in ("encoder", "head"):
        for k, v in one[part].items():
            # the two-process test's tolerance: the ranks' all-reduce sums gradients in another order, and
            # Adam turns that into up to 2e-5 on a weight (measured on the per-image embedded data); the
            # mutants this test kills differ by far more
            torch.testing.assert_close(ddp[part][k], v, atol=1e-4, rtol=1e-3, msg=f"{part}.{k}")


def test_shard_scales_each_rank_so_the_average_is_the_global_mean():
    """Without processes: for 64 images on 3 ranks (21/22/21) and 2 images on 3 ranks (1/0/1), the
    slices cover the batch once, in order, and DDP's average of the ranks' scaled mean losses is the
    global batch's mean loss; an empty rank gets a one-image stand-in with scale 0. Kills: scale 1 on
    every rank (plain DDP average), a scale of local / global without the world size, an empty rank
    given an empty input or a non-zero scale."""
    for n, sizes in ((64, [21, 22, 21]), (2, [1, 0, 1])):
        per_image = torch.arange(n, dtype=torch.float64) ** 2 + 1.0
        inputs = {"loss": per_image, "index": torch.arange(n)}
        shards = [distributed.shard(inputs, distributed.DistInfo(r, 3)) for r in range(3)]
        assert [s.images for s in shards] == sizes
        own = [s.inputs["index"] for s in shards if s.images]
        assert torch.cat(own).tolist() == list(range(n))
        for s in shards:
            if s.images == 0:
                assert s.loss_scale == 0.0 and s.inputs["index"].tolist() == [0]
        averaged = sum(s.loss_scale * s.inputs["loss"].mean() for s in shards) / 3
        torch.testing.assert_close(averaged, per_image.mean())
    whole = distributed.shard(inputs, distributed.DistInfo())
    assert whole.inputs is inputs and whole.images == n and whole.loss_scale == 1.0
