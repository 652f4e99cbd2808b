"""`viny bench`: training / evaluation / data-pipeline speed of every regime against a plain baseline."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..config import PRECISIONS
from ..errors import VinyError
from ..perf.baseline import BASELINE_REGIMES
from ..perf.options import BenchOptions, FleetOptions, SingleRunOptions
from ..progress import console
from .app import app
from .options import (
    INTERRUPTED_NOTHING_WRITTEN,
    RESULT_FILE_HELP,
    Model,
    batch_size_option,
    check_output,
    choices,
    dataset_option,
    device_option,
    interruptible,
    json_option,
    out_option,
    print_json,
    quiet_option,
    value,
    write_result,
)

BenchPrecision = choices("BenchPrecision", (*PRECISIONS, "both"))
Baseline = choices("Baseline", (*BASELINE_REGIMES, "none"))


def _si(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(x) >= scale:
            return f"{x / scale:.2f} {unit}"
    return f"{x:.0f} "


def _micro(result: dict) -> str:
    """' Steps in micro-batches of N images, K side by side (--streams) ...', per precision."""
    micro, streams = result.get("micro_batch") or {}, result.get("streams") or {}
    parts = [
        f"{p} {n} images" + (f", {streams[p]} side by side" if streams.get(p, 1) > 1 else "")
        for p, n in micro.items()
    ]
    return f" Micro-batches (--micro-batch, --streams): {'; '.join(parts)}." if parts else ""


def render(result: dict) -> list:
    """The rich tables `viny bench` prints for a run_bench result."""
    peaks = ", ".join(
        f"{p} {_si(v['peak_flops'])}FLOP/s (n={v['best_size']}; model-shaped {_si(v['model_shaped']['flops'])}FLOP/s)"
        for p, v in result["matmul_peak"].items()
    )
    t = Table(
        title=f"viny bench: {result['model']} model, batch {result['batch']}, {result['device']} "
        f"({result['device_name']}), {result['threads']} threads, torch {result['torch']}",
        caption=f"matmul peak measured in this run: {peaks}. {result['flop_convention']}.{_micro(result)}",
    )
    for col in [
        "regime",
        "prec",
        "train img/s",
        "eval img/s",
        "GFLOP/img (train)",
        "train FLOP/s",
        "% of peak",
        "epoch img/s",
        "epoch / steps",
    ]:
        t.add_column(col, justify="right" if col not in ("regime", "prec") else "left")
    for r in result["regimes"]:
        t.add_row(
            r["regime"],
            r["precision"],
            f"{r['train_img_per_s']:.1f}",
            f"{r['eval_img_per_s']:.1f}",
            f"{r['flops_train_per_img'] / 1e9:.3f}",
            f"{_si(r['train_flops'])}FLOP/s",
            f"{100 * r['train_frac_of_peak']:.1f}",
            f"{r['epoch_img_per_s']:.1f}" if "epoch_img_per_s" in r else "-",
            f"{r['epoch_vs_step']:.3f}" if "epoch_vs_step" in r else "-",
        )
    out = [t]
    extra = Table(title="data pipeline, plain baseline and ratios (one run)")
    extra.add_column("figure")
    extra.add_column("value", justify="right")
    extra.add_row("data pipeline alone (img/s)", f"{result['data_pipeline']['img_per_s']:.0f}")
    base = result.get("baseline")
    if base:
        extra.add_row(f"baseline {base['regime']} fp32 train step (img/s)", f"{base['train_img_per_s']:.1f}")
        extra.add_row(f"baseline {base['regime']} fp32 eval (img/s)", f"{base['eval_img_per_s']:.1f}")
        if "epoch_img_per_s" in base:
            extra.add_row("baseline JPEG DataLoader alone (img/s)", f"{base['dataloader_img_per_s']:.0f}")
            extra.add_row("baseline epoch, data included (img/s)", f"{base['epoch_img_per_s']:.1f}")
        for k, v in result.get("ratios", {}).items():
            extra.add_row(k.replace("_", " "), f"{v:.2f}x")
    plan = result["paper_plan"]
    proj = plan["projection"]
    extra.add_row("paper plan (image-steps)", f"{plan['total'] / 1e6:.1f} M")
    if proj["total_hours"] is not None:
        extra.add_row(f"paper plan projected on this {result['device']}", f"{proj['total_hours']:.1f} h")
    out.append(extra)
    return out


@app.command()
@interruptible(INTERRUPTED_NOTHING_WRITTEN)
def bench(
    device: str = device_option(),
    precision: BenchPrecision = typer.Option("both", help="both = each regime in fp32 and in bf16"),
    batch_size: int = batch_size_option(BenchOptions.batch, "images per step"),
    model: Model = typer.Option(BenchOptions.model, help="viny = the study's 4.8M model; demo; tiny"),
    regimes: str | None = typer.Option(
        None, help="comma-separated regimes (default: every registered regime)"
    ),
    steps: int = typer.Option(
        BenchOptions.steps, help="steps per timed run (median of --repeats runs, after --warmup)"
    ),
    repeats: int = typer.Option(BenchOptions.repeats, help="timed runs; the median is reported"),
    warmup: int = typer.Option(BenchOptions.warmup, help="untimed runs first"),
    epoch_batches: int = typer.Option(
        SingleRunOptions.epoch_batches, help="batches in the whole-epoch measurement (data included)"
    ),
    baseline: Baseline = typer.Option(
        SingleRunOptions.baseline, help="regime of the plain fp32 baseline (none: no baseline)"
    ),
    dataset: str = dataset_option(
        "an embedded dataset with masks, or random uint8 tensors",
        BenchOptions.dataset,
        masks=True,
        embedded=True,
        extra=("random",),
    ),
    threads: int = typer.Option(SingleRunOptions.threads, help="torch CPU threads (0: torch's default)"),
    workers: int = typer.Option(SingleRunOptions.workers, help="DataLoader workers of the plain baseline"),
    compile: bool = typer.Option(BenchOptions.compile, "--compile", help="torch.compile the encoder"),
    streams: int = typer.Option(
        SingleRunOptions.streams,
        help="micro-batches side by side on a CPU, as `viny train --streams` (0 = auto)",
    ),
    fleet: str | None = typer.Option(
        None,
        help="comma-separated fleet sizes, e.g. 1,8,32,64: aggregate img/s of K runs stepped as one fleet "
        "(`viny sweep --fleet`) instead of the single-run figures",
    ),
    cuda_graphs: bool = typer.Option(
        FleetOptions.graphs,
        "--cuda-graphs/--no-cuda-graphs",
        help="with --fleet: replay each fleet step from a CUDA graph (GPU)",
    ),
    fleet_path: str = typer.Option(
        ",".join(FleetOptions.paths),
        help="with --fleet: comma-separated fleet paths, stacked (the model's stacked forward) and/or "
        "vmap (the one step under torch.func.vmap), each timed in the same rounds beside a run alone",
    ),
    out: Path | None = out_option(None, "file", RESULT_FILE_HELP),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Training, evaluation and data-pipeline img/s, FLOPs and % of the measured matmul peak, against a
    plain eager fp32 baseline measured in the same run. See docs/performance.md."""
    from ..checks import check_range, max_workers

    check_output(out, "file")
    from ..perf import run_bench

    check_range(workers, "--workers", 0, max_workers())
    check_range(streams, "--streams", 0, None)
    precision, baseline = value(precision), value(baseline)
    log = (lambda _m: None) if (as_json or quiet) else (lambda m: console.print(f"[dim]bench: {m}[/]"))
    options = BenchOptions(
        device=device,
        precisions=PRECISIONS if precision == "both" else (precision,),
        batch=batch_size,
        model=value(model),
        regimes=None if regimes is None else tuple(r.strip() for r in regimes.split(",") if r.strip()),
        steps=steps,
        warmup=warmup,
        repeats=repeats,
        compile=compile,
        dataset=dataset,
    )
    if fleet is not None:
        paths = tuple(p.strip() for p in fleet_path.split(",") if p.strip())
        _fleet_bench(
            FleetOptions(parse_sizes(fleet), graphs=cuda_graphs, paths=paths), options, out, as_json, log
        )
        return
    single = SingleRunOptions(
        baseline=None if baseline == "none" else baseline,
        epoch_batches=epoch_batches,
        threads=threads,
        workers=workers,
        streams=streams,
    )
    result = run_bench(options, single, log=log)
    write_result(out, result)
    if as_json:
        print_json(result)
        return
    for table in render(result):
        console.print(table)


