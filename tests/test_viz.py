"""Fig A1's class colours, read back from the PNG."""

import json

import numpy as np
import torch
from matplotlib.image import imread

from viny_probe.viz import save_prediction_comparison


def _count(picture: np.ndarray, hex_colour: str) -> int:
    rgb = np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])
    return int((np.abs(picture[..., :3] * 255 - rgb) < 1).all(axis=-1).sum())


def test_fig_a1_draws_the_classes_in_the_study_s_grey_scale(tmp_path):
    """Pet black, background grey, boundary white, as the study's Fig A1 draws the trimaps: the ground
    truth (half pet, half background) shows as many black and grey pixels in the PNG, none of viny's
    earlier orange or navy; colours="viny" still draws those. Mutant (applied once, failed, reverted): the
    default ``colours="viny"``."""
    truth = torch.ones(1, 64, 64, dtype=torch.long)
    truth[:, :, :32] = 0
    images = torch.zeros(1, 3, 64, 64, dtype=torch.uint8) + 200
    path = save_prediction_comparison(images, truth, {"model": truth}, tmp_path / "a1.png")
    picture = imread(path)
    assert json.loads(path.with_suffix(".json").read_text())["classes"] == {
        "pet": "#000000",
        "background": "#808080",
        "boundary": "#ffffff",
    }
    assert _count(picture, "#000000") > 2000 and _count(picture, "#808080") > 2000
    assert _count(picture, "#e4572e") == 0 and _count(picture, "#2e4057") == 0
    viny = imread(save_prediction_comparison(images, truth, {"m": truth}, tmp_path / "v.png", colours="viny"))
    assert _count(viny, "#e4572e") > 2000 and _count(viny, "#808080") < 100  # a few anti-aliased text pixels
