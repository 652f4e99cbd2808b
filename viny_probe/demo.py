"""The whole chain on the embedded default, in minutes on a CPU: SimMIM -> CLS -> segmentation -> eval."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from .checkpoint import write_json
from .config import TrainConfig
from .trainers import train

# Epochs chosen so the chain finishes in well under 5 minutes on 2 CPU cores with the demo model.
DEMO_STAGES = {
    "simmim": dict(epochs=8, lr=1e-3, milestones=(6,), train_size=2000),
    "classify": dict(epochs=4, lr=8e-4, milestones=(3,), train_size=1000),
    "segment": dict(epochs=30, lr=2e-3, milestones=(21, 27, 29), train_size=1000, test_size=500),
}


def run_demo(
    out: str | Path = "viny-demo",
    model: str = "demo",
    seed: int = 0,
    device: str = "auto",
    precision: str = "fp32",
    epochs_scale: float = 1.0,
    progress: bool = True,
    resume: bool = False,
) -> dict:
    """Run the three stages into ``out/{1-simmim,2-classify,3-segment}`` and return a summary dict."""
    out = Path(out)
    base = TrainConfig(
        regime="simmim", preset="quick", model=model, seed=seed, device=device, precision=precision
    )
    summary: dict = {"model": model, "seed": seed, "stages": {}}
    init, t_start = None, time.perf_counter()
    for i, (regime, overrides) in enumerate(DEMO_STAGES.items(), start=1):
        overrides = dict(overrides)
        overrides["epochs"] = max(1, round(overrides["epochs"] * epochs_scale))
        overrides["milestones"] = tuple(m for m in overrides["milestones"] if m < overrides["epochs"])
        cfg = replace(base, regime=regime, init=init, **overrides)
        run_dir = out / f"{i}-{regime}"
        resume_this = resume and (run_dir / "config.json").exists()
        if resume_this and (run_dir / "final.pt").exists():
            from .checkpoint import load_checkpoint

            ckpt = load_checkpoint(run_dir / "final.pt")
            result_history, results, final = ckpt["history"], ckpt.get("results", {}), run_dir / "final.pt"
        else:
            t0 = time.perf_counter()
            r = train(cfg, run_dir, resume=resume_this, progress=progress)
            result_history, results, final = r.history, r.results, r.final_checkpoint
            summary["stages"][regime] = {"seconds": round(time.perf_counter() - t0, 1)}
        stage = summary["stages"].setdefault(regime, {})
        stage.update(
            {
                "run_dir": str(run_dir),
                "last_epoch": result_history[-1] if result_history else {},
                "results": results,
            }
        )
        init = str(final)
    summary["seconds"] = round(time.perf_counter() - t_start, 1)
    summary["predictions"] = str(out / "3-segment" / "predictions.png")
    write_json(out / "summary.json", summary)
    return summary
