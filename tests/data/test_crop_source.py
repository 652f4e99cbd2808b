"""SimMIM's crop from the original (``crop_source="original"``): an aspect-kept copy in the decode cache
with each image's (h, w), boxes drawn in that copy's pixels, and the crop resized to the model's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from viny_probe.config import SOURCE_SIDE, TrainConfig
from viny_probe.data import load_dataset
from viny_probe.data.augment import random_resized_crop, random_resized_crop_boxes, resized_crops
from viny_probe.data.cache import DecodeOptions
from viny_probe.errors import VinyError
from viny_probe.model import model_config
from viny_probe.registry import REGIMES

RED, BLUE = (255, 0, 0), (0, 0, 255)
WNIDS = ["n01440764", "n01443537"]


def _halves(path: Path, width: int = 384, height: int = 192) -> None:
    """A width x height PNG, left half red and right half blue (width 2x height: a wide original)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = RED
    pixels[:, width // 2 :] = BLUE
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def wide_imagenet(tmp_path: Path) -> Path:
    """ImageNet's layout (train/<wnid>/*.png), 6 images per class, each 384 x 192, red | blue."""
    root = tmp_path / "imagenet"
    for wnid in WNIDS:
        for k in range(6):
            _halves(root / "train" / wnid / f"{wnid}_{k}.png")
    return root


def _colour(images: torch.Tensor, colour) -> torch.Tensor:
    """Per pixel: is it ``colour`` (images (B, 3, H, W) float [0, 1])."""
    return ((images * 255).round() == torch.tensor(colour).view(1, 3, 1, 1)).all(dim=1)


def test_the_source_copy_keeps_the_aspect_ratio(wide_imagenet: Path):
    """Known answer: a 384 x 192 red | blue original is stored at 192 x 96 in the top-left corner of a
    192 x 192 array, extents (96, 192), red left of column 96, blue right of it (nearest: no blend at
    the seam), zeros below. Mutants applied, failing here: load_source squashing to side x side;
    extents stored as (w, h)."""
    bilinear = load_dataset(
        "imagenet", size=SOURCE_SIDE, data_root=wide_imagenet, decoding=DecodeOptions(keep_aspect=True)
    )
    assert bilinear.extents.tolist() == [[96, 192]] * len(bilinear)
    data = load_dataset(
        "imagenet",
        size=SOURCE_SIDE,
        data_root=wide_imagenet,
        decoding=DecodeOptions("nearest", keep_aspect=True),
    )
    assert tuple(data.images.shape[1:]) == (3, SOURCE_SIDE, SOURCE_SIDE) and data.masks is None
    assert data.extents.tolist() == [[96, 192]] * len(data)
    image = data.images[0].numpy()
    assert (image[:, :96, :96] == np.array(RED)[:, None, None]).all()
    assert (image[:, :96, 96:] == np.array(BLUE)[:, None, None]).all()
    assert (image[:, 96:] == 0).all()
    square = load_dataset("imagenet", size=SOURCE_SIDE, data_root=wide_imagenet)  # its own entry
    assert square.extents is None and (square.images[0].numpy()[:, SOURCE_SIDE - 1] != 0).any()


@pytest.mark.parametrize("resize", ["bilinear", "nearest"])
def test_a_box_over_one_half_of_the_original_crops_that_half(wide_imagenet: Path, resize: str):
    """Known answer: the box over the left half of the stored original (top 0, left 0, 96 x 96) gives an
    all-red 128 x 128 crop, the right half (left 96) an all-blue one, with either filter; the same box
    on the squashed 128 px copy is not all red. Mutant applied, failing here: resized_crops reading the
    box with top and left swapped (the right-half box lands in the padding)."""
    data = load_dataset(
        "imagenet",
        size=SOURCE_SIDE,
        data_root=wide_imagenet,
        decoding=DecodeOptions("nearest", keep_aspect=True),
    )
    images = data.images[:2]
    boxes = torch.tensor([[0, 0, 96, 96], [0, 96, 96, 96]])
    crops = resized_crops(images, boxes, 128, resize)
    assert crops.shape == (2, 3, 128, 128)
    assert _colour(crops[:1], RED).all() and _colour(crops[1:], BLUE).all()
    # The same box on the squashed copy (what --crop-source square crops) is not the left half.
    squashed = load_dataset("imagenet", size=128, data_root=wide_imagenet).images[:1]
    assert not _colour(resized_crops(squashed, boxes[:1], 128, resize), RED).all()


def test_boxes_are_drawn_in_the_originals_pixels():
    """Area 1/2 and aspect 1 on a 96 x 192 original is a 96 x 96 square box, wherever it is placed, and
    every box of the study's ranges lies inside its image. Mutant applied, failing here: the box drawn
    as fractions of the square (width and height scaled by w and h apart: a 136 x 68 box)."""
    gen = torch.Generator().manual_seed(0)
    extents = torch.tensor([[96, 192]] * 300)
    boxes = random_resized_crop_boxes(extents, gen, scale=(0.5, 0.5), ratio=(1.0, 1.0))
    assert (boxes[:, 2] == 96).all() and (boxes[:, 3] == 96).all()
    assert boxes[:, 1].min() == 0 and boxes[:, 1].max() == 96  # placed over the whole width
    extents = torch.tensor([[96, 192], [192, 96], [50, 7], [1, 1]] * 100)
    boxes = random_resized_crop_boxes(extents, gen)
    top, left, height, width = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (height >= 1).all() and (width >= 1).all()
    assert (top + height <= extents[:, 0]).all() and (left + width <= extents[:, 1]).all()


def test_the_boxes_draw_what_the_square_crop_draws():
    """The run seed decides the crops as before: the boxes take as many draws from the generator as
    random_resized_crop, so the masks and flips after them are drawn from the same stream."""
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    random_resized_crop_boxes(torch.tensor([[96, 192]] * 5), a)
    random_resized_crop(torch.zeros(5, 3, 8, 8), b)
    assert torch.equal(a.get_state(), b.get_state())
    again = torch.Generator().manual_seed(3)
    assert torch.equal(
        random_resized_crop_boxes(torch.tensor([[96, 192]] * 5), again),
        random_resized_crop_boxes(torch.tensor([[96, 192]] * 5), torch.Generator().manual_seed(3)),
    )


def _simmim(cfg: TrainConfig):
    cfg = cfg.resolved()
    regime = REGIMES.get("simmim")()
    mcfg = model_config("tiny")
    data = regime.load_data(cfg, mcfg)
    regime.make_head(mcfg, data)
    return regime, data, mcfg


def test_authors_simmim_crops_the_original_and_paper_the_square(wide_imagenet: Path):
    """End to end: `--preset authors` trains on the aspect-kept copies (extents (96, 192)) and every crop
    it prepares is red or blue only (never the padding below the image); `paper` trains on the squashed
    copy, as before. Mutants applied, failing here: extents stored as (w, h); load_source squashing;
    resized_crops with top and left swapped; crop_sources loading the squashed 128 px copy."""
    common = dict(regime="simmim", dataset="imagenet", data_root=str(wide_imagenet), test_size=2)
    regime, data, mcfg = _simmim(TrainConfig(preset="authors", **common))
    assert data.train.extents is not None and data.train.extents.tolist() == [[96, 192]] * len(data.train)
    assert data.test.extents is None and data.test.size == mcfg.image_size  # held-out: the square copy
    assert data.info["crop_source"].startswith("original")
    batch = {"images": data.train.images, "extents": data.train.extents}
    x = regime.prepare(batch, torch.Generator().manual_seed(0))["images"]
    assert x.shape == (len(data.train), 3, mcfg.image_size, mcfg.image_size)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = x * std + mean
    # bilinear blends red and blue at the seam: every pixel is a mix of the two, never black padding
    assert (pixels[:, 1].abs() < 1e-4).all() and ((pixels[:, 0] + pixels[:, 2] - 1).abs() < 1e-4).all()
    _, paper, _ = _simmim(TrainConfig(preset="paper", **common))
    assert paper.train.extents is None and paper.train.size == mcfg.image_size
    assert paper.train.ids == data.train.ids


def test_the_crop_source_is_simmims_only():
    with pytest.raises(
        VinyError, match="--crop-source does not apply to `viny train classify`: only simmim takes it"
    ):
        TrainConfig(regime="classify", crop_source="original").resolved()
    assert TrainConfig(regime="simmim", preset="paper").resolved().options.crop_source == "square"
    assert TrainConfig(regime="simmim", preset="authors").resolved().options.crop_source == "original"
