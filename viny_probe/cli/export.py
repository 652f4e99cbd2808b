"""`viny export CKPT -o DIR`: a thin wrapper around ``viny_probe.analysis.export``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..progress import console
from .app import app
from .options import (
    ExportFormat,
    check_output,
    interruptible,
    json_option,
    out_option,
    print_json,
    quiet_option,
    value,
)


@app.command("export")
@interruptible(
    "A folder without config.json is incomplete (the weights are written first, config.json last); "
    "run the command again."
)
def export_command(
    ckpt: Path = typer.Argument(
        ..., help="a viny checkpoint (run folder's final.pt) or the study authors' state_dict (.pth)"
    ),
    out: Path = out_option(..., "folder", "output folder: the weights file and config.json"),
    format: ExportFormat = typer.Option(
        "viny",
        "--format",
        help="viny = model.safetensors with viny's tensor names; authors = encoder.pth (torch.save) with "
        "the study code's names, the reverse of `viny import-checkpoint`",
    ),
    force: bool = typer.Option(
        False, "--force", help="write into a run folder or over files already there (refused otherwise)"
    ),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Write a checkpoint's encoder and a config.json into a folder, for use outside viny.

    config.json holds the model config, the viny version, the source checkpoint's sha256 and a summary
    of its lineage (every stage: regime, dataset, images, checkpoint digest). See docs/export.md.

    Examples: viny export runs/seg/final.pt -o seg-export;
    viny export runs/pre/final.pt --format authors -o pre-authors
    """
    check_output(out, "folder")
    from ..analysis.export import export_encoder

    result = export_encoder(ckpt, out, value(format), force=force)
    if as_json:
        print_json(result)
    else:
        cfg = result["model_config"]
        console.print(
            f"wrote [bold]{out}[/] ({result['format']} format): {', '.join(Path(f).name for f in result['files'])}; "
            f"ViNy {cfg['depth']} blocks, dim {cfg['dim']}, {cfg['heads']} heads, {result['parameters']:,} "
            f"parameters in {result['tensors']} tensors",
            highlight=False,
        )
    for line in result["warnings"]:
        console.print(f"[bold yellow]warning:[/] {line}", highlight=False)
