"""The one in-memory form every dataset takes: decoded uint8 tensors at one resolution."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from viny_probe.errors import VinyError

# Trimap classes after mapping Oxford-IIIT Pet's 1/2/3 (see reference-notes.md).
PET, BACKGROUND, BOUNDARY = 0, 1, 2
SEG_CLASSES = ("pet", "background", "boundary")
# A mask pixel that carries no class (a dataset's ignore value, stored as this in decoded masks).
IGNORE = 255


@dataclass(frozen=True)
class MaskClasses:
    """What the values of a dataset's mask files mean, declared once on its ``DatasetSpec``.

    names: the class names, class index -> name (decoded masks hold these indices, 0..K-1).
    values: pixel value in the mask files -> class index (Oxford-IIIT Pet: {1: 0, 2: 1, 3: 2}).
    ignore: pixel values that carry no class (e.g. 255 for "void"); decoded as ``IGNORE``, they take
        no part in a patch's label or in any score. Any other value in a file is an error naming it.
    background / boundary: the class index playing that part in Fig 6's references (None: none).
    """

    names: tuple[str, ...]
    values: Mapping[int, int]
    ignore: tuple[int, ...] = ()
    background: int | None = None
    boundary: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "values", MappingProxyType({int(k): int(v) for k, v in self.values.items()}))
        object.__setattr__(self, "ignore", tuple(int(v) for v in self.ignore))
        k = len(self.names)
        fix = "declare MaskClasses(names=(...), values={file value: class index}, ignore=(...))"
        if not 1 <= k < IGNORE:
            raise VinyError(f"a mask dataset needs 1 to {IGNORE - 1} class names, got {k}; {fix}")
        if len(set(self.names)) != k:
            raise VinyError(f"mask class names must be distinct, got {list(self.names)}; {fix}")
        for value, index in self.values.items():
            if not 0 <= value <= 255 or not 0 <= index < k:
                raise VinyError(
                    f"mask value map entry {value} -> {index}: file values are 0..255 and class indices "
                    f"0..{k - 1} (one per name); {fix}"
                )
        both = set(self.values) & set(self.ignore)
        if both or any(not 0 <= v <= 255 for v in self.ignore):
            raise VinyError(
                f"ignore values {list(self.ignore)} must be 0..255 and not in the value map; {fix}"
            )
        for role in ("background", "boundary"):
            index = getattr(self, role)
            if index is not None and not 0 <= index < k:
                raise VinyError(f"{role} = {index} is not a class index 0..{k - 1}; {fix}")

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def describe(self) -> str:
        """``1 (pet), 2 (background), 3 (boundary)`` (and the ignore values): the values a file may hold."""
        named = [f"{v} ({self.names[c]})" for v, c in sorted(self.values.items())]
        return ", ".join(named + [f"{v} (ignored)" for v in self.ignore])

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "values": {str(k): v for k, v in sorted(self.values.items())},
            "ignore": list(self.ignore),
            "background": self.background,
            "boundary": self.boundary,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MaskClasses:
        return cls(
            names=tuple(data["names"]),
            values={int(k): int(v) for k, v in data["values"].items()},
            ignore=tuple(data.get("ignore", ())),
            background=data.get("background"),
            boundary=data.get("boundary"),
        )


# Oxford-IIIT Pet's trimaps (and the embedded toy-pets): 1 pet, 2 background, 3 boundary.
TRIMAP = MaskClasses(
    names=SEG_CLASSES, values={1: PET, 2: BACKGROUND, 3: BOUNDARY}, background=BACKGROUND, boundary=BOUNDARY
)


@dataclass
class ImageSet:
    """Decoded images at one square resolution, with optional image labels and trimaps.

    images: (N, 3, S, S) uint8, RGB.
    labels: (N,) int64 image-level class index into ``class_names``, or None.
    masks:  (N, S, S) uint8 mask classes, or None: indices into ``mask_classes.names`` (Oxford's trimap
        classes 0 pet/foreground, 1 background, 2 boundary unless declared otherwise), ``IGNORE`` for
        pixels without a class.
    mask_classes: what the mask classes are (Oxford's trimap classes, ``TRIMAP``, unless the dataset
        declares its own on its ``DatasetSpec``).
    ids:    one identifier per image (file stem or synthetic index): the split is keyed by it.
    skipped: ids of images the dataset lists but that could not be read (left out, see data.protocol).
    extents: (N, 2) int64 (h, w) of each image inside its square, or None (each fills it): a set whose
        images keep their aspect ratio, stored padded in the top-left corner (``decode.load_source``).
    The tensors may be views of a memory-mapped cache: treat them as read-only.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mask_classes: MaskClasses = TRIMAP
    extents: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(
                f"images must be (N, 3, S, S) uint8, got {tuple(self.images.shape)} {self.images.dtype}"
            )
        if self.labels is not None and self.labels.shape != (n,):
            raise ValueError(f"labels must be ({n},), got {tuple(self.labels.shape)}")
        if self.masks is not None and self.masks.shape != (n, *self.images.shape[2:]):
            raise ValueError(f"masks must be ({n}, S, S), got {tuple(self.masks.shape)}")
        if self.extents is not None and self.extents.shape != (n, 2):
            raise ValueError(f"extents must be ({n}, 2), got {tuple(self.extents.shape)}")
        if not self.ids:
            self.ids = [str(i) for i in range(n)]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def nbytes(self) -> int:
        """Bytes held by the images, labels and masks together."""
        tensors = [t for t in (self.images, self.labels, self.masks, self.extents) if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

    def to(self, device: torch.device | str) -> ImageSet:
        """The same set with every tensor on ``device`` (itself when already there). Training keeps a
        set resident on a GPU this way, so no batch is copied from the host."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return ImageSet(
            name=self.name,
            images=self.images.to(device),
            labels=None if self.labels is None else self.labels.to(device),
            masks=None if self.masks is None else self.masks.to(device),
            class_names=list(self.class_names),
            ids=list(self.ids),
            skipped=list(self.skipped),
            mask_classes=self.mask_classes,
            extents=None if self.extents is None else self.extents.to(device),
        )

    def subset(self, index: torch.Tensor | list[int]) -> ImageSet:
        """The images at ``index`` (a 1-D integer tensor or list), in that order (``skipped`` is the
        whole dataset's and is not carried into a subset)."""
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(
            name=self.name,
            images=self.images[index],
            labels=None if self.labels is None else self.labels[index],
            masks=None if self.masks is None else self.masks[index],
            class_names=list(self.class_names),
            ids=[self.ids[i] for i in index.tolist()],
            mask_classes=self.mask_classes,
            extents=None if self.extents is None else self.extents[index],
        )
