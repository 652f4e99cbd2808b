import warnings
from pathlib import Path

import pytest
import torch

from viny_probe.data import load_dataset
from viny_probe.data.cache import DecodeOptions, SkippedImagesWarning
from viny_probe.data.pets import breed_name, load_pets
from viny_probe.errors import VinyError

PET_CLASSES = ["Abyssinian", "American Bulldog", "American Pit Bull Terrier"]  # class ids 1, 2, 3


def _load_quietly(root: Path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean dataset must load without any warning
        return load_pets(root, size=32, **kwargs)


@pytest.mark.parametrize("which", ["parent", "folder"])
def test_loads_from_parent_or_dataset_folder(make_pets, which: str) -> None:
    pets = make_pets()
    data = _load_quietly(pets.parent if which == "parent" else pets.folder)
    n = len(pets.names)
    assert data.name == "pets"
    assert data.images.shape == (n, 3, 32, 32) and data.images.dtype == torch.uint8
    assert data.masks is not None and data.masks.shape == (n, 32, 32) and data.masks.dtype == torch.uint8
    assert data.ids == pets.names  # trainval then test, the duplicate listed once
    assert data.class_names == PET_CLASSES
    assert data.labels.tolist() == [c - 1 for c in pets.class_ids]


def test_trimaps_map_1_2_3_to_pet_background_boundary(make_pets) -> None:
    data = _load_quietly(make_pets().parent)
    for i in range(len(data)):  # the fixture fills trimap i with raw value 1 + i % 3
        assert (data.masks[i] == i % 3).all()


def test_list_txt_is_used_when_split_lists_are_absent(make_pets) -> None:
    pets = make_pets()
    (pets.folder / "annotations" / "trainval.txt").unlink()
    (pets.folder / "annotations" / "test.txt").unlink()
    data = _load_quietly(pets.folder)  # list.txt starts with '#' comment lines
    assert sorted(data.ids) == sorted(pets.names)


def test_breed_names_follow_torchvision() -> None:
    assert breed_name("Abyssinian_100") == "Abyssinian"
    assert breed_name("american_pit_bull_terrier_7") == "American Pit Bull Terrier"
    assert breed_name("Russian_Blue_12") == "Russian Blue"


@pytest.mark.parametrize("damage", ["empty", "no_trimaps", "no_lists", "not_a_folder"])
def test_malformed_folder_names_the_expected_layout(make_pets, tmp_path: Path, damage: str) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    if damage == "no_trimaps":
        pets = make_pets()
        for f in (pets.folder / "annotations" / "trimaps").iterdir():
            f.unlink()
        (pets.folder / "annotations" / "trimaps").rmdir()
        root = pets.parent
    elif damage == "no_lists":
        pets = make_pets()
        for name in ("trainval.txt", "test.txt", "list.txt"):
            (pets.folder / "annotations" / name).unlink()
        root = pets.parent
    elif damage == "not_a_folder":
        root = tmp_path / "nowhere"
    with pytest.raises(VinyError) as info:
        load_pets(root, size=16)
    message = str(info.value)
    assert "oxford-iiit-pet/images/<name>.jpg" in message and "annotations/trimaps/<name>.png" in message
    assert str(root.name) in message


def test_malformed_list_line_names_file_and_line(make_pets) -> None:
    pets = make_pets()
    trainval = pets.folder / "annotations" / "trainval.txt"
    trainval.write_text(trainval.read_text() + "Abyssinian_9 cat\n")
    with pytest.raises(VinyError, match=r"trainval\.txt:5"):
        load_pets(pets.parent, size=16)


def test_skip_leaves_out_bad_files_and_reports_them_by_name(make_pets) -> None:
    pets = make_pets(corrupt=True, missing_trimap=True)
    with pytest.warns(SkippedImagesWarning) as record:
        data = load_pets(pets.parent, size=16, decoding=DecodeOptions(on_error="skip"))
    message = str(record[0].message)
    assert "skipped 2 of 8" in message
    assert str(pets.bad["corrupt"]) in message and str(pets.bad["missing_trimap"]) in message
    assert data.ids == pets.names and len(data) == 6
    assert data.labels.tolist() == [c - 1 for c in pets.class_ids]
    assert [(data.masks[i] == i % 3).all().item() for i in range(6)] == [True] * 6  # rows stay aligned

    # The cache hit reports the same files again rather than hiding them.
    with pytest.warns(SkippedImagesWarning, match="skipped 2 of 8"):
        load_pets(pets.parent, size=16, decoding=DecodeOptions(on_error="skip"))


@pytest.mark.parametrize("bad", ["corrupt", "missing_trimap"])
def test_fail_stops_at_a_bad_file_naming_it(make_pets, bad: str) -> None:
    pets = make_pets(**{bad: True})
    with pytest.raises(VinyError) as info:
        load_pets(pets.parent, size=16, decoding=DecodeOptions(on_error="fail"))
    assert str(pets.bad[bad]) in str(info.value)


def test_fail_after_a_skipping_load_still_fails(make_pets) -> None:
    pets = make_pets(corrupt=True)
    with pytest.warns(SkippedImagesWarning):
        load_pets(pets.parent, size=16, decoding=DecodeOptions(on_error="skip"))
    with pytest.raises(VinyError, match="Abyssinian_3.jpg"):
        # served from the cache, must not pass silently
        load_pets(pets.parent, size=16, decoding=DecodeOptions(on_error="fail"))


def test_bad_trimap_value_is_reported(make_pets, files) -> None:
    pets = make_pets()
    files.trimap(pets.folder / "annotations" / "trimaps" / "Abyssinian_2.png", 7)
    with pytest.raises(VinyError, match=r"Abyssinian_2\.png.*\[7\]"):
        load_pets(pets.parent, size=16, decoding=DecodeOptions(on_error="fail"))


def test_registry_finds_pets_from_argument_or_environment(make_pets, monkeypatch: pytest.MonkeyPatch) -> None:
    pets = make_pets()
    direct = load_dataset("pets", size=16, data_root=pets.parent)
    monkeypatch.setenv("VINY_DATA_ROOT", str(pets.parent))
    from_env = load_dataset("pets", size=16)
    assert torch.equal(direct.images, from_env.images) and direct.ids == from_env.ids == pets.names
    limited = load_dataset("pets", size=16, limit=4, seed=1)
    assert len(limited) == 4 and set(limited.ids) <= set(pets.names)
    with pytest.raises(VinyError, match="only intel has a 'test' split"):
        load_dataset("pets", size=16, split="test")
