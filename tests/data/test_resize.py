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


def test_diagnostics_decode_with_the_checkpoints_training_filter(make_pets, tmp_path, monkeypatch):
    """A checkpoint trained with ``resize="nearest"`` is evaluated on images resized with nearest (the
    same pixels ``load_dataset`` gives with that filter, not bilinear's), said in the notes and the data
    info; a model from elsewhere gets bilinear; checkpoints that disagree get bilinear with a note naming
    them; ``--resize`` overrides. Mutant applied once: ``_load_full`` always decoding with the default
    ``DecodeOptions()`` -> the nearest checkpoint's images were bilinear's and this test failed."""
    from viny_probe.analysis.evaluation_data import load_probe_data, resolve_evaluation, training_filter

    monkeypatch.setenv("VINY_CACHE_DIR", str(tmp_path / "cache"))
    pets = make_pets()
    nearest, bilinear = ("N", {"config": {"resize": "nearest"}}), ("B", {"config": {"regime": "segment"}})
    where = resolve_evaluation([nearest], "pets", 0, 2)
    assert where["resize"] == "nearest"
    assert any("nearest, the filter the checkpoints trained with" in n for n in where["notes"])
    pool, test, info = load_probe_data("pets", 16, pets.parent, 0, 2, 3, 2, where["resize"])
    assert info["resize"] == "nearest"
    by_filter = {
        f: load_dataset("pets", size=16, data_root=pets.parent, decoding=DecodeOptions(resize=f))
        for f in ("nearest", "bilinear")
    }
    for got in (pool, test):
        for f, whole in by_filter.items():
            index = [whole.ids.index(i) for i in got.ids]
            same = (got.images == whole.images[index]).all().item()
            assert same == (f == "nearest"), f

    assert training_filter([("timm", {})]) == ("bilinear", None)  # a model from elsewhere
    assert training_filter([bilinear]) == ("bilinear", None)  # trained before the field existed
    mixed, note = training_filter([nearest, bilinear])
    assert mixed == "bilinear" and "N: nearest; B: bilinear" in note
    assert training_filter([nearest], "bilinear")[0] == "bilinear"
    with pytest.raises(VinyError, match="--resize must be one of"):
        training_filter([nearest], "bicubic")


@pytest.mark.parametrize("command", ["probe", "diagnose"])
def test_resize_flag_reaches_the_evaluation_set(command, monkeypatch, tmp_path):
    """`viny probe/diagnose --resize nearest` hands the library an EvalSet with resize="nearest", and
    none given leaves it None (the checkpoints' own filter). Mutant applied once: ``value(resize)``
    left out of the probe command's EvalSet -> resize None there, and the probe case failed."""
    from typer.testing import CliRunner

    import viny_probe.analysis.checkpoint_probe as checkpoint_probe
    import viny_probe.analysis.diagnose as diagnose
    from viny_probe.cli import app

    seen = []

    def capture(*args, **kwargs):
        seen.append(kwargs["data"] if "data" in kwargs else args[2])
        raise VinyError("captured")

    monkeypatch.setattr(checkpoint_probe, "probe_checkpoint", capture)
    monkeypatch.setattr(diagnose, "diagnose", capture)
    extra = ["-o", str(tmp_path / "out")] if command == "diagnose" else []
    for flags in (["--resize", "nearest"], []):
        result = CliRunner().invoke(app, [command, "some.pt", *flags, *extra])
        assert str(result.exception) == "captured", result.output
    assert [d.resize for d in seen] == ["nearest", None]
