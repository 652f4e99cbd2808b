import shutil
from pathlib import Path

import pytest
import torch

from viny_probe.data import load_dataset
from viny_probe.data.cache import DecodeOptions, SkippedImagesWarning
from viny_probe.data.intel import load_intel
from viny_probe.errors import VinyError

INTEL_CLASSES = ["buildings", "forest", "sea"]  # the fixture's classes, sorted


@pytest.mark.parametrize("nested", [True, False], ids=["kaggle-nested", "flat"])
@pytest.mark.parametrize("which", ["dataset", "parent"])
def test_train_split_loads_with_sorted_classes(make_intel, nested: bool, which: str) -> None:
    root = make_intel(nested=nested)
    data = load_intel(root if which == "dataset" else root.parent, size=24)
    assert data.name == "intel"
    assert data.images.shape == (6, 3, 24, 24) and data.images.dtype == torch.uint8
    assert data.masks is None
    assert data.class_names == INTEL_CLASSES
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.ids[:2] == ["buildings/0", "buildings/1"] and data.ids[-1] == "sea/201"


def test_test_split_shares_the_train_class_indices(make_intel) -> None:
    root = make_intel()
    # A class that only the train split has must not shift the test labels.
    shutil.rmtree(root / "seg_test" / "seg_test" / "forest")
    data = load_intel(root, size=16, split="test")
    assert data.class_names == INTEL_CLASSES
    assert data.labels.tolist() == [0, 2] and data.ids == ["buildings/0", "sea/200"]


def test_whatever_class_folders_exist_are_the_classes(make_intel, files) -> None:
    root = make_intel()
    files.image(root / "seg_train" / "seg_train" / "aardvark" / "1.jpg")
    data = load_intel(root, size=16)
    assert data.class_names == ["aardvark", *INTEL_CLASSES]
    assert data.labels.tolist() == [0, 1, 1, 2, 2, 3, 3]


def test_test_class_missing_from_train_is_an_error(make_intel, files) -> None:
    root = make_intel()
    files.image(root / "seg_test" / "seg_test" / "volcano" / "1.jpg")
    with pytest.raises(VinyError, match="volcano"):
        load_intel(root, size=16, split="test")


@pytest.mark.parametrize("damage", ["empty", "no_split_folder"])
def test_malformed_folder_names_the_expected_layout(make_intel, tmp_path: Path, damage: str) -> None:
    if damage == "empty":
        root = tmp_path / "empty"
        root.mkdir()
        split = "train"
    else:
        root = make_intel()
        shutil.rmtree(root / "seg_test")
        split = "test"
    with pytest.raises(VinyError) as info:
        load_intel(root, size=16, split=split)
    assert "seg_train/seg_train/<class>/*.jpg" in str(info.value) and str(root) in str(info.value)


def test_unknown_split_is_an_error(make_intel) -> None:
    with pytest.raises(VinyError, match="split"):
        load_intel(make_intel(), size=16, split="val")


def test_corrupt_image_skip_or_fail(make_intel) -> None:
    root = make_intel(corrupt=True)
    bad = root / "seg_train" / "seg_train" / "forest" / "999.jpg"
    with pytest.raises(VinyError) as info:
        load_intel(root, size=16, decoding=DecodeOptions(on_error="fail"))
    assert str(bad) in str(info.value)
    with pytest.warns(SkippedImagesWarning, match="999.jpg"):
        data = load_intel(root, size=16, decoding=DecodeOptions(on_error="skip"))
    assert len(data) == 6 and data.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_registry_loads_both_splits(make_intel) -> None:
    root = make_intel()
    train = load_dataset("intel", size=16, data_root=root.parent)
    test = load_dataset("intel", size=16, data_root=root.parent, split="test")
    assert (len(train), len(test)) == (6, 3) and train.class_names == test.class_names
