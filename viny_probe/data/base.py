"""The one in-memory form every dataset takes: decoded uint8 tensors at one resolution."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

# Trimap classes after mapping Oxford-IIIT Pet's 1/2/3 (see reference-notes.md).
PET, BACKGROUND, BOUNDARY = 0, 1, 2
SEG_CLASSES = ("pet", "background", "boundary")


@dataclass
class ImageSet:
    """Decoded images at one square resolution, with optional image labels and trimaps.

    images: (N, 3, S, S) uint8, RGB.
    labels: (N,) int64 image-level class index into ``class_names``, or None.
    masks:  (N, S, S) uint8 trimap classes (0 pet/foreground, 1 background, 2 boundary), or None.
    ids:    one identifier per image (file stem or synthetic index): the split is keyed by it.
    skipped: ids of images the dataset lists but that could not be read (left out, see data.protocol).
    The tensors may be views of a memory-mapped cache: treat them as read-only.
    """

    name: str
    images: torch.Tensor
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

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
        tensors = [t for t in (self.images, self.labels, self.masks) if t is not None]
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
        )
