"""What viny knows about a dataset, written once on its ``DatasetSpec`` and registered by name.

Each dataset's own module registers its spec (``register_dataset``); ``load_dataset``, the split rule
(``viny_probe.trainers.splits``), the diagnostics, the plans and the CLI help read it from
``viny_probe.registry.DATASETS``. A new dataset is one file with a loader and one registration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from viny_probe.data.base import ImageSet, MaskClasses
from viny_probe.registry import DATASETS

# How a dataset's held-out images are chosen (viny_probe.trainers.splits):
#   "fixed"  - the study's fixed test set: --test-size images (default 1000) keyed by the split seed;
#   "fifth"  - --test-size images, at most a fifth of the set, keyed by the split seed;
#   "own"    - the dataset ships its own test split (Intel's seg_test);
#   "stream" - an embedded stream: training images are its first --train-size, the held-out images
#              come from a separate stream no training subset reaches.
HELD_OUT_RULES = ("fixed", "fifth", "own", "stream")
HELD_OUT_STREAM = 1_000_000  # data seed of a stream's held-out images = this + the split seed
TARGETS = ("none", "classes", "trimaps")

# A loader: (root or None for embedded sets, size, split, limit, seed, on_error, cache_dir, workers).
Loader = Callable[..., ImageSet]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: how to load it and how the protocol treats it.

    ``size`` is the number of images: exact for an embedded labelled set (generated with data seed
    0, a fixed dataset like a real one), the default training images of a stream, approximate for a
    real dataset (cost estimates only; a run uses what is on disk). ``folder`` is the folder name
    looked for under a shared data root. ``stand_in`` names the embedded dataset that plays this
    one's part when a plan runs on embedded data. ``limits_itself``: the loader decodes only the
    ``limit`` images it is asked for (else the whole set is loaded and a seeded subset taken).
    ``load`` is called as ``load(root, size=, split=, limit=, seed=, on_error=, cache_dir=, workers=)``
    with ``root`` None for an embedded set, plus ``resize=`` and ``keep_aspect=`` (``decode_cached``)
    only when a run asks for other than bilinear and a square: a loader taking ``**_`` ignores them."""

    name: str
    load: Loader
    description: str
    targets: str = "none"
    held_out: str = "fifth"
    size: int | None = None
    embedded: bool = False
    folder: str | None = None
    stand_in: str | None = None
    limits_itself: bool = False
    max_size: int | None = None  # a stream's cap (training plus held-out images)
    # What makes the data on this machine differ from the dataset's usual contents (stand-ins, ...):
    # called when a run loads it; each note goes into the run's data.json.
    notes: Callable[[], list[str]] | None = None
    # What its mask files' values mean (targets "trimaps"): Oxford's 1/2/3 trimap values by default; a
    # dataset with other masks declares its own value map (any number of classes, ignore values).
    # Given, it makes targets "trimaps". A loader that reads the map from its folder (mask-folder)
    # leaves it None: the loaded ImageSet's ``mask_classes`` is what the diagnostics read either way.
    masks: MaskClasses | None = None
    # ids(n, seed): the ids of its n images at data seed ``seed``, known without loading any. Given, its
    # loader also takes ``indices=`` and loads only those images (the embedded sets: the diagnostics
    # then generate the few images they score on, not the whole set).
    ids: Callable[[int, int], list[str]] | None = None

    def __post_init__(self) -> None:
        if self.masks is not None:
            if not isinstance(self.masks, MaskClasses):
                raise ValueError(f"masks must be a MaskClasses, got {type(self.masks).__name__}")
            object.__setattr__(self, "targets", "trimaps")
        if self.held_out not in HELD_OUT_RULES:
            raise ValueError(f"held_out must be one of {HELD_OUT_RULES}, got {self.held_out!r}")
        if self.targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}, got {self.targets!r}")

    @property
    def has_trimaps(self) -> bool:
        """Whether it has per-pixel masks of classes (Oxford's trimaps or any declared value map)."""
        return self.targets == "trimaps"

    @property
    def fixed_size(self) -> int | None:
        """Images of an embedded labelled set (generated once at this size); None otherwise."""
        return self.size if self.embedded and self.held_out != "stream" else None


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    return DATASETS.register(spec.name, spec)


def dataset_spec(name: str) -> DatasetSpec:
    """The registered spec of ``name``; an unknown name is a VinyError listing the registered ones."""
    return DATASETS.get(name)


def has_trimaps(name: str | None) -> bool:
    """Whether ``name`` is a registered dataset with trimaps (False for a name not registered, e.g.
    read off an old checkpoint)."""
    return name in DATASETS and DATASETS.get(name).has_trimaps


def names_with_masks() -> str:
    """``pets, toy-pets, ...``: the registered datasets with masks, for help texts and errors."""
    return ", ".join(dataset_names(trimaps=True))


def dataset_names(*, embedded: bool | None = None, trimaps: bool | None = None) -> tuple[str, ...]:
    return tuple(
        s.name
        for s in DATASETS.values()
        if (embedded is None or s.embedded == embedded) and (trimaps is None or s.has_trimaps == trimaps)
    )
