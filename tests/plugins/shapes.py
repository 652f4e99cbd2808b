"""A tiny mask dataset on disk in the mask-folder layout: images/<id>.jpg + masks/<id>.png.

Values 0 (sky), 1 (disc), 2 (square) and 255 (not labelled: a stripe along the top, so some patches
hold ignored pixels only); ``classes.json`` declares the same map for the built-in mask-folder dataset.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = {"names": ["sky", "disc", "square"], "values": {"0": 0, "1": 1, "2": 2}, "ignore": [255]}


def make_shapes(root: Path, count: int = 12, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:size, :size]
    for i in range(count):
        mask = np.zeros((size, size), np.uint8)
        cy, cx, r = rng.integers(size // 4, 3 * size // 4, 2).tolist() + [size // 5]
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 1
        y0, x0 = rng.integers(0, size // 2, 2)
        mask[y0 : y0 + size // 3, x0 : x0 + size // 3] = 2
        mask[: size // 8] = 255
        colours = np.array([[90, 140, 230], [220, 60, 40], [40, 180, 70]], np.uint8)
        pixels = colours[np.where(mask == 255, 0, mask)] + rng.integers(0, 20, (size, size, 3)).astype(
            np.uint8
        )
        Image.fromarray(pixels).save(root / "images" / f"shape_{i:02d}.jpg", quality=95)
        Image.fromarray(mask, mode="L").save(root / "masks" / f"shape_{i:02d}.png")
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root
