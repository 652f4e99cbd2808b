"""`viny bench`: how fast ViNy trains here, as ratios measured in one run.

For each regime: training img/s (the training engine's own step, ``trainers.engine.train_step``, on a
device-resident batch), evaluation img/s (no-grad forward), the analytic FLOPs per image (``flops``),
the achieved FLOP/s and its fraction of this machine's matrix-multiply peak (``peak``, measured in the
same run), and a whole epoch with data included (``trainers.engine.train_one_epoch``). Besides: the
data pipeline alone (indexing the cached uint8 tensor + batched augmentation) and one plain eager fp32
baseline of the same model (``baseline``: explicit attention, per-sample JPEG decoding in a
DataLoader).

Timing: every figure is timed once per round, all figures in turn, for ``repeats`` rounds after
``warmup`` untimed ones, and the median per figure is reported (``timing.timed_rounds``).
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..data.augment import normalize, random_hflip, random_resized_crop, to_float
from ..data.base import ImageSet
from ..errors import VinyError
from ..model import ViNy, ViTConfig, count_parameters, model_config
from ..precision import emulated_bf16_note
from ..registry import REGIMES
from ..trainers.base import device_batch
from ..trainers.loop import resolve_device
from .baseline import baseline_measures
from .flops import FLOP_CONVENTION, analytic_flops, regime_named
from .harness import Trainer, TrainerSetup, bench_data, fixed_batch, make_trainer, run_epoch
from .options import BenchOptions, SingleRunOptions
from .peak import DTYPES, default_sizes, peak_figures, peak_measures
from .plan import paper_plan, project_plan
from .timing import timed_rounds


@dataclass(frozen=True)
class _Setting:
    """What every figure of one `viny bench` run shares."""

    device: torch.device
    cfg: ViTConfig
    batch: int
    steps: int
    epoch: bool
    epoch_images: int
    sizes: tuple[int, ...]  # square matmul sizes of the peak
    shape: tuple[int, int, int]  # the model's largest product, (tokens x dim) x (dim x 3 * inner)


def pipeline_batches(data: ImageSet, batch: int, device: torch.device, gen: torch.Generator):
    """The data pipeline alone, as the SimMIM / classify loss runs it: index the cached uint8 tensor,
    move to ``device``, to float, per-image RandomResizedCrop + flip, normalise."""
    order = torch.randperm(len(data), generator=gen)
    for start in range(0, len(data), batch):
        b = device_batch(data, order[start : start + batch], device)
        x = random_resized_crop(to_float(b["images"]), gen, scale=(0.67, 1.0))
        yield normalize(random_hflip(gen, x)[0])


@torch.no_grad()
def _eval_steps(trainer: Trainer, images: torch.Tensor, steps: int) -> None:
    trainer.encoder.eval(), trainer.head.eval()
    try:
        for _ in range(steps):
            trainer.evaluate(images)
    finally:
        trainer.encoder.train(), trainer.head.train()


def _check_arguments(precisions, regimes, batch: int, steps: int, repeats: int) -> None:
    for p in precisions:
        if p not in DTYPES:
            raise VinyError(f"unknown precision {p!r}; choose fp32, bf16 or both")
    for r in regimes:
        regime_named(r)
    if batch < 1 or steps < 1 or repeats < 1:
        raise VinyError("--batch, --steps and repeats must be >= 1")


def _measures(s: _Setting, precisions, data: ImageSet, trainers: dict) -> dict[tuple, Callable[[], object]]:
    """Every timed closure of the run but the baseline's, keyed by what it measures."""
    measures: dict[tuple, Callable[[], object]] = {}
    for p in precisions:
        for key, fn in peak_measures(s.device, DTYPES[p], s.sizes, s.shape).items():
            measures[("matmul", p, *key)] = fn
    gen = torch.Generator().manual_seed(0)
    measures[("pipeline",)] = lambda: [x.sum() for x in pipeline_batches(data, s.batch, s.device, gen)]
    for (r, p), tr in trainers.items():
        fixed = fixed_batch(data, s.batch, s.device)
        g = torch.Generator().manual_seed(0)
        measures[("train", r, p)] = lambda tr=tr, fixed=fixed, g=g: [
            tr.step(fixed, g) for _ in range(s.steps)
        ]
        measures[("eval", r, p)] = lambda tr=tr, fixed=fixed: _eval_steps(tr, fixed["images"], s.steps)
        if s.epoch:
            measures[("epoch", r, p)] = lambda tr=tr: run_epoch(tr, data, s.batch)
    return measures


