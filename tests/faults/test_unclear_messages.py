"""Messages that used to say the wrong thing, as real `viny` processes (started together): a folder too
small to hold out a test image, and an image over Pillow's decompression-bomb limit under -q."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from PIL import Image

TINY = [
    "--model",
    "tiny",
    "--epochs",
    "1",
    "--batch-size",
    "4",
    "--device",
    "cpu",
    "--precision",
    "fp32",
    "-q",
]
# `viny ARGS` with Pillow's decompression-bomb limit at 1,000 pixels (a 40 x 40 image is over it).
LAUNCHER = """
import sys
from PIL import Image
Image.MAX_IMAGE_PIXELS = 1000
from viny_probe.cli import main
sys.argv = ["viny", *sys.argv[1:]]
main()
"""


def _images(folder, count: int) -> None:
    folder.mkdir()
    for i in range(count):
        pixels = np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


def test_a_too_small_folder_and_a_huge_image_say_so_in_one_line(tmp_path) -> None:
    """Failed before: 4 images gave "images must be a non-empty (N, 3, S, S) uint8 tensor, got
    torch.uint8 (0, 3, 32, 32)"; the huge images printed Pillow's raw DecompressionBombWarning with its
    source line under -q. Mutants watched failing: splits.fixed_split without its too-few check (the
    tensor message again); decode without its filter of DecompressionBombWarning (the raw warning
    beside viny's line)."""
    small, huge = tmp_path / "small", tmp_path / "huge"
    _images(small, 4)
    _images(huge, 6)
    env = {**os.environ, "COLUMNS": "400"}
    runs = {
        "small": [sys.executable, "-m", "viny_probe", "train", "simmim", "--dataset", "folder"],
        "huge": [sys.executable, "-c", LAUNCHER, "train", "simmim", "--dataset", "folder"],
    }
    procs = {
        name: subprocess.Popen(
            [*argv, "--data-root", str(tmp_path / name), *TINY, "-o", str(tmp_path / f"run-{name}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name, argv in runs.items()
    }
    said = {name: (p.wait(timeout=180), p.stderr.read()) for name, p in procs.items()}

    rc, err = said["small"]
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert err.strip() == (
        f"error: folder '{small}' has 4 image(s), too few to hold out a test image: a fifth of them is "
        "held out, so it needs at least 5; add images"
    )

    rc, err = said["huge"]
    assert rc == 0, err
    assert "DecompressionBomb" not in err, err
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 6 and all(line.startswith(f"warning: {huge}/") for line in warned), err
    assert (
        "0.png: 40 x 40 pixels, more than Pillow's decompression-bomb limit of 1,000; decoded anyway" in err
    )
