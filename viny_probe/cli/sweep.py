"""`viny sweep PLAN --out DIR` and `viny report DIR -o REPORT_DIR`: thin wrappers over viny_probe.experiments."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.table import Table

from ..errors import VinyError
from ..experiments.plans import DATA_KINDS, PLANS
from ..progress import console
from .app import app
from .options import (
    INTERRUPTED_PARTIAL,
    PRECISION_HELP,
    PRESET_HELP,
    Model,
    Precision,
    Preset,
    check_output,
    choices,
    device_option,
    interruptible,
    json_option,
    out_option,
    print_json,
    quiet_option,
    split_seed_option,
    value,
)

PlanName = choices("PlanName", PLANS)
DataKind = choices("DataKind", DATA_KINDS)


def _plan(plan: str, plan_file: Path | None, **options):
    from ..experiments.plans import get_plan, load_plan_file, parse_sizes, with_options

    seeds = options.pop("seeds")
    if seeds is not None:
        try:
            seeds = (
                int(seeds) if seeds.isdigit() else [int(s) for s in seeds.replace(" ", "").split(",") if s]
            )
        except ValueError:
            raise VinyError(
                f"--seeds {seeds!r}: give a count of seeds (3 = 0,1,2) or a list like 0,1,2"
            ) from None
    options["seeds"] = seeds
    options["pretrain_sizes"] = parse_sizes(options.pop("pretrain_sizes"), "--pretrain-sizes")
    options["finetune_sizes"] = parse_sizes(options.pop("finetune_sizes"), "--finetune-sizes")
    if plan_file is not None:
        return load_plan_file(plan_file, **options)
    return with_options(get_plan(plan), **options)


@app.command()
@interruptible(
    "Finished stages and epochs are saved in the sweep folder; run the same command again to continue "
    "(a sweep resumes its stages by itself)."
)
def sweep(
    plan: PlanName = typer.Argument(
        "mini", help="a named plan (docs/experiments.md); ignored with --plan-file"
    ),
    out: Path = out_option(..., "folder", "sweep folder (shared by every shard)"),
    preset: Preset | None = typer.Option(None, help=PRESET_HELP + " (default: the plan's)"),
    seeds: str | None = typer.Option(
        None, help="run seeds: a count (0..N-1) or a list like 0,1,2 (init, order, masking, augmentation)"
    ),
    split_seed: int | None = split_seed_option(
        None, "the one split every run seed uses; default 0, the study's fixed splits"
    ),
    pretrain_sizes: str | None = typer.Option(
        None, help="e.g. 0,500,3000 or 0,45k,100k (0 = no pre-training)"
    ),
    finetune_sizes: str | None = typer.Option(None, help="e.g. 250,500,1000"),
    model: Model | None = typer.Option(None, help="default: the plan's"),
    data: DataKind | None = typer.Option(
        None, help="real = imagenet / intel / pets; embedded = their toy-* stand-ins; default: the plan's"
    ),
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
    device: str = device_option(),
    precision: Precision = typer.Option("auto", help=PRECISION_HELP),
    fleet: str = typer.Option(
        "1",
        help="train up to K ready stages of one kind at once, as one fleet (each as if alone; "
        "docs/performance.md); auto = as many as the GPU's free memory holds (1 on a CPU)",
    ),
    cuda_graphs: bool = typer.Option(
        True, "--cuda-graphs/--no-cuda-graphs", help="replay a fleet's step from a CUDA graph (GPU only)"
    ),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Run every unfinished cell of a plan (resumable; shardable over machines sharing --out)."""
    from ..checks import check_range

    if not dry_run:  # a dry run writes nothing: it may look at a sweep folder it cannot write
        check_output(out, "folder")
    from ..experiments import sweep as sw

    check_range(poll, "--poll", 0, low_open=True)
    if epochs_scale is not None:
        check_range(epochs_scale, "--epochs-scale", 0, low_open=True)
    p = _plan(
        value(plan),
        plan_file,
        preset=value(preset),
        seeds=seeds,
        split_seed=split_seed,
        pretrain_sizes=pretrain_sizes,
        finetune_sizes=finetune_sizes,
        model=value(model),
        data=value(data),
        data_root=data_root,
        epochs_scale=epochs_scale,
        test_size=test_size,
    )
    shard_t = sw.parse_shard(shard)
    if dry_run:
        d = sw.dry_run(p, out, shard_t)
        fleets = _dry_fleets(p, _fleet(fleet))
        if as_json:
            print_json({"plan": p.name, **dataclasses.asdict(d), **({"fleets": fleets} if fleets else {})})
            return
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
        if fleets:
            console.print(_fleet_table(fleets, fleet))
        return
    summary = sw.run_sweep(
        p,
        out,
        shard_t,
        sw.Execution(
            device=device,
            precision=value(precision),
            progress=not (quiet or as_json),
            fleet=_fleet(fleet),
            cuda_graphs=cuda_graphs,
        ),
        wait=wait,
        poll_s=poll,
        log=(lambda m: None) if (quiet or as_json) else (lambda m: console.print(m, highlight=False)),
    )
    if as_json:
        print_json(sweep_result(summary))
    if summary.failed:
        raise VinyError(
            f"{len(summary.failed)} stage(s) failed (see {out}/stages/<id>/error.txt): "
            + "; ".join(f"{k}: {v}" for k, v in summary.failed.items())
        )
    if not as_json:
        console.print(
            f"results: {out / 'results.csv'}  ({summary.cells_done}/{summary.cells_total} cells of this plan)"
        )