def _regime_row(s: _Setting, r: str, p: str, tr: Trainer, med: dict, peak: float) -> dict:
    """One regime and precision's figures from the medians ``med`` (seconds per timed closure)."""
    flops = analytic_flops(s.cfg, r)
    row = {
        "regime": r,
        "precision": p,
        "flops_fwd_per_img": flops["forward"],
        "flops_train_per_img": flops["train"],
        "train_img_per_s": s.batch * s.steps / med[("train", r, p)],
        "eval_img_per_s": s.batch * s.steps / med[("eval", r, p)],
    }
    row["train_flops"] = row["train_img_per_s"] * flops["train"]
    row["eval_flops"] = row["eval_img_per_s"] * flops["forward"]
    row["train_frac_of_peak"] = row["train_flops"] / peak
    row["eval_frac_of_peak"] = row["eval_flops"] / peak
    if s.epoch:
        sec = med[("epoch", r, p)]
        row["epoch_img_per_s"] = s.epoch_images / sec
        row["epoch_seconds"] = sec
        # 1.0: the whole epoch costs what its steps cost on a resident batch (no data overhead at all)
        row["epoch_vs_step"] = sec / (s.epoch_images / row["train_img_per_s"])
    # the last fixed-batch step's loss (the timed epochs step the same model in between)
    row["final_loss"] = float(tr.losses[-1])
    return row


def _baseline_row(s: _Setting, regime: str, workers: int, med: dict) -> dict:
    b = {"regime": regime, "precision": "fp32", "dataloader_workers": workers}
    b["train_img_per_s"] = s.batch * s.steps / med[("baseline", "train")]
    b["eval_img_per_s"] = s.batch * s.steps / med[("baseline", "eval")]
    if s.epoch and ("baseline", "epoch") in med:  # the JPEG DataLoader: image-only regimes
        b["dataloader_img_per_s"] = s.epoch_images / med[("baseline", "dataloader")]
        b["epoch_img_per_s"] = s.epoch_images / med[("baseline", "epoch")]
        b["epoch_seconds"] = med[("baseline", "epoch")]
    return b


def _ratios(result: dict) -> dict:
    base = result["baseline"]
    out = {}
    for row in result["regimes"]:
        if row["regime"] != base["regime"]:
            continue
        p = row["precision"]
        out[f"train_step_{p}_vs_baseline"] = row["train_img_per_s"] / base["train_img_per_s"]
        out[f"eval_{p}_vs_baseline"] = row["eval_img_per_s"] / base["eval_img_per_s"]
        if "epoch_img_per_s" in row and "epoch_img_per_s" in base:
            out[f"epoch_{p}_vs_baseline"] = row["epoch_img_per_s"] / base["epoch_img_per_s"]
    rows = {(r["regime"], r["precision"]): r for r in result["regimes"]}
    for r in dict.fromkeys(row["regime"] for row in result["regimes"]):
        if (r, "fp32") in rows and (r, "bf16") in rows:
            out[f"{r}_bf16_vs_fp32"] = (
                rows[(r, "bf16")]["train_img_per_s"] / rows[(r, "fp32")]["train_img_per_s"]
            )
    # about what bf16 can gain where the products dominate: their own bf16 / fp32 rates in this run
    # (the model's largest product gained 1.94 to 2.22x on this CPU, docs/performance.md)
    peak = result.get("matmul_peak", {})
    if "fp32" in peak and "bf16" in peak:
        out["matmul_bf16_vs_fp32"] = peak["bf16"]["peak_flops"] / peak["fp32"]["peak_flops"]
        out["model_shaped_matmul_bf16_vs_fp32"] = (
            peak["bf16"]["model_shaped"]["flops"] / peak["fp32"]["model_shaped"]["flops"]
        )
    return out


def _plan_projection(rows: list[dict]) -> dict:
    """The paper plan at the best measured training img/s of each stage's regime."""
    best_rate: dict[str, float] = {}
    for row in rows:
        best_rate[row["regime"]] = max(best_rate.get(row["regime"], 0.0), row["train_img_per_s"])
    plan = paper_plan()
    return {
        **plan,
        "projection": project_plan(plan, best_rate),
        "projection_uses": "best measured training img/s of each stage's regime",
    }


def _native_precisions(dev, precisions, log) -> tuple[tuple[str, ...], dict[str, str]]:
    """The precisions this device runs natively; an emulated bf16 on a CPU is skipped (its figures
    would take hours and mean nothing) and said, in the log and in the result."""
    skipped = {}
    for p in precisions:
        note = emulated_bf16_note(dev, p)
        if note:
            skipped[p] = note
            log(f"skipped {p}: {note}")
    kept = tuple(p for p in precisions if p not in skipped)
    if not kept:
        raise VinyError(f"nothing to measure: {'; '.join(skipped.values())}")
    return kept, skipped


