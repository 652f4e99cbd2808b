"""Render the example grids in docs/img/ from the embedded synthetic datasets.

Usage: python scripts/make_data_figures.py [--out docs/img] [--size 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from viny_probe.data.synthetic import synthetic_pets, synthetic_scenes, synthetic_unlabeled  # noqa: E402

# trimap colours: pet, background, boundary
TRIMAP_RGB = np.array([[230, 120, 40], [40, 40, 60], [250, 250, 250]], dtype=np.uint8)
PAD = 4


def _hwc(t) -> np.ndarray:
    return t.permute(1, 2, 0).numpy()


def _grid(
    tiles: list[np.ndarray], cols: int, captions: list[str] | None = None, cap_h: int = 0
) -> Image.Image:
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (w + PAD) + PAD, rows * (h + PAD + cap_h) + PAD), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        x, y = PAD + c * (w + PAD), PAD + r * (h + PAD + cap_h)
        canvas.paste(Image.fromarray(tile), (x, y + cap_h))
        if captions and captions[i]:
            draw.text((x + 1, y), captions[i], fill=(0, 0, 0))
    return canvas


def pets_figure(size: int, seed: int, n: int = 12) -> Image.Image:
    ds = synthetic_pets(n, size=size, seed=seed)
    tiles, caps = [], []
    for i in range(n):
        tiles += [_hwc(ds.images[i]), TRIMAP_RGB[ds.masks[i].numpy()]]
        caps += [ds.class_names[int(ds.labels[i])], "trimap"]
    return _grid(tiles, cols=6, captions=caps, cap_h=12)


def scenes_figure(size: int, seed: int, per_class: int = 3) -> Image.Image:
    ds = synthetic_scenes(6 * per_class * 3, size=size, seed=seed)
    tiles, caps = [], []
    for k, name in enumerate(ds.class_names):
        idx = (ds.labels == k).nonzero().flatten()[:per_class].tolist()
        for i in idx:
            tiles.append(_hwc(ds.images[i]))
            caps.append(name)
    return _grid(tiles, cols=6, captions=caps, cap_h=12)


def unlabeled_figure(size: int, seed: int, n: int = 18) -> Image.Image:
    ds = synthetic_unlabeled(n, size=size, seed=seed)
    return _grid([_hwc(ds.images[i]) for i in range(n)], cols=6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/img")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in (
        ("toy-pets", pets_figure(args.size, args.seed)),
        ("toy-scenes", scenes_figure(args.size, args.seed)),
        ("toy-unlabeled", unlabeled_figure(args.size, args.seed)),
    ):
        path = out / f"{name}.png"
        # a 256-colour palette keeps each grid well under 200 KB; trimap colours survive exactly
        fig.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(
            path, optimize=True
        )
        print(f"{path}  {fig.size[0]}x{fig.size[1]}  {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
