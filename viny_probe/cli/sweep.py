"""`viny sweep PLAN --out DIR` and `viny report DIR -o REPORT_DIR`: thin wrappers over viny_probe.experiments."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..errors import VinyError
from ..progress import console
from .app import app


def _plan(plan: str, plan_file: Path | None, **options):
    from ..experiments.plans import get_plan, load_plan_file, parse_sizes, with_options

    seeds = options.pop("seeds")
    if seeds is not None:
        seeds = int(seeds) if seeds.isdigit() else [int(s) for s in seeds.split(",") if s]
    options["seeds"] = seeds
    options["pretrain_sizes"] = parse_sizes(options.pop("pretrain_sizes"), "--pretrain-sizes")
    options["finetune_sizes"] = parse_sizes(options.pop("finetune_sizes"), "--finetune-sizes")
    if plan_file is not None:
        return load_plan_file(plan_file, **options)
    return with_options(get_plan(plan), **options)


@app.command()
def sweep(
    plan: str = typer.Argument("mini", help="baseline | pretrain | intermediate | geometry | paper | mini"),
    out: Path = typer.Option(..., "--out", "-o", help="sweep folder (shared by every shard)"),
    preset: str | None = typer.Option(
        None,
        help="paper = Table A1 | authors = the study's code where it differs | quick = short CPU schedule",
    ),
    seeds: str | None = typer.Option(
        None, help="run seeds: a count (0..N-1) or a list like 0,1,2 (init, order, masking, augmentation)"
    ),
    split_seed: int | None = typer.Option(
        None, help="the one data split every run seed uses (default 0, the study's fixed splits)"
    ),
    pretrain_sizes: str | None = typer.Option(
        None, help="e.g. 0,500,3000 or 0,45k,100k (0 = no pre-training)"
    ),
    finetune_sizes: str | None = typer.Option(None, help="e.g. 250,500,1000"),
    model: str | None = typer.Option(None, help="viny | demo | tiny"),
    data: str | None = typer.Option(None, help="real (imagenet/intel/pets) | embedded (toy-*)"),
    data_root: str | None = typer.Option(
        None, envvar="VINY_DATA_ROOT", help="parent folder of the real datasets"
    ),
    epochs_scale: float | None = typer.Option(None, help="multiply every stage's epochs and milestones"),
    test_size: int | None = typer.Option(None, help="fixed segmentation test images (paper: 1000)"),
    plan_file: Path | None = typer.Option(None, help="a plan written as TOML (see docs/experiments.md)"),
    shard: str | None = typer.Option(None, help="I/N: run share I of N (1-based), e.g. for a SLURM array"),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="list cells, stages and estimated cost; train nothing"
    ),
    wait: bool = typer.Option(True, help="wait for parent stages owned by other shards (else return)"),
    poll: float = typer.Option(30.0, help="seconds between checks while waiting"),
    device: str = typer.Option("auto", help="cpu | cuda | auto"),
    precision: str = typer.Option("fp32", help="fp32 | bf16"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Run every unfinished cell of a plan (resumable; shardable over machines sharing --out)."""
    from ..experiments import sweep as sw

    p = _plan(
        plan,
        plan_file,
        preset=preset,
        seeds=seeds,
        split_seed=split_seed,
        pretrain_sizes=pretrain_sizes,
        finetune_sizes=finetune_sizes,
        model=model,
        data=data,
        data_root=data_root,
        epochs_scale=epochs_scale,
        test_size=test_size,
    )
    shard_t = sw.parse_shard(shard)
    if dry_run:
        d = sw.dry_run(p, out, shard_t)
        console.print(p.describe(), highlight=False)
        t = Table(title=f"{len(d.stages)} stages")
        for col in ["id", "kind", "dataset", "images", "epochs", "image-steps", "parent", "shard", "status"]:
            t.add_column(col)
        for s in d.stages:
            t.add_row(
                s["id"],
                s["kind"],
                s["dataset"],
                str(s["train_images"]),
                str(s["epochs"]),
                f"{s['image_steps']:,}",
                s["parent"],
                str(s["shard"]),
                s["status"],
            )
        console.print(t)
        c = Table(title=f"{len(d.cells)} cells")
        for col in ["group", "pre-train", "intermediate", "fine-tune / regime", "seed", "stage", "status"]:
            c.add_column(col)
        for r in d.cells:
            c.add_row(
                r["group"],
                str(r["pretrain_size"]),
                r["intermediate"],
                str(r["finetune_size"] or r["regime"]),
                str(r["seed"]),
                r["stage"],
                r["status"],
            )
        console.print(c)
        console.print(
            f"estimated cost: {d.total_image_steps:,} image-steps (epochs x training images, summed over "
            f"stages); still to run: {d.remaining_image_steps:,}",
            highlight=False,
        )
        if shard_t[1] > 1:
            console.print(
                "per shard: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(d.shard_image_steps.items()))
            )
        return
    summary = sw.run_sweep(
        p,
        out,
        shard_t,
        sw.Execution(device=device, precision=precision, progress=not quiet),
        wait=wait,
        poll_s=poll,
        log=lambda m: console.print(m, highlight=False),
    )
    if summary.failed:
        raise VinyError(
            f"{len(summary.failed)} stage(s) failed (see {out}/stages/<id>/error.txt): "
            + "; ".join(f"{k}: {v}" for k, v in summary.failed.items())
        )
    console.print(
        f"results: {out / 'results.csv'}  ({summary.cells_done}/{summary.cells_total} cells of this plan)"
    )


@app.command()
def report(
    sweep_dir: Path = typer.Argument(..., help="the sweep folder (--out of `viny sweep`)"),
    output: Path = typer.Option(None, "--output", "-o", help="report folder (default SWEEP_DIR/report)"),
) -> None:
    """Tables 1/A2/A3 analogues, Figs 2-4 and A1, saturating fits, Table 2: report.md and a self-contained report.html."""
    from ..experiments.report import write_report

    paths = write_report(sweep_dir, output or sweep_dir / "report")
    for problem in paths["problems"]:
        console.print(f"[yellow]warning:[/] {problem}", highlight=False)
    console.print(f"wrote {paths['markdown']} and {paths['html']}")
