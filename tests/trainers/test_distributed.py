import os
import subprocess
import sys

import torch

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
