"""The library behind ``viny probe``, ``viny similarity-map`` and ``viny diagnose``.

Every function here takes checkpoint paths (viny checkpoints or the study authors' state_dict, see
``embeddings.load_encoder``), loads the data the way training does, extracts patch tokens once per
checkpoint and image set (cached on disk by ``extract_patch_tokens``) and calls the pure diagnostics of
``viny_probe.analysis``. See docs/diagnostics.md for the formulas.

Data protocol (the same as ``viny_probe.trainers.splits``): the dataset is loaded at the checkpoint's
``image_size`` (the embedded sets with their fixed size, data seed 0); ``make_split(ids, test_size,
split_seed)`` gives the fixed test set and the non-test pool, keyed by image identity. Dataset, split
seed and test size default to the checkpoint's lineage, and an evaluation set the lineage trained on is
refused (``viny_probe.analysis.lineage``). The probe and kNN are fitted on the first
``probe_images`` pool images (2000 x 64 = 128,000 patches by default) and scored on the first
``test_images`` test images; the probe never sees a test image. The label-free diagnostics (variances,
effective rank, similarity curves and maps, CKA) are computed on those same test images, so every
checkpoint is measured on identical inputs.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from viny_probe.analysis.cka import cka_matrix
from viny_probe.analysis.distance import similarity_vs_distance_by_class
from viny_probe.analysis.embeddings import extract_patch_tokens, load_encoder
from viny_probe.analysis.images import load_images_for
from viny_probe.analysis.knn import knn_patch_accuracy
from viny_probe.analysis.lineage import evaluation_defaults, guard_evaluation
from viny_probe.analysis.plots import (
    plot_depth_curves,
    plot_reference_grid,
    plot_similarity_overlay,
    plot_similarity_vs_distance,
)
from viny_probe.analysis.probe import linear_patch_probe
from viny_probe.analysis.rank import effective_rank
from viny_probe.analysis.reference import (
    choose_reference_patches,
    parse_patch,
    pixel_to_patch,
    similarity_map,
)
from viny_probe.analysis.stamp import stamp_warnings
from viny_probe.analysis.variance import across_image_variance, within_image_variance
from viny_probe.checks import check_positive_int
from viny_probe.data import dataset_spec, load_dataset
from viny_probe.data.base import SEG_CLASSES, ImageSet
from viny_probe.data.patch_labels import patch_majority_labels
from viny_probe.data.protocol import DEFAULT_TEST_SIZE
from viny_probe.errors import VinyError
from viny_probe.model import ViNy
from viny_probe.trainers.splits import fixed_split

DEFAULT_DATASET = "toy-pets"
PROBE_SEED = 0  # the probe's and kNN's own randomness (validation split, bank); not the data split
# Datasets known to have no trimaps: refused before anything is loaded (a folder is checked after loading).
DEFAULT_PROBE_IMAGES = 2000
DEFAULT_TEST_IMAGES = 1000
# kNN: cost is (test patches) x (bank patches) x D, so both are capped (a random bank, the first test images).
KNN_K = 20
KNN_BANK_PATCHES = 16384
KNN_TEST_IMAGES = 500
# diagnose: the per-block probe is fitted on fewer pool images; CKA uses the first test images only.
DEPTH_PROBE_IMAGES = 250
DEPTH_PROBE_MAX_ITER = 300  # the per-block probe is a trend: capped lbfgs iterations
CKA_IMAGES = 250
FIG6_IMAGES = 2

PUBLISHED_TABLE2 = [  # reference-notes.md: within, across, probe %
    ("Pretrained (SimMIM)", 0.10, 0.02, 79.5),
    ("CLS-Intermediate (Intel)", 0.18, 0.11, 76.1),
    ("CLS-Intermediate (Pets)", 0.58, 0.29, 78.6),
    ("Spatial Intermediate", 0.32, 0.06, 93.3),
]

LayerArg = str | int | Sequence[int]


def _probe(*args, **kwargs):
    """``linear_patch_probe`` with BLAS/OpenMP pools at one thread: on a 2-core CPU after a torch pass,
    lbfgs's many small BLAS calls ran 2-5x slower with the pools at 2 threads (measured: the 128k-patch
    probe 16.8 s -> 9.2 s, a 16k-patch per-block fit 2-4 s -> 0.4-1 s)."""
    with threadpool_limits(limits=1):
        return linear_patch_probe(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- helpers
def jsonable(value: Any) -> Any:
    """Plain JSON types: tensors/arrays to lists, numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(data), indent=1, allow_nan=False) + "\n")


def parse_layers(layer: LayerArg, depth: int) -> str | list[int]:
    """``"final"`` | ``"all"`` | a block number | ``"3,6,12"`` | a list of ints -> what extraction takes.

    Checked against ``depth`` here, before any data is loaded."""
    valid = f"'final', 'all', a block number 1..{depth} or a comma-separated list of them"
    if isinstance(layer, str):
        text = layer.strip().lower()
        if text in ("final", "all"):
            return text
        try:
            blocks = [int(part) for part in text.replace(" ", "").split(",") if part]
        except ValueError:
            raise VinyError(f"--layer must be {valid}, got {layer!r}") from None
    elif isinstance(layer, int) and not isinstance(layer, bool):
        blocks = [layer]
    elif isinstance(layer, Sequence):
        blocks = list(layer)
    else:
        raise VinyError(f"--layer must be {valid}, got {layer!r}")
    if not blocks or any(isinstance(b, bool) or not isinstance(b, int) for b in blocks):
        raise VinyError(f"--layer must be {valid}, got {layer!r}")
    for b in blocks:
        if not 1 <= b <= depth:
            raise VinyError(
                f"layer {b} is out of range: this encoder has blocks 1..{depth} (or use 'final' / 'all')"
            )
    return list(dict.fromkeys(blocks))


