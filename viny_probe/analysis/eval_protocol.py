"""Which images the diagnostics are measured on: viny's protocol, or the study's code's (``--eval-protocol``).

* ``viny`` (the default everywhere, in every preset): the probe fitted on pool images and everything
  scored on the held-out test images of the split (``evaluation_data.load_probe_data``), each model
  fed its own input scaling; an evaluation set any lineage trained on is refused (``guard_evaluation``).
* ``authors``: the study's code (reference-notes, "main_intermediates.py, evaluation.py"): Table 2's
  variances and the patch probe on the first ``AUTHORS_IMAGES`` (2,048) images the model trained on
  (the first images of its training split, which is the start of the pool; a model that recorded no
  training images gets the first 2,048 pool images), raw [0, 1] inputs (no normalisation), each image
  flipped with p = 0.5 and contrast-jittered (0.3) once, with a fixed seed (the code froze its
  augmentation); the probe is fitted on those images and scored on the same images, so its accuracy is
  a training accuracy. The overlap refusal does not apply (measuring on training images is the point)
  and every output carries ``AUTHORS_LABEL``. The kNN diagnostics are switched off: their neighbour
  bank would hold the very patches they classify.

Departures from the code that stay: the images are viny's uint8 cache (the jittered pixels rounded back
to uint8), the code's probe was Adam for 5 epochs on all 3,680 trainval images where viny fits its
logistic regression on the same images it scores, and viny's images are resized with its own filter.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from viny_probe.analysis.evaluation_data import check_dataset_name, evaluation_split, load_probe_data
from viny_probe.analysis.lineage import guard_evaluation, lineage_stages, overlap
from viny_probe.data import dataset_spec
from viny_probe.data.augment import contrast_jitter, random_hflip, to_float
from viny_probe.data.base import ImageSet
from viny_probe.data.cache import DecodeOptions
from viny_probe.errors import VinyError

PROTOCOLS = ("viny", "authors")
AUTHORS_IMAGES = 2048
AUTHORS_AUGMENT_SEED = 0
AUTHORS_CONTRAST = 0.3
AUTHORS_LABEL = "authors' evaluation protocol: training images, not held out"
RAW_MEAN, RAW_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise VinyError(f"eval_protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def protocol_inputs(protocol: str, mean, std) -> tuple:
    """The mean / std the models are fed with: the given ones, else under ``authors`` raw [0, 1]
    pixels (the code's diagnostics normalised nothing), else each model's own (None)."""
    if check_protocol(protocol) == "authors":
        return (RAW_MEAN if mean is None else mean), (RAW_STD if std is None else std)
    return mean, std


def protocol_model(protocol: str, model):
    """``model`` (an ``options.ModelOptions``) with the mean / std of ``protocol_inputs``."""
    import dataclasses

    mean, std = protocol_inputs(protocol, model.mean, model.std)
    return dataclasses.replace(model, mean=mean, std=std)


def protocol_knn(protocol: str, knn: bool) -> bool:
    """kNN runs only under ``viny``: under ``authors`` its bank would hold the patches it classifies."""
    return knn and check_protocol(protocol) == "viny"


def trained_ids(metas: Sequence[tuple[str, dict]], dataset: str, split_seed: int) -> set[str] | None:
    """The ids of ``dataset`` that any lineage's stages on that dataset and split seed trained on; None
    when none recorded them."""
    found = None
    for _, meta in metas:
        for stage in lineage_stages(meta):
            if stage.dataset == dataset and stage.ids is not None and stage.split_seed in (None, split_seed):
                found = (found or set()) | set(stage.ids)
    return found


def authors_images(
    dataset: str,
    size: int,
    data_root,
    split_seed: int,
    test_size: int,
    metas: Sequence[tuple[str, dict]] = (),
    count: int | None = None,
    seed: int = AUTHORS_AUGMENT_SEED,
    resize: str = DecodeOptions.resize,
) -> tuple[ImageSet, dict]:
    """The code's diagnostic images: the first ``count`` (default ``AUTHORS_IMAGES``) pool images of
    ``split_seed`` that the lineages in ``metas`` trained on (all pool images when none recorded its
    training images), flipped (jointly with their masks) and contrast-jittered once from ``seed``; a real
    dataset's images resized with ``resize``."""
    name = check_dataset_name(dataset)
    count = AUTHORS_IMAGES if count is None else count
    spec = dataset_spec(name)
    split, full, ids = evaluation_split(name, size, data_root, test_size, split_seed, resize)
    trained = trained_ids(metas, name, split_seed)
    pool = split.pool.tolist()
    chosen = [i for i in pool if trained is None or ids[i] in trained][:count]
    if len(chosen) < 2:
        raise VinyError(
            f"the authors' evaluation protocol needs at least 2 training images of {name} (split seed "
            f"{split_seed}); the lineages trained on {len(chosen)} of its pool"
        )
    if full is None:
        data = spec.load(None, size=size, limit=spec.fixed_size, seed=0, indices=chosen)
    else:
        data = full.subset(chosen)
    if data.masks is None:
        raise VinyError(f"dataset '{name}' has no masks")
    gen = torch.Generator().manual_seed(seed)
    x, masks = random_hflip(gen, to_float(data.images), data.masks)
    x = contrast_jitter(x, AUTHORS_CONTRAST, gen)
    images = ImageSet(
        name=data.name,
        images=x.mul(255.0).round_().to(torch.uint8),
        labels=data.labels,
        masks=masks.contiguous(),
        class_names=list(data.class_names),
        ids=list(data.ids),
        mask_classes=data.mask_classes,
    )
    info = {
        "eval_protocol": "authors",
        "images_in_dataset": split.num_images,
        "protocol_label": AUTHORS_LABEL,
        "images_from": (
            f"the first {len(chosen)} pool images the lineages trained on"
            if trained is not None
            else f"the first {len(chosen)} pool images (no lineage recorded its training images)"
        ),
        "augmentation": f"flip p=0.5 + contrast jitter {AUTHORS_CONTRAST}, drawn once, seed {seed}",
        "inputs": "raw [0, 1] unless --mean / --std are given",
        "trained_on_evaluation_images": {n: overlap(meta, name, images.ids)[0] for n, meta in metas},
    }
    return images, info


def evaluation_sets(
    data, metas: Sequence[tuple[str, dict]], where: dict, size: int
) -> tuple[ImageSet, ImageSet, dict, list[str]]:
    """(images the probe is fitted on, images everything is scored on, data info, warnings) under
    ``data.protocol`` (``data``: an ``options.EvalSet``); ``where`` is ``resolve_evaluation``'s choice of
    dataset, split seed and test size. ``viny``: ``load_probe_data`` and the overlap guard, as before.
    ``authors``: ``authors_images`` twice (the same images), no guard, ``AUTHORS_LABEL`` as the first
    warning."""
    protocol, data_root = data.protocol, data.data_root
    probe_images, test_images, allow_overlap = data.probe_images, data.test_images, data.allow_overlap
    dataset, split_seed, test_size = where["dataset"], where["split_seed"], where["test_size"]
    if check_protocol(protocol) == "viny":
        fit, scored, info = load_probe_data(
            dataset, size, data_root, split_seed, test_size, probe_images, test_images, where["resize"]
        )
        info["eval_protocol"] = "viny"
        return fit, scored, info, guard_evaluation(metas, dataset, scored.ids, allow_overlap)
    images, extra = authors_images(
        dataset, size, data_root, split_seed, test_size, metas, resize=where["resize"]
    )
    info = {
        "dataset": dataset,
        "image_size": size,
        "split_seed": split_seed,
        "test_size": test_size,
        "probe_images": len(images),
        "test_images": len(images),
        "probe_patches": None,
        "test_patches": None,
        "skipped": [],
        **extra,
    }
    return images, images, info, [AUTHORS_LABEL]
