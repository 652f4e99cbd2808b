"""Oxford-IIIT Pet (37 breeds, with trimaps) from torchvision's ``OxfordIIITPet`` folder layout.

The study's segmentation task pools the official trainval and test lists (7,349 images) and draws its
own splits from that pool (see ``viny_probe.data.protocol``), so this loader returns the pool.
"""

from __future__ import annotations

from pathlib import Path

from viny_probe.data.base import ImageSet
from viny_probe.data.cache import DecodeOptions, Sample, decode_cached
from viny_probe.data.spec import DatasetSpec, register_dataset
from viny_probe.errors import VinyError

FOLDER_NAME = "oxford-iiit-pet"
SPLIT_FILES = ("trainval.txt", "test.txt")

LAYOUT = f"""Oxford-IIIT Pet in torchvision's OxfordIIITPet layout:
  <root>/{FOLDER_NAME}/images/<name>.jpg
  <root>/{FOLDER_NAME}/annotations/trimaps/<name>.png
  <root>/{FOLDER_NAME}/annotations/trainval.txt and test.txt (lines '<name> <class id 1-37> <species> <breed id>')
where root may also be the {FOLDER_NAME} folder itself. torchvision.datasets.OxfordIIITPet(root,
target_types='segmentation', download=True) creates it; or unpack images.tar.gz and annotations.tar.gz there."""


def _layout_error(root: Path, problem: str) -> VinyError:
    return VinyError(f"{problem} in '{root}'. Expected {LAYOUT}")


def find_pets_folder(root: str | Path) -> Path:
    """The folder holding ``images/`` and ``annotations/``: ``root`` itself or ``root/oxford-iiit-pet``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _layout_error(root, "no such folder")
    for folder in (root, root / FOLDER_NAME):
        if (folder / "images").is_dir() and (folder / "annotations").is_dir():
            if not (folder / "annotations" / "trimaps").is_dir():
                raise _layout_error(folder, "missing annotations/trimaps/")
            return folder.resolve()
    raise _layout_error(root, "no images/ and annotations/ folders")


def read_list_file(path: Path) -> list[tuple[str, int]]:
    """(image name, class id 1..37) for each line of an annotation list; '#' lines are comments."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[1].isdigit() or int(fields[1]) < 1:
            raise VinyError(
                f"{path}:{number}: expected '<name> <class id 1-37> <species> <breed id>', got {line!r}. "
                f"Restore the file from the dataset's annotations.tar.gz. Expected {LAYOUT}"
            )
        entries.append((fields[0], int(fields[1])))
    return entries


def breed_name(image_name: str) -> str:
    """'american_bulldog_12' -> 'American Bulldog', as torchvision names the classes."""
    return " ".join(part.title() for part in image_name.rsplit("_", 1)[0].split("_"))


def _list_entries(folder: Path) -> list[tuple[str, int]]:
    """trainval then test entries, deduplicated by image name (first occurrence kept)."""
    annotations = folder / "annotations"
    present = [annotations / name for name in SPLIT_FILES if (annotations / name).is_file()]
    if not present:
        if not (annotations / "list.txt").is_file():
            raise _layout_error(folder, "no annotations/trainval.txt, test.txt or list.txt")
        present = [annotations / "list.txt"]  # same images as trainval + test together
    entries: dict[str, int] = {}
    for path in present:
        for name, class_id in read_list_file(path):
            entries.setdefault(name, class_id)
    if not entries:
        raise _layout_error(folder, "the annotation lists name no images")
    return list(entries.items())


def _class_names(entries: list[tuple[str, int]], folder: Path) -> list[str]:
    names: dict[int, str] = {}
    for image_name, class_id in entries:
        breed = breed_name(image_name)
        if names.setdefault(class_id, breed) != breed:
            raise VinyError(
                f"{folder / 'annotations'}: class id {class_id} is given to both '{names[class_id]}' and "
                f"'{breed}' ({image_name}); the annotation lists are inconsistent. Restore them from the dataset."
            )
    # Ids missing from the lists (only in cut-down copies) keep a placeholder so label = class id - 1 holds.
    return [names.get(i, f"class {i}") for i in range(1, max(names) + 1)]


def load_pets(
    root: str | Path,
    size: int = 128,
    cache_dir: str | Path | None = None,
    decoding: DecodeOptions = DecodeOptions(),
) -> ImageSet:
    """Oxford-IIIT Pet trainval + test pooled: images (N, 3, S, S), labels (N,) = class id - 1 (37 breeds),
    masks (N, S, S) trimap classes 0 pet / 1 background / 2 boundary; ids are image names.

    An image that cannot be read or has no trimap is left out with a warning (``decoding.on_error``
    "skip") or raises a VinyError naming the file ("fail"). Decoded once, then cached. ``decoding.resize``
    "nearest" resizes images and trimaps jointly with nearest (the study's code); ``keep_aspect`` as
    ``decode_cached`` (images only).
    """
    folder = find_pets_folder(root)
    entries = _list_entries(folder)
    samples = [
        Sample(
            image=folder / "images" / f"{name}.jpg",
            id=name,
            label=class_id - 1,
            mask=folder / "annotations" / "trimaps" / f"{name}.png",
        )
        for name, class_id in entries
    ]
    return decode_cached(
        samples,
        name="pets",
        size=size,
        class_names=_class_names(entries, folder),
        decoding=decoding,
        cache_dir=cache_dir,
        key={"root": str(folder)},
    )


def _load(root, *, size, on_error, cache_dir, workers, **decoding):
    return load_pets(root, size, cache_dir, DecodeOptions.from_loader(on_error, workers, decoding))


register_dataset(
    DatasetSpec(
        name="pets",
        load=_load,
        description="Oxford-IIIT Pet, trainval + test pooled (37 breeds, trimaps)",
        targets="trimaps",
        held_out="fixed",
        size=7_349,
        folder=FOLDER_NAME,
        stand_in="toy-pets",
    )
)