def _check_dataset_name(dataset: str | None) -> str:
    name = dataset or DEFAULT_DATASET
    if not dataset_spec(name).has_trimaps:
        raise VinyError(
            f"dataset '{name}' has no trimaps, and the patch diagnostics need per-pixel trimaps to label "
            "patches (pet / background / boundary): use pets (with --data-root) or the embedded toy-pets"
        )
    return name


def resolve_evaluation(
    metas: Sequence[tuple[str, dict]],
    dataset: str | None = None,
    split_seed: int | None = None,
    test_size: int | None = None,
) -> dict:
    """Dataset, split seed and test size to evaluate on: each given value wins; the rest come from
    the first checkpoint's lineage (``lineage.evaluation_defaults``: its own trimap stage's split).
    ``notes`` says where each value came from and which other checkpoints' lineages point elsewhere."""
    defaults = evaluation_defaults(metas[0][1])
    chosen = {
        "dataset": dataset or defaults["dataset"],
        "split_seed": defaults["split_seed"] if split_seed is None else split_seed,
        "test_size": defaults["test_size"] if test_size is None else test_size,
    }
    given = [
        k
        for k, v in (("dataset", dataset), ("split_seed", split_seed), ("test_size", test_size))
        if v is not None
    ]
    notes = [
        f"{', '.join(k for k in chosen if k not in given) or 'nothing'} from {metas[0][0]}'s lineage ({defaults['from']})"
        + (f"; {', '.join(given)} as given" if given else "")
    ]
    for name, meta in metas[1:]:
        other = evaluation_defaults(meta)
        differs = [k for k in chosen if k not in given and other[k] != chosen[k]]
        if differs:
            notes.append(
                f"{name}'s lineage points to " + ", ".join(f"{k} {other[k]}" for k in differs) + " (not used)"
            )
    _check_dataset_name(chosen["dataset"])
    check_positive_int(chosen["test_size"], "test_size")
    return {**chosen, "notes": notes}


def _load_full(name: str, size: int, data_root, split_seed: int) -> ImageSet:
    fixed = dataset_spec(name).fixed_size
    if fixed is not None:  # a fixed dataset, exactly as training loads it
        data = load_dataset(name, size=size, limit=fixed, seed=0)
    else:
        data = load_dataset(name, size=size, data_root=data_root, seed=split_seed)
    if data.masks is None:
        raise VinyError(
            f"dataset '{name}' has no trimaps, and the patch diagnostics need per-pixel trimaps to label "
            "patches (pet / background / boundary): use pets (with --data-root) or the embedded toy-pets"
        )
    return data


