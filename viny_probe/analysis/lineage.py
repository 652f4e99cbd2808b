"""What a checkpoint's encoder has trained on, and what that means for evaluating it.

Every viny checkpoint (format 2) records, for itself and for each stage of its lineage, which images
it trained on (``trained_on``: dataset, split seed, test size, and for datasets with trimaps the ids).
From that the diagnostics take their defaults (the dataset, split seed and test size of the lineage's
trimap stage, so they score on that stage's own held-out test set) and refuse an evaluation set that
shares images with any stage's training images. Checkpoints written before format 2 carry no such
record: their overlap cannot be checked, and the outputs say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from viny_probe.data.protocol import DEFAULT_SPLIT_SEED, DEFAULT_TEST_SIZE
from viny_probe.data.spec import has_trimaps
from viny_probe.errors import VinyError

EMBEDDED_PREFIX = "toy-"


@dataclass(frozen=True)
class TrainedOn:
    """One stage of a lineage: its regime and dataset, and (when recorded) its split and images."""

    regime: str
    dataset: str | None
    split_seed: int | None = None
    test_size: int | None = None
    ids: frozenset[str] | None = None
    recorded: bool = False  # False: a stage from before checkpoint format 2 (nothing recorded)


def _stage(entry: dict | None, regime: str, dataset: str | None) -> TrainedOn:
    if not entry:
        return TrainedOn(regime=regime, dataset=dataset)
    ids = entry.get("ids")
    return TrainedOn(
        regime=entry.get("regime", regime),
        dataset=entry.get("dataset", dataset),
        split_seed=entry.get("split_seed"),
        test_size=entry.get("test_size"),
        ids=None if ids is None else frozenset(ids),
        recorded=True,
    )


def lineage_stages(ckpt: dict) -> list[TrainedOn]:
    """The stages that trained this encoder, oldest first (the checkpoint's own stage last). The
    study authors' imported encoder counts as one stage trained on ImageNet."""
    out = []
    for entry in ckpt.get("lineage", []):
        if entry.get("regime") == "authors-import":
            out.append(TrainedOn("authors-import", "imagenet", recorded=True))
        else:
            out.append(_stage(entry.get("trained_on"), entry.get("regime", "?"), entry.get("dataset")))
    regime = ckpt.get("regime")
    if regime not in (None, "imported"):
        out.append(_stage(ckpt.get("trained_on"), regime, ckpt.get("config", {}).get("dataset")))
    return out


def evaluation_defaults(ckpt: dict) -> dict:
    """Dataset, split seed and test size to evaluate ``ckpt`` on, read off its lineage: those of its
    latest stage on a dataset with trimaps (its own held-out test set); otherwise pets for encoders
    that saw real data and the embedded toy-pets for the rest, with the default split."""
    stages = lineage_stages(ckpt)
    for stage in reversed(stages):
        if has_trimaps(stage.dataset):
            return {
                "dataset": stage.dataset,
                "split_seed": DEFAULT_SPLIT_SEED if stage.split_seed is None else stage.split_seed,
                "test_size": DEFAULT_TEST_SIZE if stage.test_size is None else stage.test_size,
                "from": f"the {stage.regime} stage on {stage.dataset}",
            }
    real = any(s.dataset and not s.dataset.startswith(EMBEDDED_PREFIX) for s in stages)
    return {
        "dataset": "pets" if real else "toy-pets",
        "split_seed": DEFAULT_SPLIT_SEED,
        "test_size": DEFAULT_TEST_SIZE,
        "from": "no stage of the lineage used a dataset with trimaps: the default split",
    }


def trained_clear(ckpt: dict, dataset: str, split_seed: int, test_size: int) -> bool:
    """Whether no stage of ``ckpt``'s lineage trained on the test set of ``dataset`` under
    ``split_seed`` and ``test_size``, read off the splits the stages recorded: a stage on that dataset
    trained only on the pool of its own split, which misses this test set when the split seed is the
    same and its test set is at least as big (the first ``test_size`` images of one order). A stage
    that recorded no split counts as clear here (``overlap`` says it could not be checked)."""
    for stage in lineage_stages(ckpt):
        if stage.dataset != dataset or stage.split_seed is None or stage.test_size is None:
            continue
        if stage.split_seed != split_seed or stage.test_size < test_size:
            return False
    return True


def _overlap_stages(ckpt: dict, dataset: str, eval_ids: Sequence[str]) -> list[tuple[TrainedOn, int]]:
    wanted = set(eval_ids)
    return [
        (stage, len(wanted & stage.ids))
        for stage in lineage_stages(ckpt)
        if stage.dataset == dataset and stage.ids is not None and wanted & stage.ids
    ]


def overlap(ckpt: dict, dataset: str, eval_ids: Sequence[str]) -> tuple[int, list[str]]:
    """How many of ``eval_ids`` (images of ``dataset``) any stage of ``ckpt``'s lineage trained on,
    and a note for each stage on that dataset whose training images were not recorded."""
    wanted = set(eval_ids)
    shared: set[str] = set()
    unchecked = []
    for stage in lineage_stages(ckpt):
        if stage.dataset != dataset:
            continue
        if stage.ids is None:
            unchecked.append(
                f"the {stage.regime} stage on {dataset} "
                + (
                    "predates checkpoint format 2 and records no training images"
                    if not stage.recorded
                    else "did not record its training images"
                )
            )
            continue
        shared |= wanted & stage.ids
    return len(shared), unchecked


def guard_evaluation(
    checkpoints: Sequence[tuple[str, dict]], dataset: str, eval_ids: Sequence[str], allow_overlap: bool
) -> list[str]:
    """Refuse (VinyError) an evaluation set that shares images with what any checkpoint's lineage
    trained on, naming how many; with ``allow_overlap`` return the warning lines instead (to be written
    into every output). Also returns a line for each stage whose overlap could not be checked."""
    warnings, refused = [], []
    for name, ckpt in checkpoints:
        count, unchecked = overlap(ckpt, dataset, eval_ids)
        warnings += [f"{name}: overlap not checked: {note}" for note in unchecked]
        if count:
            stages = "; ".join(
                f"its {stage.regime} stage (split seed {stage.split_seed}, test size {stage.test_size}) "
                f"trained on {shared}"
                for stage, shared in _overlap_stages(ckpt, dataset, eval_ids)
            )
            line = (
                f"{name}: {count} of the {len(eval_ids)} evaluation images of {dataset} are images its "
                f"lineage trained on ({stages})"
            )
            (warnings if allow_overlap else refused).append(line)
    if refused:
        raise VinyError(
            "refused: the evaluation set overlaps training images, so the scores would be measured on "
            "images the encoder was trained on:\n  "
            + "\n  ".join(refused)
            + "\nEvaluate on a split none of them trained on (without --split-seed / --test-size one is "
            "chosen from all the checkpoints' lineages where there is one), evaluate those checkpoints "
            "apart, or pass --allow-overlap to proceed with a warning written into every output."
        )
    return warnings
