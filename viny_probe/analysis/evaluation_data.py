"""The images every diagnostic is measured on, loaded the way training loads them.

Data protocol (the same as ``viny_probe.trainers.splits``): the dataset is loaded at the checkpoint's
``image_size`` (the embedded sets with their fixed size, data seed 0); ``fixed_split`` gives the fixed
test set and the non-test pool of ``split_seed``, keyed by image identity. Dataset, split seed and test
size default to the checkpoint's lineage (``resolve_evaluation``). The probe and kNN are fitted on the
first ``probe_images`` pool images (2000 x 64 = 128,000 patches by default) and scored on the first
``test_images`` test images; the probe never sees a test image. The label-free diagnostics are computed
on those same test images, so every checkpoint is measured on identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from viny_probe.analysis.lineage import evaluation_defaults, trained_clear
from viny_probe.analysis.options import POOL_PATCHES, EvalSet
from viny_probe.checks import check_positive_int
from viny_probe.data import dataset_spec, load_dataset
from viny_probe.data.base import ImageSet
from viny_probe.data.cache import DecodeOptions
from viny_probe.data.decode import RESIZE_FILTERS
from viny_probe.data.patch_labels import patch_majority_labels
from viny_probe.data.protocol import DEFAULT_TEST_SIZE, make_split
from viny_probe.data.spec import names_with_masks
from viny_probe.errors import VinyError
from viny_probe.trainers.splits import fixed_split, held_out_size

DEFAULT_DATASET = "toy-pets"
# Memory bounds, each the size of what ViNy needs at the defaults (so ViNy is never subsampled): the
# probe's fitting tokens hold at most 2,000 images x 64 patches x 128 channels = 16.4M values (66 MB
# float32). A wider model or a finer grid keeps a fixed, seeded subsample of each pool image's patches
# (2,000 images of 196 patches x 768 channels: 10 patches per image).
PROBE_MAX_VALUES = 2000 * 64 * 128
PATCH_SAMPLE_SEED = 0
LABEL_CHUNK_PIXELS = 1 << 23  # trimap pixels labelled at once (patch_labels)
DEFAULT_PROBE_IMAGES = POOL_PATCHES // 64  # ViNy's 8 x 8 grid; EvalSet.probe_images None resolves per grid
DEFAULT_TEST_IMAGES = EvalSet.test_images


def _no_masks(name: str) -> VinyError:
    return VinyError(
        f"dataset '{name}' has no masks, and the patch diagnostics need per-pixel masks (trimaps or a "
        f"declared value map) to label patches: use one of {names_with_masks()}"
    )


def check_dataset_name(dataset: str | None) -> str:
    """``dataset`` (default toy-pets) if it is registered with masks; VinyError otherwise (checked
    before anything is loaded; a folder is checked after loading)."""
    name = dataset or DEFAULT_DATASET
    if not dataset_spec(name).has_trimaps:
        raise _no_masks(name)
    return name


_KEYS = ("dataset", "split_seed", "test_size")


def training_filter(metas: Sequence[tuple[str, dict]], resize: str | None = None) -> tuple[str, str | None]:
    """``(filter, note)``: the filter evaluation images are resized with. ``resize`` given wins; else the
    one every viny checkpoint in ``metas`` trained with (its config's ``resize``, bilinear before the
    field existed), so a model is measured on images decoded as it saw them; bilinear for models from
    elsewhere (no config) and where checkpoints disagree (the note names them). ``note`` is None for
    bilinear chosen without a question."""
    if resize is not None:
        if resize not in RESIZE_FILTERS:
            raise VinyError(f"--resize must be one of {', '.join(RESIZE_FILTERS)}, got {resize!r}")
        return resize, f"images resized with {resize} (as given)"
    trained = {
        name: (meta.get("config") or {}).get("resize", "bilinear")
        for name, meta in metas
        if isinstance(meta.get("config"), dict)
    }
    filters = sorted(set(trained.values()))
    if len(filters) == 1:
        (chosen,) = filters
        if chosen == DecodeOptions.resize:
            return chosen, None
        return chosen, f"images resized with {chosen}, the filter the checkpoints trained with"
    if not filters:
        return DecodeOptions.resize, None
    names = "; ".join(f"{name}: {f}" for name, f in trained.items())
    return DecodeOptions.resize, (
        f"images resized with {DecodeOptions.resize}: the checkpoints trained with different filters "
        f"({names}); --resize chooses one"
    )


def resolve_evaluation(
    metas: Sequence[tuple[str, dict]],
    dataset: str | None = None,
    split_seed: int | None = None,
    test_size: int | None = None,
    resize: str | None = None,
) -> dict:
    """Dataset, split seed and test size to evaluate on: each given value wins; the rest are read off
    every checkpoint's lineage (``lineage.evaluation_defaults``: its own trimap stage's split). Of the
    splits the lineages point to, the one none of them trained on is chosen (``lineage.trained_clear``;
    among several, the one most lineages point to, then the smallest), so the choice does not depend on
    the order the checkpoints are given in. ``notes`` says which split, from whose lineage and why.
    ``resize``: the image filter, ``training_filter``'s choice (given, or the checkpoints')."""
    given = {k: v for k, v in zip(_KEYS, (dataset, split_seed, test_size), strict=True) if v is not None}
    points: dict[tuple, list[tuple[str, str]]] = {}
    for name, meta in metas:
        defaults = evaluation_defaults(meta)
        split = tuple(given.get(k, defaults[k]) for k in _KEYS)
        points.setdefault(split, []).append((name, defaults["from"]))
    splits = sorted(points, key=lambda s: (-len(points[s]), str(s[0]), s[1], s[2]))
    clear = [s for s in splits if all(trained_clear(meta, *s) for _, meta in metas)]
    split = (clear or splits)[0]
    chosen = dict(zip(_KEYS, split, strict=True))
    read = [k for k in _KEYS if k not in given]
    whose = "; ".join(f"{name}'s lineage ({why})" for name, why in points[split])
    notes = [
        f"evaluation split: {chosen['dataset']}, split seed {chosen['split_seed']}, test size "
        f"{chosen['test_size']}: {', '.join(read) or 'nothing'} from {whose}"
        + (f"; {', '.join(given)} as given" if given else "")
    ]
    if len(splits) > 1:
        if clear:
            why = "the split none of the checkpoints trained on" + (
                " (several were; the one most lineages point to)" if len(clear) > 1 else ""
            )
        else:
            why = "every split the lineages point to holds images one of them trained on"
        notes[0] += f"; {why}"
        for other in splits:
            if other == split:
                continue
            names = ", ".join(name for name, _ in points[other])
            trained = [name for name, meta in metas if not trained_clear(meta, *other)]
            notes.append(
                f"{names}'s lineage points to "
                + ", ".join(f"{k} {v}" for k, v in zip(_KEYS, other, strict=True) if chosen[k] != v)
                + " (not used"
                + (f": {', '.join(trained)} trained on its test images)" if trained else ")")
            )
    check_dataset_name(chosen["dataset"])
    check_positive_int(chosen["test_size"], "test_size")
    chosen["resize"], filter_note = training_filter(metas, resize)
    if filter_note is not None and dataset_spec(chosen["dataset"]).fixed_size is None:
        notes.append(filter_note)  # the embedded sets are generated at size: no filter to speak of
    return {**chosen, "notes": notes}


def _load_full(name: str, size: int, data_root, split_seed: int, resize: str) -> ImageSet:
    fixed = dataset_spec(name).fixed_size
    if fixed is not None:  # a fixed dataset, exactly as training loads it
        data = load_dataset(name, size=size, limit=fixed, seed=0)
    else:
        decoding = DecodeOptions(resize=resize)
        data = load_dataset(name, size=size, data_root=data_root, seed=split_seed, decoding=decoding)
    if data.masks is None:
        raise _no_masks(name)
    return data


def evaluation_split(
    name: str, size: int, data_root, test_size: int, split_seed: int, resize: str = DecodeOptions.resize
):
    """``(split, full, ids)`` of dataset ``name``: the split training uses (``data.protocol``, keyed by
    image identity). Where the ids are known without loading (embedded sets), the split is made on them
    and ``full`` is None, so a caller loads only the images it needs; else ``full`` is every image,
    resized with ``resize``."""
    spec = dataset_spec(name)
    if spec.ids is not None and spec.fixed_size is not None:
        ids = spec.ids(spec.fixed_size, 0)
        return make_split(ids, held_out_size(name, test_size, len(ids)), split_seed), None, ids
    full = _load_full(name, size, data_root, split_seed, resize)
    return fixed_split(name, full, test_size, split_seed), full, full.ids


def load_probe_data(
    dataset: str | None,
    size: int,
    data_root=None,
    split_seed: int = 0,
    test_size: int = DEFAULT_TEST_SIZE,
    probe_images: int = DEFAULT_PROBE_IMAGES,
    test_images: int = DEFAULT_TEST_IMAGES,
    resize: str = DecodeOptions.resize,
) -> tuple[ImageSet, ImageSet, dict]:
    """The probe's fitting images (first ``probe_images`` of the non-test pool) and the evaluation
    images (first ``test_images`` of the fixed test set of ``split_seed``), at ``size`` pixels (a real
    dataset's resized with ``resize``), with provenance. The split is the one training uses
    (``data.protocol``, keyed by image identity)."""
    name = check_dataset_name(dataset)
    probe_images = check_positive_int(probe_images, "probe_images")
    test_images = check_positive_int(test_images, "test_images")
    check_positive_int(test_size, "test_size")
    spec = dataset_spec(name)
    split, full, _ = evaluation_split(name, size, data_root, test_size, split_seed, resize)
    train_idx = split.pool[: min(probe_images, len(split.pool))]
    test_idx = split.test[: min(test_images, len(split.test))]
    if len(train_idx) < 2:
        raise VinyError(f"the probe needs at least 2 pool images to fit on; the pool holds {len(split.pool)}")
    if len(test_idx) < 2:
        raise VinyError(f"the diagnostics need at least 2 test images, got {len(test_idx)}")
    if full is None:
        wanted = torch.cat([train_idx, test_idx])
        both = spec.load(None, size=size, limit=spec.fixed_size, seed=0, indices=wanted.tolist())
        if both.masks is None:
            raise _no_masks(name)
        train_idx, test_idx = torch.arange(len(train_idx)), torch.arange(len(train_idx), len(wanted))
        full = both
    info = {
        "dataset": name,
        "image_size": size,
        "resize": resize if spec.fixed_size is None else None,
        "images_in_dataset": split.num_images,
        "split_seed": split_seed,
        "test_size": test_size,
        "probe_images": len(train_idx),
        "test_images": len(test_idx),
        "probe_patches": None,
        "test_patches": None,
        "skipped": list(full.skipped),
    }
    return full.subset(train_idx), full.subset(test_idx), info


def patch_labels(data: ImageSet, patch_size: int, keep: torch.Tensor | None = None) -> torch.Tensor:
    """``(N, P)`` class of each patch of ``data``'s images: the majority mask class of its pixels (of
    ``data.mask_classes``; ``UNLABELLED`` for a patch of ignored pixels only); with ``keep`` (``(N, k)`` patch indices, ``patch_subsample``) only those, ``(N, k)``."""
    # in chunks of images: counting a class over (N, P, patch pixels) sums in int64, 8 bytes a pixel
    step = max(1, LABEL_CHUNK_PIXELS // max(1, data.masks[0].numel()))
    labels = torch.cat(
        [
            patch_majority_labels(
                data.masks[s : s + step], patch_size, num_classes=data.mask_classes.num_classes
            )
            for s in range(0, len(data.masks), step)
        ]
    )
    return labels if keep is None else labels.gather(1, keep)


def patch_subsample(
    images: int, num_patches: int, dim: int, max_values: int | None = None, seed: int = PATCH_SAMPLE_SEED
) -> torch.Tensor | None:
    """The patches of each image a classifier is fitted on when all of them would hold more than
    ``max_values`` (default ``PROBE_MAX_VALUES``) token values: ``(images, k)`` sorted indices,
    k = max(1, max_values // (images * dim)), drawn per image without replacement from a generator
    seeded with ``seed`` (so every run, and every model with the same grid, keeps the same patches).
    None when all ``num_patches`` fit."""
    max_values = PROBE_MAX_VALUES if max_values is None else max_values
    k = max(1, max_values // (images * dim))
    if k >= num_patches:
        return None
    generator = torch.Generator().manual_seed(seed)
    order = torch.rand(images, num_patches, generator=generator).argsort(dim=1)
    return order[:, :k].sort(dim=1).values


def subsample_note(keep: torch.Tensor | None, num_patches: int, max_values: int | None = None) -> dict | None:
    """What ``patch_subsample`` did, for summary.json and the printed tables (None: nothing)."""
    if keep is None:
        return None
    max_values = PROBE_MAX_VALUES if max_values is None else max_values
    return {
        "patches_per_image": int(keep.shape[1]),
        "of_patches": num_patches,
        "seed": PATCH_SAMPLE_SEED,
        "max_values": max_values,
        "why": f"the fitting tokens are capped at {max_values:,} values (memory): a fixed seeded subsample "
        f"of {keep.shape[1]} of the {num_patches} patches of each pool image",
    }
