"""The report's example pictures: what the sweep's models do to fixed test images.

* Fig 2: SimMIM reconstructions by the pre-training stages, one column per pre-training size (seed 0,
  else the smallest seed run), every column given the same images and the same masks.
* Fig A1: segmentation predictions of every condition beside the ground truth, at one fine-tune size
  and seed, on the same test images.
* Fig A2: error maps (wrong pixels) of the classification-intermediate conditions beside the
  pre-trained-only one, on the test images the intermediate condition gets most wrong.

The images are the first ones of the segmentation dataset's fixed test split (the stages' split seed),
which no stage ever trains on. Each stage is read from its ``final.pt``; a missing or
unreadable checkpoint is named in the text and left out of the picture.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..config import TrainConfig
from ..data.base import ImageSet
from ..data.spec import has_trimaps
from ..errors import VinyError
from ..trainers import splits
from .blocks import Block, condition_label, figure, h, p, pre_label, table
from .kinds import kind_of, role_of

FIG2_IMAGES = 4
FIGA1_IMAGES = 3
FIGA2_IMAGES = 3
FIGA2_CANDIDATES = 16  # Fig A2 shows the worst of these for the classification-intermediate model


def stage_checkpoint(sweep_dir: Path, row: dict) -> Path:
    return Path(sweep_dir) / "stages" / row["stage"] / "final.pt"


def stage_config(row: dict) -> TrainConfig:
    """The resolved config a results row's own stage ran with."""
    return TrainConfig.from_dict(row["configs"][-1]["config"])


def fixed_test_images(cfg: TrainConfig, size: int, count: int) -> ImageSet:
    """The first ``count`` images of ``cfg.dataset``'s fixed test split for ``cfg.split_seed``, at
    ``size`` px."""
    test = splits.test_set(cfg, size)
    return test.subset(list(range(min(count, len(test)))))


def _shown_seed(rows: list[dict]) -> int:
    seeds = {int(r["seed"]) for r in rows}
    return 0 if 0 in seeds else min(seeds)


def _missing(row: dict, path: Path, label: str) -> str | None:
    return None if path.exists() else f"{label} (stage {row['stage']}): no final.pt in {path.parent}"


def _mean_std(values: list[float], spec: str = ".4f") -> str:
    if len(values) == 1:
        return f"{values[0]:{spec}} (n=1)"
    return f"{np.mean(values):{spec}} ± {np.std(values, ddof=1):{spec}} (n={len(values)})"


# ---------------------------------------------------------------------------------------------- Fig 2
def fig2_section(sweep_dir: Path, rows: list[dict], fig_dir: Path) -> list[Block]:
    """Fig 2 analogue, one figure per model of the sweep's pre-training stages."""
    blocks = [h(2, "Fig 2 analogue: SimMIM reconstructions")]
    pretrain = [r for r in rows if role_of(r["kind"]) == "pretrain"]
    if not pretrain:
        return blocks + [p("This sweep has no pre-training stage, so there are no reconstructions to show.")]
    by_model: dict[str, list[dict]] = defaultdict(list)
    for r in pretrain:
        by_model[r["model"]].append(r)
    for model, group in sorted(by_model.items()):
        tag = "" if len(by_model) == 1 else f"-{model}"
        blocks += _fig2_for_model(sweep_dir, rows, group, fig_dir / f"fig2{tag}.png", model)
    blocks += _held_out_table(pretrain)
    return blocks


