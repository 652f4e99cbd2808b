from pathlib import Path

import pytest
import torch

from viny_probe.data import DATASETS, decode, load_dataset
from viny_probe.data.folder import list_images, load_image_folder
from viny_probe.errors import VinyError

WNIDS = ["n01440764", "n01443537", "n02102040"]  # the fixture's classes, sorted


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every image the decoder is asked for."""
    calls: list[Path] = []
    real = decode.load_rgb

    def counting(path, size, *args):
        calls.append(Path(path))
        return real(path, size, *args)

    monkeypatch.setattr(decode, "load_rgb", counting)
    return calls


def test_imagenet_root_or_its_train_folder(imagenet_root: Path) -> None:
    whole = load_image_folder(imagenet_root, size=16)
    train = load_image_folder(imagenet_root / "train", size=16)
    assert whole.name == "imagenet" and whole.images.shape == (12, 3, 16, 16)
    assert whole.ids == train.ids and torch.equal(whole.images, train.images)
    assert whole.class_names == WNIDS
    for image_id, label in zip(whole.ids, whole.labels.tolist(), strict=True):
        assert image_id.split("/")[0] == WNIDS[label]


def test_subset_is_seeded_and_nested(imagenet_root: Path) -> None:
    small = load_image_folder(imagenet_root, size=16, limit=5, seed=3)
    big = load_image_folder(imagenet_root, size=16, limit=9, seed=3)
    again = load_image_folder(
        imagenet_root, size=16, limit=5, seed=3, cache_dir=imagenet_root.parent / "other"
    )
    other_seed = load_image_folder(imagenet_root, size=16, limit=5, seed=4)
    assert len(small) == 5 and big.ids[:5] == small.ids and again.ids == small.ids
    assert torch.equal(big.images[:5], small.images)
    assert other_seed.ids != small.ids


def test_only_the_subset_is_decoded(imagenet_root: Path, decode_calls: list[Path]) -> None:
    data = load_image_folder(imagenet_root, size=16, limit=3, seed=0)
    assert len(decode_calls) == 3
    assert sorted(p.stem for p in decode_calls) == sorted(i.split("/")[1] for i in data.ids)


def test_any_folder_recursively_without_labels(loose_folder: Path) -> None:
    assert list_images(loose_folder) == ["B.JPG", "a.png", "trip/c.bmp", "trip/day2/d.TIF", "trip/e.webp"]
    data = load_image_folder(loose_folder, size=16)
    assert data.name == "folder" and data.labels is None and data.class_names == []
    assert sorted(data.ids) == ["B", "a", "trip/c", "trip/day2/d", "trip/e"]
    assert data.images.shape == (5, 3, 16, 16) and data.images.dtype == torch.uint8


def test_folder_without_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(VinyError, match=r"no image files.*train/<wnid>/\*\.JPEG"):
        load_image_folder(tmp_path / "empty", size=16)
    with pytest.raises(VinyError, match="no such folder"):
        load_image_folder(tmp_path / "missing", size=16)


def test_bad_limit_is_an_error(imagenet_root: Path) -> None:
    with pytest.raises(VinyError, match="limit"):
        load_image_folder(imagenet_root, size=16, limit=0)


def test_registry_resolves_imagenet_under_a_shared_root(imagenet_root: Path) -> None:
    data = load_dataset("imagenet", size=16, data_root=imagenet_root.parent, limit=4)
    assert data.name == "imagenet" and len(data) == 4 and data.labels is not None


def test_registry_without_data_root_says_how_to_pass_it() -> None:
    with pytest.raises(VinyError, match="VINY_DATA_ROOT") as info:
        load_dataset("pets")
    assert "--data-root" in str(info.value)


def test_unknown_dataset_lists_the_choices() -> None:
    with pytest.raises(VinyError, match="toy-pets"):
        load_dataset("cifar")
    assert {"pets", "intel", "imagenet", "folder", "toy-pets", "toy-scenes", "toy-unlabeled"} <= set(DATASETS)
