"""Tiny datasets in the real folder layouts, written with PIL into tmp_path (40x30 px images)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

W, H = 40, 30


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch ~/.cache/viny or a data root set in the developer's shell."""
    monkeypatch.setenv("VINY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("VINY_DATA_ROOT", raising=False)


def noise_image(mode: str = "RGB", seed: int = 0, size: tuple[int, int] = (W, H)) -> Image.Image:
    """A random RGB image converted to ``mode`` (L, RGBA, CMYK, P, 1, ...)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    return image if mode == "RGB" else image.convert(mode)


def write_image(path: Path, mode: str = "RGB", seed: int = 0, fmt: str | None = None) -> Path:
    """Save a noise image; ``fmt`` overrides the format (e.g. PNG bytes under a .jpg name, as in Pets)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = noise_image(mode, seed)
    if fmt is None and mode in ("RGBA", "LA", "P", "1") and path.suffix.lower() in (".jpg", ".jpeg"):
        fmt = "PNG"  # JPEG cannot hold these modes
    image.save(path, format=fmt)
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8 this is not really a jpeg " * 8)
    return path


def write_trimap(path: Path, values: np.ndarray | int, size: tuple[int, int] = (W, H)) -> Path:
    """A trimap PNG (mode L) holding Oxford's raw values (1 pet, 2 background, 3 boundary)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(values, int):
        values = np.full((size[1], size[0]), values, dtype=np.uint8)
    Image.fromarray(np.asarray(values, dtype=np.uint8)).save(path)
    return path


class Files:
    """The helpers above as a fixture, so test modules never import conftest by name."""

    noise = staticmethod(noise_image)
    image = staticmethod(write_image)
    corrupt = staticmethod(write_corrupt)
    trimap = staticmethod(write_trimap)


@pytest.fixture
def files() -> Files:
    return Files()


@dataclass
class PetsFixture:
    parent: Path  # torchvision's root, holding oxford-iiit-pet/
    folder: Path  # the dataset folder itself
    names: list[str]  # expected image ids, in load order (trainval, then test, deduplicated)
    class_ids: list[int]
    bad: dict[str, Path] = field(default_factory=dict)


# (name, class id, image mode): the odd modes the real dataset has (CMYK, greyscale, PNG-in-.jpg RGBA).
PET_IMAGES = [
    ("Abyssinian_1", 1, "RGB"),
    ("american_bulldog_1", 2, "L"),
    ("american_pit_bull_terrier_1", 3, "CMYK"),
    ("Abyssinian_2", 1, "RGBA"),
    ("american_bulldog_2", 2, "P"),
    ("american_pit_bull_terrier_2", 3, "1"),
]


def _list_line(name: str, class_id: int) -> str:
    species = 1 if name[0].isupper() else 2
    return f"{name} {class_id} {species} {class_id}"


@pytest.fixture
def make_pets(tmp_path: Path):
    """Build Oxford-IIIT Pet in torchvision's layout; trimap of image i is filled with 1 + i % 3."""

    def build(corrupt: bool = False, missing_trimap: bool = False, name: str = "pets-data") -> PetsFixture:
        parent = tmp_path / name
        folder = parent / "oxford-iiit-pet"
        entries = [(n, c) for n, c, _ in PET_IMAGES]
        for i, (image_name, _, mode) in enumerate(PET_IMAGES):
            write_image(folder / "images" / f"{image_name}.jpg", mode, seed=i)
            write_trimap(folder / "annotations" / "trimaps" / f"{image_name}.png", 1 + i % 3)
        fixture = PetsFixture(parent, folder, [n for n, _ in entries], [c for _, c in entries])
        trainval, test = entries[:4], entries[4:]
        if corrupt:
            write_corrupt(folder / "images" / "Abyssinian_3.jpg")
            write_trimap(folder / "annotations" / "trimaps" / "Abyssinian_3.png", 1)
            trainval.append(("Abyssinian_3", 1))
            fixture.bad["corrupt"] = folder / "images" / "Abyssinian_3.jpg"
        if missing_trimap:
            write_image(folder / "images" / "american_bulldog_3.jpg", seed=99)
            test.append(("american_bulldog_3", 2))
            fixture.bad["missing_trimap"] = folder / "annotations" / "trimaps" / "american_bulldog_3.png"
        annotations = folder / "annotations"
        # Abyssinian_1 is listed in test too: the pool must keep it once, at its trainval position.
        (annotations / "trainval.txt").write_text("\n".join(_list_line(*e) for e in trainval) + "\n")
        (annotations / "test.txt").write_text("\n".join(_list_line(*e) for e in [*test, entries[0]]) + "\n")
        header = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"
        (annotations / "list.txt").write_text(header + "\n".join(_list_line(*e) for e in entries) + "\n")
        return fixture

    return build


INTEL_CLASSES = ["buildings", "forest", "sea"]


@pytest.fixture
def make_intel(tmp_path: Path):
    """Build Intel Image Classification: 2 train and 1 test image per class, nested (Kaggle) or flat."""

    def build(nested: bool = True, corrupt: bool = False) -> Path:
        root = tmp_path / "intel-data" / "intel-image-classification"
        for split, count in (("train", 2), ("test", 1)):
            outer = root / f"seg_{split}"
            folder = outer / outer.name if nested else outer
            for c, name in enumerate(INTEL_CLASSES):
                for k in range(count):
                    write_image(folder / name / f"{100 * c + k}.jpg", seed=10 * c + k)
        if corrupt:
            write_corrupt(
                (root / "seg_train" / "seg_train" if nested else root / "seg_train") / "forest" / "999.jpg"
            )
        return root

    return build


WNIDS = ["n01440764", "n01443537", "n02102040"]


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    """ImageNet-1K style: imagenet/train/<wnid>/<wnid>_<k>.JPEG, 4 images per class (12 in all)."""
    root = tmp_path / "imagenet"
    for c, wnid in enumerate(WNIDS):
        for k in range(4):
            write_image(root / "train" / wnid / f"{wnid}_{k}.JPEG", seed=100 + 4 * c + k, fmt="JPEG")
    return root


@pytest.fixture
def loose_folder(tmp_path: Path) -> Path:
    """Images at several depths, mixed-case extensions, plus files that are not images."""
    root = tmp_path / "photos"
    write_image(root / "a.png", "RGBA", seed=1)
    write_image(root / "B.JPG", "L", seed=2, fmt="JPEG")
    write_image(root / "trip" / "c.bmp", seed=3)
    write_image(root / "trip" / "day2" / "d.TIF", seed=4)
    write_image(root / "trip" / "e.webp", seed=5)
    write_image(root / "trip" / ".hidden.jpg", seed=6, fmt="JPEG")
    (root / "notes.txt").write_text("not an image")
    (root / "trip" / "thumbs.db").write_bytes(b"\x00" * 10)
    return root
