"""The study's training plan (Table A1) in image-steps, and its duration at measured speeds."""

from __future__ import annotations

INTEL_TRAIN = 14_034  # Intel Image Classification seg_train
PRETRAIN_SIZES = (45_000, 100_000, 200_000)
FINETUNE_SIZES = (250, 500, 1000, 2000, 4000, 6000)


def paper_plan(pretrain_seeds: int = 3, finetune_conditions: int = 4, seeds: int = 3) -> dict:
    """Image-steps (images x epochs, summed over runs) of the study's grid from Table A1:
    pre-training 100 epochs x {45k, 100k, 200k} x ``pretrain_seeds``; intermediate 200 epochs x
    Intel seg_train x 3 pre-train sizes x ``seeds``; fine-tuning 100 epochs x {250..6000} x
    ``finetune_conditions`` x ``seeds``. Each stage is labelled with the regime it runs."""
    stages = {
        "simmim": 100 * sum(PRETRAIN_SIZES) * pretrain_seeds,
        "classify": 200 * INTEL_TRAIN * len(PRETRAIN_SIZES) * seeds,
        "segment": 100 * sum(FINETUNE_SIZES) * finetune_conditions * seeds,
    }
    return {
        "image_steps": stages,
        "total": sum(stages.values()),
        "assumptions": {
            "pretrain_seeds": pretrain_seeds,
            "finetune_conditions": finetune_conditions,
            "seeds": seeds,
            "intel_train": INTEL_TRAIN,
        },
    }


def project_plan(plan: dict, img_per_s: dict[str, float]) -> dict:
    """Seconds for ``plan`` at the measured training img/s of each stage's regime."""
    seconds = {r: steps / img_per_s[r] for r, steps in plan["image_steps"].items() if img_per_s.get(r)}
    total = sum(seconds.values()) if len(seconds) == len(plan["image_steps"]) else None
    return {
        "seconds": seconds,
        "total_seconds": total,
        "total_hours": None if total is None else total / 3600,
    }
