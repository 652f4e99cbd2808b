"""One image named on the command line: an image file, or ``DATASET:INDEX`` for an image of an embedded
dataset's fixed test split. Shared by ``viny similarity-map`` and ``viny reconstruct``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from viny_probe.data import dataset_names, dataset_spec, load_dataset
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


def _fixed_embedded() -> list[str]:
    return [n for n in dataset_names(embedded=True) if dataset_spec(n).fixed_size is not None]


def embedded_image(
    name: str, index: int, size: int, split_seed: int = 0, test_size: int = DEFAULT_TEST_SIZE
) -> NamedImage:
    """Image ``index`` of the embedded dataset ``name``'s test split for ``split_seed`` / ``test_size``:
    the same images `viny probe` and `viny diagnose` score on (toy-pets holds ``test_size`` out, the
    other sets at most a fifth of their images, as training does; the split is keyed by image id)."""
    if name not in _fixed_embedded():
        raise VinyError(
            f"'{name}:{index}': no embedded labelled dataset '{name}'; choose one of "
            f"{', '.join(_fixed_embedded())}"
        )
    spec = dataset_spec(name)
    if spec.ids is not None:  # ids known without generating anything: only the one image is made
        ids, full = spec.ids(spec.fixed_size, 0), None
        test = make_split(ids, splits.held_out_size(name, test_size, len(ids)), split_seed).test
    else:
        full = load_dataset(name, size=size, limit=spec.fixed_size, seed=0)
        ids, test = full.ids, splits.fixed_split(name, full, test_size, split_seed).test
    if not 0 <= index < len(test):
        raise VinyError(
            f"'{name}:{index}': the {name} test split (split seed {split_seed}) holds {len(test)} images, "
            f"index 0..{len(test) - 1}"
        )
    i = int(test[index])
    if full is None:
        one = spec.load(None, size=size, limit=spec.fixed_size, seed=0, indices=[i])
    else:
        one = full.subset(torch.tensor([i]))
    return NamedImage(
        one.images[0],
        None if one.masks is None else one.masks[0],
        f"{name} test image {index} (dataset id {ids[i]})",
        f"{name}-{index}",
        (size, size),
        dataset=name,
        id=ids[i],
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
            f"image (e.g. toy-pets:0; embedded sets: {', '.join(_fixed_embedded())})"
        )
    from PIL import Image

    from viny_probe.data.decode import ImageDecodeError, load_rgb

    try:
        pixels = torch.from_numpy(load_rgb(path, size))
    except ImageDecodeError as err:  # one image asked for by name: no advice about dataset loaders
        raise VinyError(f"cannot read image file '{path}': {err.reason}. Give a JPEG or PNG image.") from None
    with Image.open(path) as opened:
        original_hw = (opened.height, opened.width)
    return NamedImage(pixels, None, str(path), path.stem, original_hw)


def load_images_for(
    ckpt_name: str,
    meta: dict,
    images: Sequence[str | Path],
    size: int,
    split_seed: int | None = None,
    test_size: int | None = None,
    allow_overlap: bool = False,
) -> tuple[list[NamedImage], list[str]]:
    """``load_named_image`` for each of ``images``, as a checkpoint's diagnostics see them: an embedded
    ``DATASET:INDEX`` indexes the test split of the checkpoint's lineage (``split_seed`` / ``test_size``
    win when given), and an embedded image the lineage trained on is refused unless ``allow_overlap``
    (then the returned warnings say so, to be written into every output)."""
    from viny_probe.analysis.lineage import evaluation_defaults, guard_evaluation

    lineage = evaluation_defaults(meta)
    split_seed = lineage["split_seed"] if split_seed is None else split_seed
    test_size = lineage["test_size"] if test_size is None else test_size
    named = [load_named_image(image, size, split_seed, test_size) for image in images]
    warnings: list[str] = []
    for dataset in dict.fromkeys(n.dataset for n in named if n.dataset is not None):
        ids = [n.id for n in named if n.dataset == dataset]
        warnings += guard_evaluation([(ckpt_name, meta)], dataset, ids, allow_overlap)
    return named, warnings
