"""One image named on the command line: an image file, or ``DATASET:INDEX`` for an image of an embedded
dataset's fixed test split. Shared by ``viny similarity-map`` and ``viny reconstruct``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from viny_probe.data import load_dataset
from viny_probe.data.protocol import DEFAULT_TEST_SIZE, make_split
from viny_probe.errors import VinyError
from viny_probe.trainers import splits

EMBEDDED_IMAGE = re.compile(r"^(toy-[a-z]+):(\d+)$")


@dataclass
class NamedImage:
    """An image resized to the model's input: ``pixels`` (3, S, S) uint8, ``mask`` (S, S) trimap or None."""

    pixels: torch.Tensor
    mask: torch.Tensor | None
    source: str  # what to call it in titles and JSON
    stem: str  # for default file names
    original_hw: tuple[int, int]  # the image's size before resizing
    dataset: str | None = None  # an embedded test image: its dataset and id (for the overlap check)
    id: str | None = None


def embedded_image(
    name: str, index: int, size: int, split_seed: int = 0, test_size: int = DEFAULT_TEST_SIZE
) -> NamedImage:
    """Image ``index`` of the embedded dataset ``name``'s test split for ``split_seed`` / ``test_size``:
    the same images `viny probe` and `viny diagnose` score on (toy-pets holds ``test_size`` out, the
    other sets at most a fifth of their images, as training does; the split is keyed by image id)."""
    if name not in splits.EMBEDDED_SIZES:
        raise VinyError(
            f"'{name}:{index}': no embedded labelled dataset '{name}'; choose one of "
            f"{', '.join(splits.EMBEDDED_SIZES)}"
        )
    full = load_dataset(name, size=size, limit=splits.EMBEDDED_SIZES[name], seed=0)
    test = make_split(full.ids, splits.held_out_size(name, test_size, len(full)), split_seed).test
    if not 0 <= index < len(test):
        raise VinyError(
            f"'{name}:{index}': the {name} test split (split seed {split_seed}) holds {len(test)} images, "
            f"index 0..{len(test) - 1}"
        )
    i = int(test[index])
    masks = None if full.masks is None else full.masks[i]
    return NamedImage(
        full.images[i],
        masks,
        f"{name} test image {index} (dataset id {full.ids[i]})",
        f"{name}-{index}",
        (size, size),
        dataset=name,
        id=full.ids[i],
    )


def load_named_image(
    image: str | Path, size: int, split_seed: int = 0, test_size: int = DEFAULT_TEST_SIZE
) -> NamedImage:
    """``image``: a file of any mode and size (resized to ``size``, aspect ratio not kept; a file that is
    not an image raises ImageDecodeError, a VinyError naming it), or ``"toy-pets:17"`` = image 17 of the
    embedded toy-pets test split for ``split_seed`` / ``test_size`` (an existing file of that name wins)."""
    path = Path(image)
    match = EMBEDDED_IMAGE.match(str(image))
    if match and not path.is_file():
        return embedded_image(match[1], int(match[2]), size, split_seed, test_size)
    if not path.is_file():
        raise VinyError(
            f"image {str(image)!r} not found: give an image file, or DATASET:INDEX for an embedded test "
            f"image (e.g. toy-pets:0; embedded sets: {', '.join(splits.EMBEDDED_SIZES)})"
        )
    from PIL import Image

    from viny_probe.data.decode import load_rgb

    pixels = torch.from_numpy(load_rgb(path, size))  # ImageDecodeError for a non-image
    with Image.open(path) as opened:
        original_hw = (opened.height, opened.width)
    return NamedImage(pixels, None, str(path), path.stem, original_hw)
