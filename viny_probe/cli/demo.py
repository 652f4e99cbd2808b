"""`viny demo`: the whole chain on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..progress import console
from .app import app
from .options import (
    PRECISION_HELP,
    SEED_HELP,
    Model,
    Precision,
    check_output,
    device_option,
    interruptible,
    json_option,
    out_option,
    print_json,
    quiet_option,
    value,
)


@app.command()
@interruptible(
    "Finished stages and epochs are saved in the output folder; continue with the same command and --resume."
)
def demo(
    out: Path = out_option(Path("viny-demo"), "folder", "output folder for the three run folders"),
    model: Model = typer.Option(
        "demo", help="demo = 64 px, width 64, depth 6; viny = the study's model; tiny"
    ),
    seed: int = typer.Option(0, help=SEED_HELP),
    device: str = device_option(),
    precision: Precision = typer.Option("auto", help=PRECISION_HELP),
    epochs_scale: float = typer.Option(1.0, help="multiply every stage's epochs (e.g. 0.2 for a smoke run)"),
    resume: bool = typer.Option(False, help="continue an interrupted demo in --out"),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
) -> None:
    """SimMIM pre-training -> CLS intermediate stage -> segmentation fine-tuning -> evaluation."""
    check_output(out, "folder")
    from ..demo import run_demo
    from ..registry import REGIMES
    from ..tables import segmentation_table

    model = value(model)
    s = run_demo(
        out,
        model,
        seed,
        device,
        value(precision),
        epochs_scale,
        progress=not (quiet or as_json),
        resume=resume,
    )
    if as_json:
        print_json(s)
        return
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