def _fig2_for_model(
    sweep_dir: Path, rows: list[dict], group: list[dict], path: Path, model: str
) -> list[Block]:
    from ..analysis.plots import plot_reconstructions
    from ..analysis.reconstruct import load_simmim, reconstruct, reconstruction_data
    from ..trainers.simmim import fixed_half_masks

    seed = _shown_seed(group)
    stages: dict[int, dict] = {}
    for r in sorted(group, key=lambda r: (int(r["pretrain_size"]), r["stage"])):
        if int(r["seed"]) == seed:
            stages.setdefault(int(r["pretrain_size"]), r)
    sources = [r for r in rows if r["model"] == model and has_trimaps(r.get("dataset"))]
    if not sources:
        return [p(f"Model {model}: no segmentation stage in this sweep to take the fixed test images from.")]
    source = next((r for r in sources if int(r["seed"]) == seed), sources[0])
    notes, results, images = [], {}, None
    for size, row in stages.items():
        label, ckpt = pre_label(size), stage_checkpoint(sweep_dir, row)
        if (note := _missing(row, ckpt, label)) is not None:
            notes.append(note)
            continue
        try:
            encoder, head, _ = load_simmim(ckpt)
            if images is None:
                images = fixed_test_images(stage_config(source), encoder.cfg.image_size, FIG2_IMAGES)
                split_seed = stage_config(source).split_seed
            masks = fixed_half_masks(len(images), encoder.cfg.num_patches, seed=0)
            results[label] = reconstruct(encoder, head, images.images, masks)
        except VinyError as e:
            notes.append(f"{label} (stage {row['stage']}): {e}")
    blocks = []
    if results:
        first = next(iter(results.values()))
        names = [f"test image {k}" for k in range(len(images))]
        data = reconstruction_data(
            [f"{images.name} {n} (id {i})" for n, i in zip(names, images.ids, strict=True)],
            round(first.masks.shape[1] ** 0.5),
            0,
            results,
        )
        data["stages"] = {pre_label(s): r["stage"] for s, r in stages.items()}
        plot_reconstructions(
            first.inputs,
            first.masked_inputs,
            {label: r.reconstructions for label, r in results.items()},
            {label: r.masked_l1 for label, r in results.items()},
            path,
            row_labels=names,
            title=f"SimMIM reconstructions by pre-training size (model {model}, run seed {seed})",
            data=data,
        )
        blocks.append(
            figure(
                path,
                f"Fig 2 analogue (model {model}): the first {len(images)} test images of {images.name} "
                f"(segmentation test split, split seed {split_seed}), half of their patches masked (black, as the study draws them; the "
                f"same masks for every column, mask seed 0) and each pre-training stage's reconstruction (run "
                f"seed {seed}): "
                "its decoder's pixels at the masked patches, the input at the visible ones. Under each: the "
                "masked L1 on normalised pixels (the training loss). Numbers beside the PNG in "
                f"{path.with_suffix('.json').name}.",
            )
        )
    if notes:
        blocks.append(p(f"Left out of Fig 2 (model {model}): " + "; ".join(notes) + "."))
    return blocks


def _held_out_table(pretrain: list[dict]) -> list[Block]:
    by_size: dict[tuple, list[float]] = defaultdict(list)
    for r in pretrain:
        value = (r.get("results") or {}).get("test_reconstruction_l1")
        if value is not None:
            by_size[(r["model"], int(r["pretrain_size"]))].append(float(value))
    if not by_size:
        return []
    rows = [[model, size, _mean_std(v)] for (model, size), v in sorted(by_size.items())]
    return [
        table(
            ["model", "# Pre-train", "held-out masked L1"],
            rows,
            "SimMIM loss on held-out images at the end of pre-training (masked L1 on normalised pixels, fixed "
            "masks, no augmentation), mean ± sample std over seeds.",
        )
    ]


# --------------------------------------------------------------------------------------------- Fig A1
def _final_conditions(rows: list[dict]) -> tuple[dict[tuple, list[dict]], int, int]:
    """One setting's fine-tuning rows by condition (pre-train size, intermediate), the largest
    fine-tune size every condition ran and the run seed shown there (seed 0, else the smallest)."""
    seg = [r for r in rows if role_of(r["kind"]) == "final"]
    conditions: dict[tuple, list[dict]] = defaultdict(list)
    for r in seg:
        conditions[(int(r["pretrain_size"]), r["intermediate"] or "")].append(r)
    conditions = dict(sorted(conditions.items()))
    common = set.intersection(*({int(r["finetune_size"]) for r in c} for c in conditions.values()))
    size = max(common) if common else max(int(r["finetune_size"]) for r in seg)
    seed = _shown_seed([r for r in seg if int(r["finetune_size"]) == size])
    return conditions, size, seed


def _predict_conditions(sweep_dir: Path, conditions: dict, size: int, seed: int, count: int) -> tuple:
    """Each condition's prediction of the first ``count`` fixed test images after fine-tuning on
    ``size`` images with run seed ``seed``: (images, {label: (N, S, S)}, notes, split seed)."""
    from ..trainers.segment import predict_masks, segmenter_from_checkpoint

    notes, predictions, images, split_seed = [], {}, None, None
    for (pre, inter), cell in conditions.items():
        label = condition_label(pre, inter)
        row = next((r for r in cell if int(r["finetune_size"]) == size and int(r["seed"]) == seed), None)
        if row is None:
            notes.append(f"{label}: no fine-tuning on {size} images with seed {seed}")
            continue
        ckpt = stage_checkpoint(sweep_dir, row)
        if (note := _missing(row, ckpt, label)) is not None:
            notes.append(note)
            continue
        try:
            encoder, head = segmenter_from_checkpoint(ckpt)
            cfg = stage_config(row)
            if images is None:
                images = fixed_test_images(cfg, encoder.cfg.image_size, count)
                split_seed = cfg.split_seed
            predictions[label] = predict_masks(
                encoder,
                head,
                images.images,
                inputs=cfg.options.inputs,
                position_softmax=cfg.options.position_softmax,
            )
        except VinyError as e:
            notes.append(f"{label} (stage {row['stage']}): {e}")
    return images, predictions, notes, split_seed