def _dry_fleets(plan, fleet: int | str) -> list[dict] | None:
    """With --fleet, the fleets the sweep would form (at most 64 members for auto: its GPU cap)."""
    if fleet == 1:
        return None
    from ..experiments.projection import fleets_of

    return fleets_of(plan, 64 if fleet == "auto" else fleet)


def _fleet_table(fleets: list[dict], fleet: str) -> Table:
    t = Table(
        title=f"{len(fleets)} fleets (--fleet {fleet}; stages of one wave that agree but for seed, split, "
        "parent and train size)"
    )
    numbers = ("wave", "members", "train images", "image-steps per member")
    for col in ["wave", "kind", "regime", *numbers[1:]]:
        t.add_column(col, justify="right" if col in numbers else "left")
    for f in fleets:
        steps = f["image_steps_per_member"]
        t.add_row(
            str(f["wave"]),
            f["kind"],
            f["regime"],
            str(f["members"]),
            ", ".join(f"{n:,}" for n in f["train_images"]),
            f"{min(steps):,}" + (f"..{max(steps):,}" if max(steps) != min(steps) else ""),
        )
    return t


def _fleet(text: str) -> int | str:
    if text == "auto":
        return "auto"
    if not text.isdigit() or int(text) < 1:
        raise VinyError(f"--fleet {text!r}: give a number of stages >= 1, or auto")
    return int(text)


def sweep_result(summary) -> dict:
    """What `viny sweep --json` prints for a run_sweep summary."""
    fields = ("ran", "already_done", "failed", "skipped", "cells_total", "cells_done")
    return {
        "plan": summary.plan.name,
        "out": summary.out,
        "shard": list(summary.shard),
        **{f: getattr(summary, f) for f in fields},
        "complete": summary.complete,
        "results_csv": Path(summary.out) / "results.csv",
    }


@app.command()
@interruptible(INTERRUPTED_PARTIAL)
def report(
    sweep_dir: Path = typer.Argument(..., help="the sweep folder (--out of `viny sweep`)"),
    out: Path | None = out_option(None, "folder", "report folder (default SWEEP_DIR/report)"),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Tables 1/A2/A3 analogues, Figs 2-4 and A1, saturating fits, Table 2: report.md and a self-contained report.html."""
    out = out or sweep_dir / "report"
    check_output(out, "folder")
    from ..experiments.report import write_report

    paths = write_report(sweep_dir, out)
    for problem in paths["problems"]:
        console.print(f"[yellow]warning:[/] {problem}", highlight=False)
    if as_json:
        print_json(paths)
    else:
        console.print(f"wrote {paths['markdown']} and {paths['html']}")