def run_bench(
    options: BenchOptions = BenchOptions(),
    single: SingleRunOptions = SingleRunOptions(),
    log: Callable[[str], None] | None = None,
) -> dict:
    """Everything `viny bench` reports, as one JSON-able dict (see docs/performance.md); ``options``
    (``perf.options``): what every figure shares (``regimes`` None: every registered one); ``single``:
    the baseline, the whole-epoch figure, threads and the optimiser variant.

    Every figure is timed once per round, all figures in turn, for ``repeats`` rounds (after
    ``warmup`` untimed rounds), and the median per figure is kept: on a shared machine the load then
    falls on all figures alike, and the ratios between them stay meaningful."""
    log = log or (lambda _msg: None)
    o, baseline = options, single.baseline
    batch, steps, epoch = o.batch, o.steps, single.epoch
    regimes = REGIMES.names() if o.regimes is None else tuple(o.regimes)
    _check_arguments(o.precisions, regimes, batch, steps, o.repeats)
    dev = resolve_device(o.device)
    precisions, skipped = _native_precisions(dev, o.precisions, log)
    if single.threads:
        torch.set_num_threads(single.threads)
    cfg = model_config(o.model)
    s = _Setting(
        device=dev,
        cfg=cfg,
        batch=batch,
        steps=steps,
        epoch=epoch,
        epoch_images=batch * max(1, single.epoch_batches),
        sizes=o.peak_sizes or default_sizes(dev),
        shape=(batch * cfg.num_patches, cfg.dim, 3 * cfg.heads * cfg.dim_head),
    )
    log(f"data: {s.epoch_images} images ({o.dataset})")
    host = bench_data(cfg, s.epoch_images, o.dataset)
    data = host.to(dev)
    trainers = {
        (r, p): make_trainer(
            r, cfg, data, dev, TrainerSetup(p, single.optimizer, o.compile, streams=single.streams)
        )
        for r in regimes
        for p in precisions
    }
    measures = _measures(s, precisions, data, trainers)
    jpegs = tempfile.TemporaryDirectory(prefix="viny-bench-jpeg-") if baseline and epoch else None
    workers = single.workers
    with jpegs or contextlib.nullcontext() as jpeg_dir:
        if baseline:
            for k, fn in baseline_measures(baseline, cfg, host, dev, batch, steps, jpeg_dir, workers).items():
                measures[("baseline", k)] = fn
        times = timed_rounds(measures, dev, o.warmup, o.repeats, log)
    med = {k: statistics.median(v) for k, v in times.items()}

    result: dict = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else (platform.processor() or "cpu"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": o.model,
        "model_config": cfg.to_dict(),
        "params": count_parameters(ViNy(cfg)),
        "batch": batch,
        "steps": steps,
        "warmup": o.warmup,
        "repeats": o.repeats,
        "compile": o.compile,
        "optimizer": single.optimizer,
        # each precision's micro-batch size and how many run side by side, as the training loop
        # resolves them (for the first regime timed)
        "streams": {p: trainers[regimes[0], p].resolved_streams(batch) for p in precisions},
        "micro_batch": {p: trainers[regimes[0], p].micro(batch) for p in precisions},
        "dataset": host.name,
        "epoch_images": s.epoch_images,
        "flop_convention": FLOP_CONVENTION,
        "matmul_peak": {
            p: peak_figures(
                {k[2:]: v for k, v in med.items() if k[:2] == ("matmul", p)}, dev, DTYPES[p], s.sizes, s.shape
            )
            for p in precisions
        },
        "data_pipeline": {
            "img_per_s": s.epoch_images / med[("pipeline",)],
            "what": "index cached uint8 + transfer + RandomResizedCrop + flip + normalize",
        },
        "spread": {"/".join(map(str, k)): [min(v), max(v)] for k, v in times.items()},
        "skipped_precisions": skipped,
    }
    result["regimes"] = [
        _regime_row(s, r, p, tr, med, result["matmul_peak"][p]["peak_flops"])
        for (r, p), tr in trainers.items()
    ]
    if baseline:
        result["baseline"] = _baseline_row(s, baseline, workers, med)
        result["ratios"] = _ratios(result)
    result["paper_plan"] = _plan_projection(result["regimes"])
    return result