def _fleet_bench(fleet: FleetOptions, options: BenchOptions, out, as_json: bool, log) -> None:
    """`viny bench --fleet`: ``run_fleet_bench`` with ``fleet`` and ``options``; an emulated bf16 is
    left out."""
    import dataclasses

    from ..perf.bench import _native_precisions
    from ..perf.fleet import run_fleet_bench
    from ..trainers.loop import resolve_device

    precisions, skipped = _native_precisions(resolve_device(options.device), options.precisions, log)
    options = dataclasses.replace(options, precisions=precisions)
    result = run_fleet_bench(fleet, options, log=log)
    result["skipped_precisions"] = skipped
    if options.model == _paper_model():
        result["paper_plan"] = {p: _projection(result["fleets"], p) for p in options.precisions}
    write_result(out, result)
    if as_json:
        print_json(result)
        return
    console.print(render_fleets(result))
    for note in sorted({r["note"] for r in result["fleets"] if r["note"]}):
        console.print(f"note: {note}", highlight=False)
    for precision, plan in result.get("paper_plan", {}).items():
        if plan.get("total_hours") is None:
            console.print(
                f"paper plan ({precision}): not projected, no rates for {', '.join(plan['missing_regimes'])} "
                "(measure every regime: leave out --regimes)",
                highlight=False,
            )
        else:
            console.print(
                f"paper plan ({precision}) projected at these rates, in fleets of at most {plan['max_fleet']}: "
                f"{plan['total_hours']:.1f} h (one stage at a time at the fleet-of-1 rate: "
                f"{plan['alone_total_hours']:.1f} h; experiments/projection.py)",
                highlight=False,
            )


