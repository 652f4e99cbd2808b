"""`viny demo`: the whole chain on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..progress import console
from .app import app


@app.command()
def demo(
    out: Path = typer.Option(Path("viny-demo"), "--out", "-o", help="folder for the three run folders"),
    model: str = typer.Option(
        "demo", help="demo (64 px, width 64, depth 6) | viny (the study's model) | tiny"
    ),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="cpu | cuda | auto"),
    precision: str = typer.Option("fp32", help="fp32 | bf16"),
    epochs_scale: float = typer.Option(1.0, help="multiply every stage's epochs (e.g. 0.2 for a smoke run)"),
    resume: bool = typer.Option(False, help="continue an interrupted demo in --out"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """SimMIM pre-training -> CLS intermediate stage -> segmentation fine-tuning -> evaluation."""
    from ..demo import run_demo
    from ..registry import REGIMES
    from ..tables import segmentation_table

    s = run_demo(out, model, seed, device, precision, epochs_scale, progress=not quiet, resume=resume)
    stages = Table(title=f"viny demo ({model} model, seed {seed}): {s['seconds']:.0f} s")
    for col in ["stage", "run folder", "final train loss", "held-out"]:
        stages.add_column(col)
    for regime, st in s["stages"].items():
        held = REGIMES.get(regime)().headline(st["results"])
        stages.add_row(
            regime,
            st["run_dir"],
            f"{st['last_epoch'].get('loss', float('nan')):.4f}",
            ", ".join(f"{k} {v:.3f}" for k, v in held.items()),
        )
    console.print(stages)
    console.print(segmentation_table(s["stages"]["segment"]["results"]))
    console.print(f"predictions beside ground truth: [bold]{s['predictions']}[/]")
