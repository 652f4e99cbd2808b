"""The decode's image filter (``resize``): nearest is Pillow's NEAREST of the file, jointly with the trimap,
and each filter has its own decode-cache entry while the bilinear entries keep their keys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viny_probe.config import TrainConfig
from viny_probe.data import load_dataset
from viny_probe.data.cache import DecodeOptions
from viny_probe.data.decode import load_rgb, to_rgb
from viny_probe.errors import VinyError

# Image colour of each trimap value (1 pet, 2 background, 3 boundary) in the joint-geometry fixture.
PALETTE = {1: (250, 10, 10), 2: (10, 250, 10), 3: (10, 10, 250)}


def _patterned_pet(pets) -> str:
    """Overwrite the first pet with an image whose colour at every pixel encodes its trimap value there
    (a random 1/2/3 map, PNG bytes under the .jpg name as some of Oxford's files are): a joint resize
    keeps each output pixel's colour and class together."""
    name = pets.names[0]
    values = np.random.default_rng(7).integers(1, 4, (30, 40)).astype(np.uint8)
    colours = np.zeros((30, 40, 3), np.uint8)
    for value, colour in PALETTE.items():
        colours[values == value] = colour
    Image.fromarray(colours).save(pets.folder / "images" / f"{name}.jpg", format="PNG")
    Image.fromarray(values).save(pets.folder / "annotations" / "trimaps" / f"{name}.png")
    return name


def _nearest(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        rgb = to_rgb(image).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(rgb).transpose(2, 0, 1)


def test_nearest_is_pillows_nearest_of_the_file_and_resizes_the_trimap_jointly(make_pets, tmp_path: Path):
    """Known answer: every image of a Pets folder (odd modes included) decoded with ``resize="nearest"``
    equals Pillow's NEAREST resize of its file, and each pixel's colour names its trimap class (the
    same geometry for both). Mutant applied, failing here: load_rgb ignoring ``resize`` (always bilinear)."""
    pets = make_pets()
    name = _patterned_pet(pets)
    data = load_dataset("pets", size=16, data_root=pets.parent, decoding=DecodeOptions(resize="nearest"))
    for i, image_id in enumerate(data.ids):
        expected = _nearest(pets.folder / "images" / f"{image_id}.jpg", 16)
        assert np.array_equal(data.images[i].numpy(), expected), image_id
    i = data.ids.index(name)
    image, mask = data.images[i].numpy(), data.masks[i].numpy()
    for value, colour in PALETTE.items():  # class index = trimap value - 1
        assert (image[:, mask == value - 1] == np.array(colour)[:, None]).all(), value
    assert len(np.unique(mask)) == 3


def test_the_filters_have_their_own_cache_entries_and_bilinear_keeps_its_key(make_pets, tmp_path: Path):
    """bilinear then nearest from one folder: two entries, different pixels, the same trimaps; the
    bilinear entry's key has no ``resize`` (entries written before the option stay valid), the nearest
    one names it. Mutant applied, failing here: ``resize`` left out of decode_cached's key (the nearest
    load returned the cached bilinear pixels)."""
    pets = make_pets()
    _patterned_pet(pets)
    bilinear = load_dataset("pets", size=16, data_root=pets.parent)
    nearest = load_dataset("pets", size=16, data_root=pets.parent, decoding=DecodeOptions(resize="nearest"))
    assert not np.array_equal(bilinear.images.numpy(), nearest.images.numpy())
    assert np.array_equal(bilinear.masks.numpy(), nearest.masks.numpy())
    keys = [json.loads(p.read_text()) for p in sorted((tmp_path / "cache").glob("*/key.json"))]
    assert len(keys) == 2
    assert sorted(k.get("resize", "-") for k in keys) == ["-", "nearest"]
    # a hit, no third entry
    again = load_dataset("pets", size=16, data_root=pets.parent, decoding=DecodeOptions(resize="nearest"))
    assert np.array_equal(again.images.numpy(), nearest.images.numpy())
    assert len(list((tmp_path / "cache").glob("*/key.json"))) == 2


def test_an_unknown_filter_is_refused(files, tmp_path: Path):
    path = files.image(tmp_path / "a.png")
    with pytest.raises(VinyError, match="resize must be one of bilinear, nearest"):
        load_rgb(path, 8, "bicubic")
    with pytest.raises(VinyError, match="--resize must be bilinear or nearest"):
        TrainConfig(regime="segment", resize="bicubic").resolved()


@pytest.mark.parametrize(
    ("preset", "regime", "dataset", "phase", "expected"),
    [
        ("paper", "segment", "pets", None, "bilinear"),
        ("authors", "segment", "pets", None, "nearest"),
        ("authors", "spatial", "pets", "geometry", "nearest"),
        ("authors", "classify", "intel", "intermediate", "nearest"),
        ("authors", "classify", "intel", "geometry", "bilinear"),
        ("authors", "simmim", "imagenet", None, "bilinear"),
    ],
)
def test_the_presets_filter_per_stage(preset, regime, dataset, phase, expected):
    cfg = TrainConfig(regime=regime, preset=preset, dataset=dataset, phase=phase).resolved()
    assert cfg.resize == expected
    assert TrainConfig(regime=regime, preset=preset, dataset=dataset, resize="nearest").resolved().resize == (
        "nearest"
    )


def test_a_run_decodes_with_its_own_filter_threads_and_on_error():
    """``TrainConfig.decoding``: what ``trainers.splits.load`` passes ``load_dataset``; an unresolved
    filter (None) is DecodeOptions' default, and a config left alone decodes with every default.
    Mutant seen failing: ``decoding`` leaving ``on_error`` at its default."""
    cfg = TrainConfig(regime="segment", resize="nearest", workers=2, on_error="fail")
    assert cfg.decoding(keep_aspect=True) == DecodeOptions("nearest", True, 2, "fail")
    assert TrainConfig(regime="segment").decoding() == DecodeOptions()