def figA1_section(sweep_dir: Path, rows: list[dict], fig_dir: Path, tag: str) -> list[Block]:
    """Fig A1 analogue for one setting's fine-tuning rows: every condition's prediction of the same
    test images at the largest fine-tune size every condition ran (seed 0, else the smallest)."""
    from ..viz import save_prediction_comparison

    if not any(role_of(r["kind"]) == "final" for r in rows):
        return []
    conditions, size, seed = _final_conditions(rows)
    blocks = [h(3, "Fig A1 analogue: segmentation examples")]
    images, predictions, notes, split_seed = _predict_conditions(
        sweep_dir, conditions, size, seed, FIGA1_IMAGES
    )
    if predictions:
        path = fig_dir / f"figA1{tag}.png"
        save_prediction_comparison(
            images.images,
            images.masks,
            predictions,
            path,
            row_labels=[f"test image {k}" for k in range(len(images))],
            title=f"Segmentation after fine-tuning on {size} images (run seed {seed})",
            show_accuracy=True,
        )
        blocks.append(
            figure(
                path,
                f"Fig A1 analogue: the first {len(images)} test images of {images.name} (the fixed test split, "
                f"split seed {split_seed}), their ground-truth trimaps and each condition's "
                f"prediction after fine-tuning on {size} images (run seed {seed}); under each prediction its "
                "pixel accuracy on that image.",
            )
        )
    else:
        blocks.append(p("No fine-tuned checkpoint could be read, so there are no segmentation examples."))
    if notes:
        blocks.append(p("Left out of Fig A1: " + "; ".join(notes) + "."))
    return blocks


# --------------------------------------------------------------------------------------------- Fig A2
def _is_classification(intermediate: str) -> bool:
    kind = kind_of(intermediate) if intermediate else None
    return kind is not None and kind.regime == "classify"


def figA2_section(sweep_dir: Path, rows: list[dict], fig_dir: Path, tag: str) -> list[Block]:
    """Fig A2 analogue: where the segmentation goes wrong after a classification intermediate stage.
    At the largest pre-training size that has one, the pre-trained-only condition and each
    classification-intermediate condition, on the ``FIGA2_IMAGES`` of the first ``FIGA2_CANDIDATES``
    test images the first intermediate condition gets most wrong: input, truth, each prediction and
    its error map (wrong pixels red)."""
    from ..viz import error_map, save_error_maps

    if not any(role_of(r["kind"]) == "final" for r in rows):
        return []
    conditions, size, seed = _final_conditions(rows)
    cls = [(pre, inter) for pre, inter in conditions if _is_classification(inter)]
    if not cls:
        return []
    pre = max(p_ for p_, _ in cls)
    shown = {c: conditions[c] for c in [(pre, ""), *sorted(c for c in cls if c[0] == pre)] if c in conditions}
    blocks = [h(3, "Fig A2 analogue: segmentation errors after a classification intermediate stage")]
    images, predictions, notes, split_seed = _predict_conditions(
        sweep_dir, shown, size, seed, FIGA2_CANDIDATES
    )
    focus = next((condition_label(*c) for c in shown if c[1] and condition_label(*c) in predictions), None)
    if focus is None:
        blocks.append(
            p("No classification-intermediate checkpoint could be read, so there are no error maps.")
        )
    else:
        wrong = error_map(images.masks, predictions[focus]).float().mean(dim=(1, 2))
        order = sorted(range(len(images)), key=lambda k: (-float(wrong[k]), k))[:FIGA2_IMAGES]
        picked = images.subset(order)
        path = fig_dir / f"figA2{tag}.png"
        save_error_maps(
            picked.images,
            picked.masks,
            {label: pred[order] for label, pred in predictions.items()},
            path,
            row_labels=[f"test image {k}" for k in order],
            title=f"Segmentation errors after fine-tuning on {size} images (run seed {seed})",
            data={"test_indices": order, "ids": picked.ids, "chosen_by": focus, "candidates": len(images)},
        )
        blocks.append(
            figure(
                path,
                f"Fig A2 analogue: of the first {len(images)} test images of {images.name} (the fixed test "
                f"split, split seed {split_seed}), the {len(order)} that {focus} gets most wrong after "
                f"fine-tuning on {size} images (run seed {seed}), beside the pre-trained-only condition: "
                "input, ground truth (the Fig A1 grey scale), each prediction and its error map, wrong "
                "pixels in red, their share under it. Per-image shares in "
                f"{path.with_suffix('.json').name}.",
            )
        )
    if notes:
        blocks.append(p("Left out of Fig A2: " + "; ".join(notes) + "."))
    return blocks