def load_probe_data(
    dataset: str | None,
    size: int,
    data_root=None,
    split_seed: int = 0,
    test_size: int = DEFAULT_TEST_SIZE,
    probe_images: int = DEFAULT_PROBE_IMAGES,
    test_images: int = DEFAULT_TEST_IMAGES,
) -> tuple[ImageSet, ImageSet, dict]:
    """The probe's fitting images (first ``probe_images`` of the non-test pool) and the evaluation
    images (first ``test_images`` of the fixed test set of ``split_seed``), at ``size`` pixels, with
    provenance. The split is the one training uses (``data.protocol``, keyed by image identity)."""
    name = _check_dataset_name(dataset)
    probe_images = check_positive_int(probe_images, "probe_images")
    test_images = check_positive_int(test_images, "test_images")
    check_positive_int(test_size, "test_size")
    full = _load_full(name, size, data_root, split_seed)
    split = fixed_split(name, full, test_size, split_seed)
    train_idx = split.pool[: min(probe_images, len(split.pool))]
    test_idx = split.test[: min(test_images, len(split.test))]
    if len(train_idx) < 2:
        raise VinyError(f"the probe needs at least 2 pool images to fit on; the pool holds {len(split.pool)}")
    if len(test_idx) < 2:
        raise VinyError(f"the diagnostics need at least 2 test images, got {len(test_idx)}")
    info = {
        "dataset": name,
        "image_size": size,
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


def _labels(data: ImageSet, patch_size: int) -> torch.Tensor:
    return patch_majority_labels(data.masks, patch_size, num_classes=len(SEG_CLASSES))


def _named(per_class: Sequence[float]) -> dict[str, float]:
    return {name: value for name, value in zip(SEG_CLASSES, per_class, strict=False)}


def final_layer_metrics(
    train_tokens: torch.Tensor,
    train_labels: torch.Tensor,
    test_tokens: torch.Tensor,
    test_labels: torch.Tensor,
    knn: bool = True,
    seed: int = 0,
) -> dict:
    """Table 2 numbers of one embedding set: variances + ratio and effective rank on the test tokens,
    the linear probe (fit on train, C chosen on held-out train images, scored on test) and kNN."""
    within = within_image_variance(test_tokens)
    across = across_image_variance(test_tokens)
    probe = _probe(train_tokens, train_labels, test_tokens, test_labels, seed=seed, num_classes=3)
    out = {
        "within_image_variance": within,
        "across_image_variance": across,
        "within_across_ratio": within / across if across > 0 else float("inf"),
        "effective_rank": effective_rank(test_tokens),
        "probe": {**probe.to_dict(), "per_class_accuracy": _named(probe.per_class_accuracy)},
        "knn": None,
    }
    if knn:
        result = knn_patch_accuracy(
            train_tokens,
            train_labels,
            test_tokens[:KNN_TEST_IMAGES],
            test_labels[:KNN_TEST_IMAGES],
            k=KNN_K,
            num_classes=3,
            max_train_patches=KNN_BANK_PATCHES,
            seed=seed,
        )
        out["knn"] = {**result.to_dict(), "per_class_accuracy": _named(result.per_class_accuracy)}
    return out


def _layer_label(label: str | int) -> str:
    return "final" if label == "final" else f"block {label}"


# -------------------------------------------------------------------------------------------- probe
def probe_checkpoint(
    ckpt: str | Path,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    layer: LayerArg = "final",
    split_seed: int | None = None,
    test_size: int | None = None,
    probe_images: int = DEFAULT_PROBE_IMAGES,
    test_images: int = DEFAULT_TEST_IMAGES,
    knn: bool = True,
    progress: bool = True,
    use_cache: bool = True,
    allow_overlap: bool = False,
) -> dict:
    """Table 2 for one checkpoint, at one or several blocks.

    ``dataset``, ``split_seed`` and ``test_size`` default to the checkpoint's lineage (its own trimap
    stage's split, so it is scored on that stage's held-out test set); an evaluation set that shares
    images with any stage's training images is refused unless ``allow_overlap`` (then ``warnings``
    says so).

    Returns ``{"checkpoint", "regime", "model_config", "data": {...}, "layers": {name: metrics},
    "warnings": [...]}`` where the layer names are ``"final"`` or ``"block B"`` and ``metrics`` is
    ``final_layer_metrics``'s dict. Raises VinyError for an unreadable / foreign checkpoint, a layer
    out of range or a dataset without trimaps (all checked before the data is loaded, except a
    ``folder`` that turns out to have none).
    """
    encoder, meta = load_encoder(ckpt)
    layers = parse_layers(layer, encoder.cfg.depth)
    where = resolve_evaluation([(str(ckpt), meta)], dataset, split_seed, test_size)
    cfg = encoder.cfg
    train_set, test_set, info = load_probe_data(
        where["dataset"],
        cfg.image_size,
        data_root,
        where["split_seed"],
        where["test_size"],
        probe_images,
        test_images,
    )
    info["chosen"] = where["notes"]
    warnings = guard_evaluation([(str(ckpt), meta)], where["dataset"], test_set.ids, allow_overlap)
    extract = dict(progress=progress, use_cache=use_cache)
    tag = f"seed{where['split_seed']}-t{where['test_size']}"
    train_tokens = extract_patch_tokens(encoder, train_set, layers, split=f"pool-{tag}", **extract)
    test_tokens = extract_patch_tokens(encoder, test_set, layers, split=f"test-{tag}", **extract)
    train_labels, test_labels = _labels(train_set, cfg.patch_size), _labels(test_set, cfg.patch_size)
    info["probe_patches"], info["test_patches"] = train_labels.numel(), test_labels.numel()
    results = {
        _layer_label(label): final_layer_metrics(
            train_tokens[label], train_labels, test_tokens[label], test_labels, knn, PROBE_SEED
        )
        for label in train_tokens
    }
    return {
        "checkpoint": str(ckpt),
        "regime": meta.get("regime"),
        "model_config": cfg.to_dict(),
        "data": info,
        "knn_settings": {"k": KNN_K, "bank_patches": KNN_BANK_PATCHES, "test_images": KNN_TEST_IMAGES}
        if knn
        else None,
        "layers": results,
        "warnings": warnings,
    }


# --------------------------------------------------------------------------------- similarity maps
def _parse_pixel_pair(text: str) -> tuple[int, int]:
    parts = str(text).replace(" ", "").split(",")
    try:
        y, x = (int(p) for p in parts)
    except ValueError:
        raise VinyError(f"pixel must be two integers 'Y,X', got {text!r}") from None
    return y, x


def _pixel_patch(pixel: str | tuple[int, int], original_hw: tuple[int, int], cfg) -> tuple[int, int]:
    """Pixel (y, x) of the ORIGINAL image -> patch of the resized model input."""
    y, x = _parse_pixel_pair(pixel) if isinstance(pixel, str) else (int(pixel[0]), int(pixel[1]))
    h, w = original_hw
    if not (0 <= y < h and 0 <= x < w):
        raise VinyError(
            f"pixel = ({y}, {x}) is outside the {h}x{w} image: y must be in 0..{h - 1}, x in 0..{w - 1}"
        )
    s = cfg.image_size
    return pixel_to_patch(min(s - 1, y * s // h), min(s - 1, x * s // w), cfg.patch_size, s)


def similarity_map_for_image(
    ckpt: str | Path,
    image: str | Path,
    patch: str | tuple[int, int] | None = None,
    pixel: str | tuple[int, int] | None = None,
    out: str | Path | None = None,
    layer: LayerArg = "final",
    split_seed: int | None = None,
    test_size: int | None = None,
    allow_overlap: bool = False,
    background: str = "study",
) -> dict:
    """Cosine-similarity maps of reference patches of one image, drawn next to the input.

    image: an image file of any mode/size (resized to the model's input, aspect ratio not kept), or
        ``"toy-pets:17"`` = image 17 of the embedded toy-pets test split (split seed and test size from
        the checkpoint's lineage unless given; any labelled ``toy-*`` set works; an existing file of
        that name wins). An embedded image the lineage trained on is refused unless ``allow_overlap``.
    patch: ``"ROW,COL"`` on the patch grid; pixel: ``"Y,X"`` in the original image's pixels. Neither:
        the study's three references when the image has a trimap (background patch (0, 0), or the
        most-background corner with ``background="most-background-corner"``; the most-foreground
        interior patch; the most-boundary patch), else the centre and the top-left corner.
    out: the PNG (default ``similarity-<image>.png``). One reference: ``out`` holds the input, the 8x8
        map and the upsampled overlay. Several: ``out`` is a grid (rows = references) and each reference
        also gets ``<out stem>-<reference>.png`` with its overlay. Every PNG has its JSON beside it.
    """
    if patch is not None and pixel is not None:
        raise VinyError("give either --patch ROW,COL or --pixel Y,X, not both")
    encoder, meta = load_encoder(ckpt)
    cfg = encoder.cfg
    layers = parse_layers(layer, cfg.depth)
    if isinstance(layers, str) and layers == "all" or isinstance(layers, list) and len(layers) != 1:
        raise VinyError("similarity-map draws one layer: give 'final' or one block number")
    (named,), warnings = load_images_for(
        str(ckpt), meta, [image], cfg.image_size, split_seed, test_size, allow_overlap
    )
    picture, mask, source, stem = named.pixels, named.mask, named.source, named.stem
    if patch is not None:
        refs = {
            "patch": parse_patch(patch, cfg.grid)
            if isinstance(patch, str)
            else parse_patch(f"{patch[0]},{patch[1]}", cfg.grid)
        }
    elif pixel is not None:
        refs = {"pixel": _pixel_patch(pixel, named.original_hw, cfg)}
    elif mask is not None:
        refs = choose_reference_patches(mask, cfg.patch_size, background=background)
    else:
        refs = choose_reference_patches(None, grid=cfg.grid)
    tokens = extract_patch_tokens(encoder, picture[None], layers, use_cache=False, progress=False)
    label, emb = next(iter(tokens.items()))
    maps = {name: similarity_map(emb[0], ref) for name, ref in refs.items()}

    out = Path(out) if out is not None else Path(f"similarity-{stem}.png")
    if out.suffix.lower() != ".png":
        raise VinyError(f"-o must name a .png file, got {str(out)!r}")
    where = _layer_label(label)
    files = []
    if len(refs) == 1:
        ((name, ref),) = refs.items()
        plot_similarity_overlay(
            picture, maps[name], ref, out, title=f"{source}: cosine to patch {ref} ({where})"
        )
        files.append(out)
    else:
        plot_reference_grid(
            picture, {Path(ckpt).parent.name or str(ckpt): maps}, refs, out, title=f"{source} ({where})"
        )
        files.append(out)
        for name, ref in refs.items():
            target = out.with_name(f"{out.stem}-{name}.png")
            plot_similarity_overlay(
                picture, maps[name], ref, target, title=f"{source}: {name} patch {ref} ({where})"
            )
            files.append(target)
    stamp_warnings([*files, *(f.with_suffix(".json") for f in files)], warnings)
    return {
        "checkpoint": str(ckpt),
        "image": source,
        "layer": where,
        "refs": {name: list(ref) for name, ref in refs.items()},
        "maps": {name: m.tolist() for name, m in maps.items()},
        "files": [str(f) for f in files],
        "warnings": warnings,
    }


# ----------------------------------------------------------------------------------------- diagnose
def default_names(ckpts: Sequence[str | Path]) -> list[str]:
    """``runs/sim/final.pt`` -> ``sim``; a clash falls back to the longer path, then a number."""
    names = []
    for c in ckpts:
        p = Path(c)
        name = p.parent.name if p.stem in ("final", "last", "best") or p.stem.startswith("epoch") else p.stem
        name = name or p.stem
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _fig6_images(masks: torch.Tensor, labels: torch.Tensor, count: int) -> list[int]:
    """Test images that show all three classes, the most balanced first (the smallest class's patch
    count, then the image with the lowest index)."""
    counts = torch.stack([(labels == c).sum(dim=1) for c in range(3)], dim=1)  # (N, 3)
    present = (counts > 0).sum(dim=1)
    score = present * 1000 + counts.min(dim=1).values
    order = sorted(range(len(labels)), key=lambda i: (-int(score[i]), i))
    return order[:count]


def _cka_pairs(n: int) -> list[tuple[int, int]]:
    if n == 1:
        return [(0, 0)]
    pairs = [(0, j) for j in range(1, n)]
    pairs += [(j - 1, j) for j in range(2, n)]
    return pairs


def _plot_cka_panels(matrices: list[dict], path: Path) -> dict:
    """One heatmap per checkpoint pair, side by side, shared 0..1 colour scale; JSON beside it."""
    import seaborn as sns
    from matplotlib.figure import Figure

    cols = min(3, len(matrices))
    rows = math.ceil(len(matrices) / cols)
    side = max(3.6, 0.32 * max(np.asarray(m["matrix"]).shape[0] for m in matrices) + 1.6)
    fig = Figure(figsize=(side * cols + 1.0, side * rows + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k, (ax, m) in enumerate(zip(axes, matrices, strict=False)):
        grid = np.asarray(m["matrix"], dtype=float)
        sns.heatmap(
            grid,
            ax=ax,
            vmin=0.0,
            vmax=1.0,
            cmap="magma",
            square=True,
            annot=max(grid.shape) <= 8,
            fmt=".2f",
            annot_kws={"size": 6},
            xticklabels=m["col_labels"],
            yticklabels=m["row_labels"],
            cbar=k == len(matrices) - 1,
            cbar_kws={"label": "linear CKA", "shrink": 0.8},
        )
        ax.set_title(f"{m['names'][0]} vs {m['names'][1]}", fontsize=10)
        ax.set_xlabel(f"{m['names'][1]}: block", fontsize=9)
        ax.set_ylabel(f"{m['names'][0]}: block", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(matrices) :]:
        ax.set_visible(False)
    fig.suptitle("Linear CKA between blocks (patch tokens of the same test images)")
    return _save_figure(fig, path, {"pairs": matrices})


def _save_figure(fig, path: Path, data: dict) -> dict:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    write_json(path.with_suffix(".json"), data)
    return data


def _plot_by_class(curves: dict[str, dict], path: Path) -> dict:
    """Fig 5 split by pair class: one colour per checkpoint, solid = same-class pairs, dashed = different."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    colours = [f"C{k % 10}" for k in range(len(curves))]
    for colour, c in zip(colours, curves.values(), strict=True):
        for kind, style in (("same", "-"), ("different", "--")):
            curve = c[kind]
            ax.plot(curve.distances, curve.mean, style, color=colour, marker="o", markersize=3)
            ax.fill_between(curve.distances, curve.low, curve.high, color=colour, alpha=0.15, linewidth=0)
    confidence = next(iter(curves.values()))["same"].confidence
    ax.set(
        title="Fig 5 split: same-class (solid) vs different-class (dashed) patch pairs",
        xlabel="Manhattan distance on the patch grid",
        ylabel=f"mean cosine similarity (band: {confidence:.0%} CI over images)",
    )
    ax.set_xticks(next(iter(curves.values()))["same"].distances)
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colour, marker="o", markersize=3) for colour in colours]
    handles += [Line2D([], [], color="grey", linestyle="-"), Line2D([], [], color="grey", linestyle="--")]
    fig.legend(
        handles,
        [*curves, "same class", "different class"],
        loc="outside right center",
        title="checkpoint / pairs",
    )
    data = {
        "title": "similarity vs distance by pair class",
        "curves": {
            name: {kind: c[kind].to_dict() for kind in ("same", "different")} for name, c in curves.items()
        },
    }
    return _save_figure(fig, path, data)


def _plot_reference_grid_stretched(pictures, maps, refs, path: Path, low: float) -> dict:
    """Fig 6 with the colour range low..1 (low = the smallest cosine in any map), one shared colourbar."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    low = min(low, 0.999)
    ref_names, ckpt_names = list(refs), list(maps)
    cols = 1 + len(ckpt_names)
    fig = Figure(figsize=(2.3 * cols + 0.8, 2.3 * len(ref_names) + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(len(ref_names), cols, squeeze=False))
    image = None
    for i, r in enumerate(ref_names):
        row, col = refs[r]
        picture = np.asarray(pictures[r]).transpose(1, 2, 0)
        g = np.asarray(maps[ckpt_names[0]][r]).shape[0]
        axes[i, 0].imshow(picture)
        axes[i, 0].set_ylabel(f"{r}\n({row}, {col})")
        for j, ax in enumerate(axes[i]):
            size = picture.shape[0] / g if j == 0 else 1.0
            if j:
                image = ax.imshow(maps[ckpt_names[j - 1]][r], vmin=low, vmax=1.0, cmap="viridis")
                if i == 0:
                    ax.set_title(ckpt_names[j - 1])
            ax.add_patch(
                Rectangle(
                    (col * size - 0.5, row * size - 0.5), size, size, fill=False, edgecolor="red", linewidth=2
                )
            )
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("input")
    fig.colorbar(image, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label="cosine similarity")
    fig.suptitle(
        f"Fig 6, colour range stretched to {low:.3f}..1 (the study's fixed -0.5..1: fig6_reference_patches.png)"
    )
    data = {
        "vmin": low,
        "vmax": 1.0,
        "refs": {r: list(refs[r]) for r in ref_names},
        "maps": {c: {r: maps[c][r] for r in ref_names} for c in ckpt_names},
    }
    return _save_figure(fig, path, data)


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec)


def table2_rows(results: dict[str, dict]) -> list[dict]:
    rows = []
    for name, m in results.items():
        rows.append(
            {
                "checkpoint": name,
                "within": m["within_image_variance"],
                "across": m["across_image_variance"],
                "ratio": m["within_across_ratio"],
                "probe_acc_pct": 100 * m["probe"]["test_accuracy"],
                "probe_train_acc_pct": 100 * m["probe"]["train_accuracy"],
                "balanced_acc_pct": 100 * m["probe"]["balanced_accuracy"],
                "knn_acc_pct": None if m["knn"] is None else 100 * m["knn"]["accuracy"],
                "effective_rank": m["effective_rank"],
                "chosen_C": m["probe"]["chosen_C"],
            }
        )
    return rows


def table2_markdown(rows: list[dict]) -> str:
    head = "| checkpoint | within | across | ratio | probe acc % | balanced acc % | kNN % | eff. rank |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['checkpoint']} | {_fmt(r['within'], '.3f')} | {_fmt(r['across'], '.3f')} | "
            f"{_fmt(r['ratio'], '.2f')} | {_fmt(r['probe_acc_pct'], '.1f')} | "
            f"{_fmt(r['balanced_acc_pct'], '.1f')} | {_fmt(r['knn_acc_pct'], '.1f')} | "
            f"{_fmt(r['effective_rank'], '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def _published_markdown() -> str:
    lines = ["| study checkpoint | within | across | ratio | probe acc % |", "|---|---:|---:|---:|---:|"]
    for name, w, a, p in PUBLISHED_TABLE2:
        lines.append(f"| {name} | {w:.2f} | {a:.2f} | {w / a:.1f} | {p:.1f} |")
    return "\n".join(lines) + "\n"


def diagnose(
    ckpts: Sequence[str | Path],
    names: Sequence[str] | None = None,
    out_dir: str | Path = "viny-diagnose",
    dataset: str | None = None,
    data_root: str | Path | None = None,
    split_seed: int | None = None,
    test_size: int | None = None,
    probe_images: int = DEFAULT_PROBE_IMAGES,
    test_images: int = DEFAULT_TEST_IMAGES,
    depth_probe_images: int = DEPTH_PROBE_IMAGES,
    cka_images: int = CKA_IMAGES,
    fig6_images: int = FIG6_IMAGES,
    knn: bool = True,
    progress: bool = True,
    use_cache: bool = True,
    allow_overlap: bool = False,
    background: str = "study",
) -> dict:
    """Several checkpoints side by side; writes into ``out_dir``:

    table2.md/.json, fig5_similarity_vs_distance.png/.json (all pairs), fig5_by_class.png/.json
    (same-/different-class pairs), fig6_reference_patches.png/.json, depth_curves.png/.json,
    cka.png/.json, summary.md, summary.json. Returns the summary dict.

    ``dataset``, ``split_seed`` and ``test_size`` default to the first checkpoint's lineage (see
    ``probe_checkpoint``); an evaluation set any checkpoint's lineage trained on is refused unless
    ``allow_overlap``, which writes the warning into every output file.

    Each checkpoint's test images are embedded once at every block (``layers="all"``; the last block is
    the final-LayerNorm output) and reused for everything; the pool images are embedded once at the final
    block (probe + kNN) and ``depth_probe_images`` of them at every block (the cheaper per-block probe).
    """
    if not ckpts:
        raise VinyError("give at least one checkpoint")
    names = list(names) if names else default_names(ckpts)
    if len(names) != len(ckpts):
        raise VinyError(
            f"--names gives {len(names)} names for {len(ckpts)} checkpoints; give one name per checkpoint"
        )
    if len(set(names)) != len(names):
        raise VinyError(f"--names must be distinct, got {names}")
    for value, what in (
        (depth_probe_images, "depth_probe_images"),
        (cka_images, "cka_images"),
        (fig6_images, "fig6_images"),
    ):
        check_positive_int(value, what)
    out = Path(out_dir)
    started = time.perf_counter()
    encoders: list[tuple[ViNy, dict]] = [load_encoder(c) for c in ckpts]  # every file checked before any work
    metas = [(name, meta) for name, (_, meta) in zip(names, encoders, strict=True)]
    where = resolve_evaluation(metas, dataset, split_seed, test_size)
    dataset, split_seed, test_size = where["dataset"], where["split_seed"], where["test_size"]
    warnings: list[str] = []
    tag = f"seed{split_seed}-t{test_size}"

    data: dict[int, tuple[ImageSet, ImageSet, dict]] = {}
    finals: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    per_block: dict[str, dict[str, list]] = {}
    cka_feats: list[list[torch.Tensor]] = []
    fig6_maps: dict[str, dict[str, np.ndarray]] = {}
    fig6_refs: dict[str, tuple[int, int]] = {}
    fig6_pictures: dict[str, torch.Tensor] = {}
    fig6_info: list[dict] = []
    checkpoints_info = []
    extract = dict(progress=progress, use_cache=use_cache)

    for i, ((encoder, meta), name, path) in enumerate(zip(encoders, names, ckpts, strict=True)):
        cfg = encoder.cfg
        if cfg.image_size not in data:
            data[cfg.image_size] = load_probe_data(
                dataset, cfg.image_size, data_root, split_seed, test_size, probe_images, test_images
            )
            data[cfg.image_size][2]["chosen"] = where["notes"]
            warnings += guard_evaluation(metas, dataset, data[cfg.image_size][1].ids, allow_overlap)
        train_set, test_set, info = data[cfg.image_size]
        train_labels, test_labels = _labels(train_set, cfg.patch_size), _labels(test_set, cfg.patch_size)
        info["probe_patches"], info["test_patches"] = train_labels.numel(), test_labels.numel()
        checkpoints_info.append(
            {
                "name": name,
                "path": str(path),
                "regime": meta.get("regime"),
                "model_config": cfg.to_dict(),
                "lineage": meta.get("lineage", []),
            }
        )

        test_all = extract_patch_tokens(encoder, test_set, "all", split=f"test-{tag}", **extract)
        final = test_all[cfg.depth]
        train_final = extract_patch_tokens(encoder, train_set, "final", split=f"pool-{tag}", **extract)[
            "final"
        ]
        finals[name] = final_layer_metrics(train_final, train_labels, final, test_labels, knn, PROBE_SEED)
        del train_final
        curves[name] = similarity_vs_distance_by_class(final, test_labels)

        # Fig 6: the same test images for every checkpoint (chosen on the first one's trimaps).
        if i == 0:
            for index in _fig6_images(test_set.masks, test_labels, min(fig6_images, len(test_set))):
                refs = choose_reference_patches(test_set.masks[index], cfg.patch_size, background=background)
                fig6_info.append(
                    {
                        "test_index": index,
                        "id": test_set.ids[index],
                        "refs": {k: list(v) for k, v in refs.items()},
                    }
                )
                for ref, rc in refs.items():
                    row = f"#{index} {ref.replace('_', ' ')}"
                    fig6_refs[row] = rc
                    fig6_pictures[row] = test_set.images[index]
        fig6_maps[name] = {}
        for entry in fig6_info:
            for ref, rc in entry["refs"].items():
                row = f"#{entry['test_index']} {ref.replace('_', ' ')}"
                fig6_maps[name][row] = similarity_map(final[entry["test_index"]], tuple(rc))

        # Per block: label-free scalars on the test tokens; a cheaper probe fitted on fewer pool images.
        n_depth = min(depth_probe_images, len(train_set))
        train_blocks = extract_patch_tokens(
            encoder, train_set.subset(list(range(n_depth))), "all", split=f"pool-{tag}", **extract
        )
        curve = {
            k: [None]
            for k in (
                "within_image_variance",
                "across_image_variance",
                "within_across_ratio",
                "effective_rank",
                "probe_accuracy",
            )
        }
        for b in range(1, cfg.depth + 1):
            within, across = within_image_variance(test_all[b]), across_image_variance(test_all[b])
            curve["within_image_variance"].append(within)
            curve["across_image_variance"].append(across)
            curve["within_across_ratio"].append(within / across if across > 0 else float("nan"))
            curve["effective_rank"].append(effective_rank(test_all[b]))
            # One C, the one the final-block probe chose: no sweep (the sweep was 80% of the run time).
            probe = _probe(
                train_blocks[b],
                train_labels[:n_depth],
                test_all[b],
                test_labels,
                seed=PROBE_SEED,
                num_classes=3,
                Cs=(finals[name]["probe"]["chosen_C"],),
                max_iter=DEPTH_PROBE_MAX_ITER,
            )
            curve["probe_accuracy"].append(probe.test_accuracy)
        per_block[name] = curve
        del train_blocks
        cka_feats.append([test_all[b][:cka_images].clone() for b in range(1, cfg.depth + 1)])
        del test_all, final

    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}

    rows = table2_rows(finals)
    (out / "table2.md").write_text(table2_markdown(rows))
    write_json(
        out / "table2.json",
        {
            "columns": list(rows[0]),
            "rows": rows,
            "published": [
                {"checkpoint": n, "within": w, "across": a, "probe_acc_pct": p}
                for n, w, a, p in PUBLISHED_TABLE2
            ],
        },
    )
    files["table2"] = "table2.md"

    plot_similarity_vs_distance(
        {n: c["all"] for n, c in curves.items()},
        out / "fig5_similarity_vs_distance.png",
        title="Fig 5: patch similarity vs Manhattan distance (all pairs)",
    )
    files["fig5"] = "fig5_similarity_vs_distance.png"
    _plot_by_class(curves, out / "fig5_by_class.png")
    files["fig5_by_class"] = "fig5_by_class.png"

    plot_reference_grid(
        fig6_pictures,
        fig6_maps,
        fig6_refs,
        out / "fig6_reference_patches.png",
        title="Fig 6: cosine similarity to the reference patch (red), colour range -0.5..1",
    )
    files["fig6"] = "fig6_reference_patches.png"
    # The study's fixed range hides everything when all cosines sit in a narrow band (e.g. 0.9..1):
    # the same maps again with the colour range stretched to the smallest value shown.
    low = min(float(np.min(m)) for maps in fig6_maps.values() for m in maps.values())
    _plot_reference_grid_stretched(fig6_pictures, fig6_maps, fig6_refs, out / "fig6_stretched.png", low)
    files["fig6_stretched"] = "fig6_stretched.png"

    plot_depth_curves(
        per_block,
        out / "depth_curves.png",
        title=f"Diagnostics per block, test images (probe per block fitted on {min(depth_probe_images, probe_images)} pool images)",
    )
    files["depth_curves"] = "depth_curves.png"

    matrices = []
    for a, b in _cka_pairs(len(ckpts)):
        if cka_feats[a][0].shape[:2] != cka_feats[b][0].shape[:2]:
            continue  # different patch grids: no row-aligned features to compare
        m = cka_matrix(cka_feats[a], cka_feats[b])
        matrices.append(
            {
                "names": [names[a], names[b]],
                "row_labels": [str(k) for k in range(1, len(cka_feats[a]) + 1)],
                "col_labels": [str(k) for k in range(1, len(cka_feats[b]) + 1)],
                "matrix": m,
                "diagonal": np.diag(m).tolist() if m.shape[0] == m.shape[1] else None,
            }
        )
    if matrices:
        _plot_cka_panels(matrices, out / "cka.png")
        files["cka"] = "cka.png"

    settings = {
        "knn": {"k": KNN_K, "bank_patches": KNN_BANK_PATCHES, "test_images": KNN_TEST_IMAGES}
        if knn
        else None,
        "depth_probe_images": min(depth_probe_images, probe_images),
        "cka_images": min(cka_images, test_images),
        "fig6_images": fig6_info,
    }
    summary = {
        "checkpoints": checkpoints_info,
        "data": {size: info for size, (_, _, info) in data.items()},
        "settings": settings,
        "table2": rows,
        "final_layer": finals,
        "similarity_vs_distance": {n: {k: c.to_dict() for k, c in v.items()} for n, v in curves.items()},
        "per_block": per_block,
        "cka": [{k: v for k, v in m.items() if k != "matrix"} | {"matrix": m["matrix"]} for m in matrices],
        "files": files,
        "warnings": warnings,
        "seconds": time.perf_counter() - started,
    }
    write_json(out / "summary.json", summary)
    (out / "summary.md").write_text(_summary_markdown(summary, rows))
    written = [out / "summary.json", out / "summary.md", out / "table2.json"]
    for name in files.values():
        written += [out / name, (out / name).with_suffix(".json")]
    stamp_warnings(written, warnings)
    summary["out_dir"] = str(out)
    return summary


def _summary_markdown(summary: dict, rows: list[dict]) -> str:
    ckpts = summary["checkpoints"]
    info = next(iter(summary["data"].values()))
    s = summary["settings"]
    lines = ["# viny diagnose", ""]
    lines += ["## Checkpoints", "", "| name | file | regime | lineage |", "|---|---|---|---|"]
    for c in ckpts:
        lineage = " -> ".join(str(step.get("regime", "?")) for step in c["lineage"]) or "-"
        lines.append(f"| {c['name']} | `{c['path']}` | {c['regime']} | {lineage} |")
    lines += [
        "",
        f"Data: **{info['dataset']}**, split seed {info['split_seed']}, test set {info['test_size']} images "
        f"({'; '.join(info.get('chosen', []))}). "
        f"Probe and kNN fitted on {info['probe_images']} pool images ({info['probe_patches']:,} patches), "
        f"everything scored / measured on {info['test_images']} test images ({info['test_patches']:,} patches); "
        "the probe never sees a test image.",
        "",
        "## Table 2 (final block, after the final LayerNorm)",
        "",
        table2_markdown(rows),
        "within / across: mean per-image channel variance over patches / variance of the per-image mean "
        "token across images; probe: logistic regression, C chosen on held-out pool images; "
        + (
            f"kNN: k = {s['knn']['k']}, cosine, bank of {s['knn']['bank_patches']:,} random pool patches, "
            f"queries from the first {s['knn']['test_images']} test images; "
            if s["knn"]
            else ""
        )
        + "eff. rank: RankMe. This table: [table2.md](table2.md), with every number in "
        "[table2.json](table2.json).",
        "",
        "Published values (the study's Table 2, full ViNy, Oxford-IIIT Pet) for comparison:",
        "",
        _published_markdown(),
        "## Figures",
        "",
        "- [fig5_similarity_vs_distance.png](fig5_similarity_vs_distance.png): Fig 5, mean cosine between "
        "patch tokens at each Manhattan distance, 95% band over images; "
        "[fig5_by_class.png](fig5_by_class.png): the same split into same-class / different-class pairs.",
        "- [fig6_reference_patches.png](fig6_reference_patches.png): Fig 6, rows = reference patches "
        "(background corner, most-foreground interior patch, most-boundary patch) of test images "
        + ", ".join(f"#{f['test_index']}" for f in s["fig6_images"])
        + ", columns = checkpoints, colour range -0.5..1 as in the study; "
        "[fig6_stretched.png](fig6_stretched.png): the same maps with the colour range stretched to the "
        "smallest cosine shown, for when every cosine sits in a narrow band."
        + (
            f" Reproduce one with `viny similarity-map CKPT toy-pets:INDEX --split-seed {info['split_seed']} "
            f"--test-size {info['test_size']}`."
            if info["dataset"] == "toy-pets"
            else ""
        ),
        f"- [depth_curves.png](depth_curves.png): within / across / ratio / effective rank per block "
        f"(test images) and probe accuracy per block (fitted on {s['depth_probe_images']} pool images with "
        "the C the final-block probe chose, at most 300 solver iterations, so its last point can differ a little from Table 2). Blocks before the last are the raw residual "
        "stream, the last is after the final LayerNorm: the variances jump there by construction.",
    ]
    if "cka" in summary["files"]:
        lines.append(
            f"- [cka.png](cka.png): linear CKA block by block on the first {s['cka_images']} test images' "
            "patch tokens: " + "; ".join(f"{m['names'][0]} vs {m['names'][1]}" for m in summary["cka"]) + "."
        )
        for m in summary["cka"]:
            if m["diagonal"] is not None and m["names"][0] != m["names"][1]:
                diag = ", ".join(_fmt(v, ".2f") for v in m["diagonal"])
                lines.append(f"  - {m['names'][0]} vs {m['names'][1]}, same block: {diag}")
    lines += ["", f"All numbers: [summary.json](summary.json). Took {summary['seconds']:.0f} s.", ""]
    return "\n".join(lines)