def _paper_model() -> str:
    from ..experiments.plans import get_plan

    return get_plan("paper").model


def _projection(rows: list[dict], precision: str) -> dict:
    """The `paper` plan at these fleet rates (experiments.projection), without the per-fleet list."""
    from ..experiments.projection import project_fleets

    result = project_fleets(
        rows, "paper", max_size=max(r["fleet"] for r in rows) if rows else 1, precision=precision
    )
    result.pop("fleets", None)
    return result


def parse_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise VinyError(f"--fleet {text!r}: give fleet sizes >= 1, comma-separated, e.g. 1,8,32,64")
    return sizes


def render_fleets(result: dict) -> Table:
    peaks = ", ".join(f"{p} {_si(v['peak_flops'])}FLOP/s" for p, v in result["matmul_peak"].items())
    t = Table(
        title=f"viny bench --fleet: {result['model']} model, batch {result['batch']} per member, "
        f"{result['device']} ({result['device_name']}), torch {result['torch']}",
        caption=f"matmul peak measured in this run: {peaks}."
        + (f" Failed: {result['failures']}" if result["failures"] else ""),
    )
    for col in [
        "regime",
        "prec",
        "fleet",
        "path",
        "step ms",
        "aggregate img/s",
        "per member",
        "vs fleet of 1",
        "vs alone",
        "% of peak",
    ]:
        t.add_column(col, justify="left" if col in ("regime", "prec", "path") else "right")

    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}x"

    for a in result.get("alone", []):
        t.add_row(
            a["regime"], a["precision"], "-", "alone", f"{a['step_ms']:.1f}", f"{a['train_img_per_s']:.0f}"
        )
    for r in result["fleets"]:
        t.add_row(
            r["regime"],
            r["precision"],
            str(r["fleet"]),
            r["path"] + ("*" if r["note"] else ""),
            f"{r['step_ms']:.1f}",
            f"{r['train_img_per_s']:.0f}",
            f"{r['per_member_img_per_s']:.0f}",
            ratio(r["vs_fleet_of_1"]),
            ratio(r["vs_alone"]),
            f"{100 * r['frac_of_peak']:.1f}",
        )
    return t
