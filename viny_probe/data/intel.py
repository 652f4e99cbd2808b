"""Intel Image Classification (Kaggle: puneet6060/intel-image-classification): scene classes.

Kaggle's archive nests each split twice (``seg_train/seg_train/<class>/*.jpg``); a flat
``seg_train/<class>/*.jpg`` copy is accepted too. The unlabelled ``seg_pred`` folder is not used.
"""

from __future__ import annotations

from pathlib import Path

from viny_probe.data.base import ImageSet
from viny_probe.data.cache import DecodeOptions, Sample, decode_cached
from viny_probe.data.folder import scan_images, warn_dropped
from viny_probe.data.spec import DatasetSpec, register_dataset
from viny_probe.errors import VinyError

FOLDER_NAME = "intel-image-classification"
SPLITS = ("train", "test")

LAYOUT = f"""Intel Image Classification as Kaggle ships it:
  <root>/seg_train/seg_train/<class>/*.jpg and <root>/seg_test/seg_test/<class>/*.jpg
  (or the flat <root>/seg_train/<class>/*.jpg), classes such as buildings, forest, glacier, mountain, sea, street,
where root may also be the parent folder holding {FOLDER_NAME}/."""


def _layout_error(root: Path, problem: str) -> VinyError:
    return VinyError(f"{problem} in '{root}'. Expected {LAYOUT}")


def find_intel_folder(root: str | Path) -> Path:
    """The folder holding ``seg_train``/``seg_test``: ``root`` itself or ``root/intel-image-classification``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise _layout_error(root, "no such folder")
    for folder in (root, root / FOLDER_NAME):
        if (folder / "seg_train").is_dir() or (folder / "seg_test").is_dir():
            return folder.resolve()
    raise _layout_error(root, "no seg_train/ or seg_test/ folder")


def split_folder(base: Path, split: str) -> Path | None:
    """The folder of class folders for ``split``: nested ``seg_x/seg_x`` when present, else ``seg_x``."""
    outer = base / f"seg_{split}"
    if not outer.is_dir():
        return None
    return outer / outer.name if (outer / outer.name).is_dir() else outer


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_intel(
    root: str | Path,
    size: int = 128,
    split: str = "train",
    cache_dir: str | Path | None = None,
    decoding: DecodeOptions = DecodeOptions(),
) -> ImageSet:
    """One split of Intel Image Classification: images (N, 3, S, S), labels (N,) into sorted class names.

    Class names come from the train split's folders (when present), so a label means the same class
    in both splits. Images are in sorted class, then file order; ids are ``<class>/<file stem>``.
    ``decoding`` as ``decode_cached``.
    """
    if split not in SPLITS:
        raise VinyError(f"split must be one of {SPLITS} for intel, got {split!r}")
    base = find_intel_folder(root)
    folder = split_folder(base, split)
    if folder is None:
        raise _layout_error(base, f"no seg_{split}/ folder")
    train_folder = split_folder(base, "train")
    classes = class_folders(train_folder or folder)
    unknown = sorted(set(class_folders(folder)) - set(classes))
    if unknown:
        raise _layout_error(folder, f"class folders {unknown} are not in seg_train")
    # One listing of the split, so that an image reached from two class folders (a link) counts once.
    listing = scan_images(folder)
    warn_dropped(folder, listing)
    label_of = {name: label for label, name in enumerate(classes)}
    in_classes = [(label_of[p.split("/", 1)[0]], p) for p in listing.files if p.split("/", 1)[0] in label_of]
    samples = [
        Sample(image=folder / path, id=path.rsplit(".", 1)[0], label=label)
        for label, path in sorted(in_classes)  # sorted class, then file order
        if "/" in path
    ]
    if not samples:
        raise _layout_error(folder, "no images in any class folder")
    return decode_cached(
        samples,
        name="intel",
        size=size,
        class_names=classes,
        decoding=decoding,
        cache_dir=cache_dir,
        key={"root": str(folder), "split": split},
    )


def _load(root, *, size, split, on_error, cache_dir, workers, **decoding):
    return load_intel(root, size, split, cache_dir, DecodeOptions.from_loader(on_error, workers, decoding))


register_dataset(
    DatasetSpec(
        name="intel",
        load=_load,
        description="Intel Image Classification (6 scenes; seg_train, and seg_test as its test split)",
        targets="classes",
        held_out="own",
        size=14_034,
        folder=FOLDER_NAME,
        stand_in="toy-scenes",
    )
)
