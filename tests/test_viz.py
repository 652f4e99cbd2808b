"""Fig A1's class colours, read back from the PNG; Fig A2's error maps."""

import json

import numpy as np
import torch
from matplotlib.image import imread

from viny_probe.viz import error_map, save_error_maps, save_prediction_comparison


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


def _constructed(n: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Truth: pet left half, background right, a boundary column; prediction: the truth with a 10 x 12
    block of image 0 wrong (background called pet) and image 1 wrong in one boundary column."""
    truth = torch.ones(n, size, size, dtype=torch.long)
    truth[:, :, : size // 2] = 0
    truth[:, :, size // 2] = 2
    pred = truth.clone()
    pred[0, 5:15, 40:52] = 0
    pred[1, :, size // 2] = 1
    return truth, pred, torch.zeros(n, 3, size, size, dtype=torch.uint8) + 200


def test_error_map_marks_exactly_the_wrong_pixels():
    """The error map is True on the 120 changed pixels of image 0 and the 64 of image 1, nowhere else;
    an ignored truth pixel is never wrong. Mutants: the map of the prediction against itself (all
    False), the map inverted (``pred == truth``) -> fail."""
    truth, pred, _ = _constructed()
    wrong = error_map(truth, pred)
    expected = torch.zeros_like(wrong)
    expected[0, 5:15, 40:52] = True
    expected[1, :, 32] = True
    assert wrong.dtype == torch.bool and torch.equal(wrong, expected)
    assert int(wrong.sum()) == 120 + 64
    truth[1, :, 32] = 255  # no class there: nothing to get wrong
    assert int(error_map(truth, pred)[1].sum()) == 0


def test_fig_a2_is_written_with_its_error_shares_and_red_wrong_pixels(tmp_path):
    """save_error_maps writes the PNG (the wrong pixels red, the classes in the grey scale) and a JSON
    whose per-image wrong shares are those of the constructed predictions, for each model."""
    truth, pred, images = _constructed()
    path = save_error_maps(
        images, truth, {"pre-train 16": truth, "pre-train 16 + cls-intel": pred}, tmp_path / "a2.png"
    )
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["wrong_share"]["pre-train 16"] == [0.0, 0.0]
    assert np.allclose(record["wrong_share"]["pre-train 16 + cls-intel"], [120 / 64**2, 64 / 64**2])
    assert record["classes"]["pet"] == "#000000" and record["wrong_pixel"] == "#d62728"
    picture = imread(path)
    assert _count(picture, "#d62728") > 100  # the 10 x 12 block and the column, drawn at > 1 px each
    assert _count(picture, "#000000") > 2000 and _count(picture, "#808080") > 2000
