"""`viny bench`: how fast ViNy trains here, as ratios measured in one run.

For each regime: training img/s (forward + backward + AdamW step on a device-resident batch, the way
``trainers.loop.train`` runs it), evaluation img/s (no-grad forward), the analytic FLOPs per image, the
achieved FLOP/s and its fraction of this machine's matrix-multiply peak (measured in the same run),
and a whole epoch with data included. Besides: the data pipeline alone (indexing the cached uint8
tensor + batched augmentation) and one plain eager fp32 baseline of the same model
(``bench_baseline``: explicit attention, per-sample JPEG decoding in a DataLoader).

FLOP convention: one multiply-add = 2 FLOPs. Only matrix products are counted (patch embedding, qkv,
attention scores, attention-weighted sum, output projection, MLP, task head); LayerNorm, GELU, softmax,
residual adds and the optimizer are not (they are < 2 % of the products' FLOPs for ViNy, but not of
their time). A training step is counted as 3x the forward (backward = 2x forward), the usual rule.

Timing: warm-up steps first, then ``repeats`` timed runs of ``steps`` steps each; the median run is
reported (the machine may be shared). CUDA work is synchronised before every clock read.
"""

from __future__ import annotations

import contextlib
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .data.augment import normalize, random_hflip, random_resized_crop, to_float
from .data.base import ImageSet
from .errors import VinyError
from .model import ViNy, ViTConfig, count_parameters, model_config
from .trainers.loop import autocast, forward_backward, loss_check_interval, micro_batch_size

REGIMES = ("simmim", "classify", "spatial", "segment")
# Head width of each regime in the study: Intel's 6 scene classes, the 3 trimap classes.
DEFAULT_CLASSES = {"classify": 6, "spatial": 3, "segment": 3}
FLOP_CONVENTION = "1 multiply-add = 2 FLOPs; matrix products only; training = 3 x forward"


# --------------------------------------------------------------------------------------------------
# Analytic FLOPs
# --------------------------------------------------------------------------------------------------


def analytic_flops(cfg: ViTConfig | str, regime: str = "simmim", num_classes: int | None = None) -> dict:
    """Forward FLOPs per image of encoder + ``regime``'s head, counted from the config.

    Returns each term (patch_embed, qkv, attn_scores, attn_weighted_sum, proj, mlp: summed over all
    blocks; head), ``encoder`` and ``forward`` totals, and ``train`` = 3 x forward. See FLOP_CONVENTION.
    """
    cfg = model_config(cfg)
    if regime not in REGIMES:
        raise VinyError(f"unknown regime {regime!r}; choose one of {', '.join(REGIMES)}")
    # The study's token path: the CLS token runs through the blocks only when classification reads it.
    p, d = cfg.num_patches, cfg.dim
    t = p + int(regime == "classify" or cfg.cls_in_sequence)
    inner = cfg.heads * cfg.dim_head
    mac = {
        "patch_embed": p * cfg.patch_dim * d,
        "qkv": cfg.depth * t * d * 3 * inner,
        "attn_scores": cfg.depth * cfg.heads * t * t * cfg.dim_head,
        "attn_weighted_sum": cfg.depth * cfg.heads * t * t * cfg.dim_head,
        "proj": cfg.depth * t * inner * d,
        "mlp": cfg.depth * 2 * t * d * cfg.mlp_dim,
    }
    classes = num_classes if num_classes is not None else DEFAULT_CLASSES.get(regime)
    if regime == "simmim":
        mac["head"] = p * d * cfg.patch_dim  # decoder on every patch token (the loss uses the masked half)
    elif regime == "classify":
        mac["head"] = d * classes
    elif regime == "spatial":
        mac["head"] = p * d * classes
    else:  # segment: classes x patch x patch logits per patch token
        mac["head"] = p * d * classes * cfg.patch_size**2
    out = {k: 2 * v for k, v in mac.items()}
    out["encoder"] = sum(v for k, v in out.items() if k != "head")
    out["forward"] = out["encoder"] + out["head"]
    out["train"] = 3 * out["forward"]
    return out


# --------------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs (seconds)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def resolve_bench_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VinyError("--device cuda was asked for, but torch sees no CUDA device here; use --device cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------------
# Matrix-multiply peak
# --------------------------------------------------------------------------------------------------


def matmul_peak(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    sizes: tuple[int, ...] | None = None,
    model_shape: tuple[int, int, int] | None = (64 * 65, 128, 1536),
    repeats: int = 3,
) -> dict:
    """Measured matmul FLOP/s: square n x n products for a few n, best taken as the peak; plus one
    product shaped like the model's largest (tokens x dim) x (dim x 3*inner) for context."""
    device = torch.device(device)
    if sizes is None:
        sizes = (4096, 8192) if device.type == "cuda" else (512, 1024, 2048)
    per_size = {}
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        reps = 10 if device.type == "cuda" else 1
        sec = time_median(lambda a=a, b=b, reps=reps: [a @ b for _ in range(reps)], device, 1, repeats) / reps
        per_size[n] = 2 * n**3 / sec
    best = max(per_size, key=per_size.get)
    out = {
        "dtype": str(dtype).replace("torch.", ""),
        "peak_flops": per_size[best],
        "best_size": best,
        "per_size": {str(k): v for k, v in per_size.items()},
    }
    if model_shape is not None:
        m, k, n = model_shape
        a = torch.randn(m, k, device=device).to(dtype)
        b = torch.randn(k, n, device=device).to(dtype)
        reps = 50 if device.type == "cuda" else 5
        sec = time_median(lambda: [a @ b for _ in range(reps)], device, 1, repeats) / reps
        out["model_shaped"] = {"shape": f"({m}, {k}) x ({k}, {n})", "flops": 2 * m * k * n / sec}
    return out


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


def bench_data(cfg: ViTConfig, n: int, dataset: str = "toy-pets", seed: int = 0) -> ImageSet:
    """``n`` images (with labels and trimaps) at the model's size: the embedded toy-pets set, or random
    uint8 tensors (``dataset="random"``, also the fallback if the embedded set is unavailable)."""
    if dataset != "random":
        try:
            from .data import load_dataset

            data = load_dataset(dataset, size=cfg.image_size, limit=n, seed=seed)
            if data.labels is not None and data.masks is not None and len(data) >= n:
                return data
        except (VinyError, ImportError, AttributeError):
            pass
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    return ImageSet(
        name="random",
        images=torch.randint(0, 256, (n, 3, s, s), generator=g, dtype=torch.uint8),
        labels=torch.randint(0, 6, (n,), generator=g),
        masks=torch.randint(0, 3, (n, s, s), generator=g, dtype=torch.uint8),
        class_names=[f"c{i}" for i in range(6)],
    )


def pipeline_batches(data: ImageSet, batch: int, device: torch.device, gen: torch.Generator):
    """The data pipeline alone, as the SimMIM / classify loss runs it: index the cached uint8 tensor,
    move to ``device``, to float, per-image RandomResizedCrop + flip, normalise."""
    from .trainers.base import device_batch

    order = torch.randperm(len(data), generator=gen)
    for start in range(0, len(data), batch):
        b = device_batch(data, order[start : start + batch], device)
        x = random_resized_crop(to_float(b["images"]), gen, scale=(0.67, 1.0))
        yield normalize(random_hflip(gen, x)[0])


# --------------------------------------------------------------------------------------------------
# One regime's training step, evaluation and epoch
# --------------------------------------------------------------------------------------------------


@dataclass
class Trainer:
    """Encoder + head + optimizer of one regime, stepping the way trainers.loop.train does."""

    regime: object
    encoder: nn.Module
    head: nn.Module
    model: nn.Module  # the encoder, or its torch.compile wrapper
    optimizer: torch.optim.Optimizer
    device: torch.device
    precision: str
    losses: list = field(default_factory=list)
    # Read the loss on the host every this many steps, as trainers.loop does (loss_check_interval:
    # every step on a CPU, where it is free; every 25 on a GPU, where each read waits for the device).
    check_every: int = 1

    # Images per forward/backward, as the loop's --micro-batch: 0 = the loop's auto choice.
    micro_batch: int = 0

    def step(self, batch: dict, gen: torch.Generator) -> torch.Tensor:
        inputs = self.regime.prepare(batch, gen)
        n = next(iter(inputs.values())).shape[0]
        micro = micro_batch_size(self.micro_batch, self.device, n, self.encoder.cfg, self.precision)
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = forward_backward(
            lambda part: self.regime.compute_loss(self.model, self.head, part),
            inputs,
            micro,
            self.device,
            self.precision,
        )
        self.losses.append(loss)
        if len(self.losses) % self.check_every == 0:
            value = self.losses[-1].item()
            if not math.isfinite(value):
                raise VinyError(f"non-finite loss {value} in the benchmark ({self.regime.name})")
        self.optimizer.step()
        return self.losses[-1]

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.precision):
            return self.head(self.model(normalize(to_float(images))))


def make_trainer(
    regime: str,
    cfg: ViTConfig,
    data: ImageSet,
    device: torch.device,
    precision: str = "fp32",
    seed: int = 0,
    optimizer: str = "loop",
    compile: bool = False,
    encoder_cls: type[nn.Module] = ViNy,
    lr: float = 1e-4,
) -> Trainer:
    """A fresh encoder (``encoder_cls``, seeded) + ``regime``'s head + AdamW.

    ``optimizer``: "loop" = what trainers.loop uses (fused on CUDA, torch's default elsewhere),
    "fused", "foreach", "for-loop" (torch's default on CPU tensors), or "default" (torch's choice)."""
    from .trainers import REGISTRY
    from .trainers.base import RegimeData

    if regime not in REGISTRY:
        raise VinyError(f"unknown regime {regime!r}; choose one of {', '.join(REGISTRY)}")
    reg = REGISTRY[regime]()
    torch.manual_seed(seed)
    encoder = encoder_cls(cfg)
    head = reg.make_head(cfg, RegimeData(train=data))
    encoder.cls_token.requires_grad_(reg.uses_cls or cfg.cls_in_sequence)  # as trainers.loop.train
    encoder.to(device), head.to(device)
    encoder.train(), head.train()
    params = list(encoder.parameters()) + list(head.parameters())
    kw = {
        "loop": {"fused": device.type == "cuda"},
        "fused": {"fused": True},
        "foreach": {"foreach": True},
        "for-loop": {"foreach": False},
        "default": {},
    }
    if optimizer not in kw:
        raise VinyError(f"unknown optimizer variant {optimizer!r}; choose one of {', '.join(kw)}")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05, **kw[optimizer])
    model = encoder
    if compile:
        model = torch.compile(encoder)
        model.cfg = encoder.cfg
    return Trainer(reg, encoder, head, model, opt, device, precision, check_every=loss_check_interval(device))


def _fixed_batch(data: ImageSet, batch: int, device: torch.device) -> dict:
    from .trainers.base import device_batch

    return device_batch(data, slice(0, batch), device)


def measure_train_step(
    trainer: Trainer, data: ImageSet, batch: int, steps: int, warmup: int, repeats: int
) -> float:
    """Training img/s on one device-resident batch (augmentation inside the loss included)."""
    b = _fixed_batch(data, batch, trainer.device)
    gen = torch.Generator().manual_seed(0)
    sec = time_median(lambda: [trainer.step(b, gen) for _ in range(steps)], trainer.device, warmup, repeats)
    return batch * steps / sec


def run_epoch(trainer: Trainer, data: ImageSet, batch: int, seed: int = 0) -> tuple[float, int]:
    """One epoch exactly as trainers.loop.train runs it (shuffled indexing of the cached set, per-batch
    transfer, augmentation, step). Returns (seconds, images)."""
    from .trainers.base import device_batch

    gen = torch.Generator().manual_seed(seed)
    _sync(trainer.device)
    t0 = time.perf_counter()
    order = torch.randperm(len(data), generator=gen)
    for start in range(0, len(data), batch):
        trainer.step(device_batch(data, order[start : start + batch], trainer.device), gen)
    _sync(trainer.device)
    return time.perf_counter() - t0, len(data)


def _baseline_loss(regime: str, encoder: nn.Module, head: nn.Module, x: torch.Tensor, labels, gen):
    """The baseline's loss on already-augmented float images (its DataLoader did the augmentation)."""
    import torch.nn.functional as F

    from .model import patchify
    from .trainers.simmim import masked_l1, random_half_mask

    if regime == "simmim":
        cfg = encoder.cfg
        mask = random_half_mask(x.shape[0], cfg.num_patches, gen, x.device)
        pred = head(encoder(x, mask=mask, mask_token=head.mask_token))
        return masked_l1(pred, patchify(x, cfg.patch_size), mask)
    return F.cross_entropy(head(encoder(x, cls=True)), labels)


def baseline_measures(
    regime: str,
    cfg: ViTConfig,
    data: ImageSet,
    device: torch.device,
    batch: int,
    steps: int,
    jpeg_dir: str | None = None,
    workers: int = 0,
) -> dict[str, Callable[[], object]]:
    """The plain eager fp32 baseline (``PlainViT``, the same initial weights as ViNy, torch's default
    AdamW, no autocast) as timed closures: "train" (``steps`` steps on a resident, pre-normalised
    batch), "eval" (``steps`` no-grad forwards), and with ``jpeg_dir`` "dataloader" (one pass of the
    per-sample JPEG DataLoader alone) and "epoch" (one epoch, data included)."""
    from .bench_baseline import PlainViT, plain_loader, write_jpegs

    if regime not in ("simmim", "classify"):
        raise VinyError("the plain baseline runs the image-only regimes: simmim or classify")
    tr = make_trainer(regime, cfg, data, device, "fp32", optimizer="default", encoder_cls=PlainViT)
    gen = torch.Generator().manual_seed(0)
    fixed = _fixed_batch(data, batch, device)
    x = normalize(to_float(fixed["images"]))
    labels = fixed["labels"]

    def step(x=x, labels=labels):
        loss = _baseline_loss(regime, tr.encoder, tr.head, x, labels, gen)
        if not math.isfinite(loss.item()):
            raise VinyError("non-finite loss in the baseline")
        tr.optimizer.zero_grad()
        loss.backward()
        tr.optimizer.step()

    @torch.no_grad()
    def evaluate():
        tr.encoder.eval()
        for _ in range(steps):
            tr.head(tr.encoder(x, cls=regime == "classify"))
        tr.encoder.train()

    out = {"train": lambda: [step() for _ in range(steps)], "eval": evaluate}
    if jpeg_dir is not None:
        paths = write_jpegs(data.images.cpu(), jpeg_dir)
        lab = data.labels.cpu() if data.labels is not None else None
        loader = plain_loader(paths, lab, cfg.image_size, batch, workers)

        def load_only():
            for _ in loader:
                pass

        def epoch():
            for xb, yb in loader:  # decode every file again, transfer, step
                step(xb.to(device), yb.to(device))

        out["dataloader"], out["epoch"] = load_only, epoch
    return out


# --------------------------------------------------------------------------------------------------
# The paper plan
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# The whole benchmark
# --------------------------------------------------------------------------------------------------


def run_bench(
    device: str = "auto",
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    batch: int = 64,
    model: str = "viny",
    regimes: tuple[str, ...] = REGIMES,
    steps: int = 2,
    warmup: int = 1,
    repeats: int = 3,
    compile: bool = False,
    baseline: str | None = "simmim",
    epoch: bool = True,
    epoch_batches: int = 4,
    dataset: str = "toy-pets",
    threads: int | None = None,
    workers: int = 0,
    optimizer: str = "loop",
    peak_sizes: tuple[int, ...] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Everything `viny bench` reports, as one JSON-able dict (see docs/performance.md).

    Every figure is timed once per round, all figures in turn, for ``repeats`` rounds (after
    ``warmup`` untimed rounds), and the median per figure is kept: on a shared machine the load then
    falls on all figures alike, and the ratios between them stay meaningful."""
    log = log or (lambda _msg: None)
    dev = resolve_bench_device(device)
    if threads:
        torch.set_num_threads(threads)
    for p in precisions:
        if p not in ("fp32", "bf16"):
            raise VinyError(f"unknown precision {p!r}; choose fp32, bf16 or both")
    for r in regimes:
        if r not in REGIMES:
            raise VinyError(f"unknown regime {r!r}; choose from {', '.join(REGIMES)}")
    if batch < 1 or steps < 1 or repeats < 1:
        raise VinyError("--batch, --steps and repeats must be >= 1")
    cfg = model_config(model)
    n_images = batch * max(1, epoch_batches)
    log(f"data: {n_images} images ({dataset})")
    host = bench_data(cfg, n_images, dataset)
    data = host.to(dev)
    result: dict = {
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else (platform.processor() or "cpu"),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "model": model,
        "model_config": cfg.to_dict(),
        "params": count_parameters(ViNy(cfg)),
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
        "compile": compile,
        "optimizer": optimizer,
        "dataset": host.name,
        "epoch_images": n_images,
        "flop_convention": FLOP_CONVENTION,
        "matmul_peak": {},
        "regimes": [],
    }

    # 1. Every timed closure, with the images (or FLOPs) one call of it processes.
    measures: dict[tuple, Callable[[], object]] = {}
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    sizes = peak_sizes or ((4096, 8192) if dev.type == "cuda" else (512, 1024, 2048))
    shape = (batch * cfg.num_patches, cfg.dim, 3 * cfg.heads * cfg.dim_head)
    reps = 10 if dev.type == "cuda" else 1
    for p in precisions:
        for n in sizes:
            a, b = (torch.randn(n, n, device=dev).to(dtypes[p]) for _ in range(2))
            measures[("peak", p, n)] = lambda a=a, b=b: [a @ b for _ in range(reps)]
        a = torch.randn(shape[0], shape[1], device=dev).to(dtypes[p])
        b = torch.randn(shape[1], shape[2], device=dev).to(dtypes[p])
        measures[("shaped", p)] = lambda a=a, b=b: [a @ b for _ in range(5 * reps)]
    gen = torch.Generator().manual_seed(0)
    measures[("pipeline",)] = lambda: [x.sum() for x in pipeline_batches(data, batch, dev, gen)]
    trainers: dict[tuple, Trainer] = {}
    for r in regimes:
        for p in precisions:
            tr = trainers[(r, p)] = make_trainer(r, cfg, data, dev, p, optimizer=optimizer, compile=compile)
            fixed = _fixed_batch(data, batch, dev)
            g = torch.Generator().manual_seed(0)
            measures[("train", r, p)] = lambda tr=tr, fixed=fixed, g=g: [
                tr.step(fixed, g) for _ in range(steps)
            ]
            measures[("eval", r, p)] = lambda tr=tr, fixed=fixed: _eval_steps(tr, fixed["images"], steps)
            if epoch:
                measures[("epoch", r, p)] = lambda tr=tr: run_epoch(tr, data, batch)
    tmp = tempfile.TemporaryDirectory(prefix="viny-bench-jpeg-") if baseline and epoch else None
    try:
        if baseline:
            base = baseline_measures(
                baseline, cfg, host, dev, batch, steps, tmp.name if tmp else None, workers
            )
            for k, fn in base.items():
                measures[("baseline", k)] = fn

        # 2. Rounds.
        times: dict[tuple, list[float]] = {k: [] for k in measures}
        for i in range(warmup + repeats):
            log(f"round {i + 1}/{warmup + repeats}" + (" (warm-up)" if i < warmup else ""))
            for key, fn in measures.items():
                _sync(dev)
                t0 = time.perf_counter()
                fn()
                _sync(dev)
                if i >= warmup:
                    times[key].append(time.perf_counter() - t0)
    finally:
        if tmp is not None:
            tmp.cleanup()
    med = {k: statistics.median(v) for k, v in times.items()}
    result["spread"] = {"/".join(map(str, k)): [min(v), max(v)] for k, v in times.items()}

    # 3. Figures.
    for p in precisions:
        per_size = {str(n): 2 * n**3 * reps / med[("peak", p, n)] for n in sizes}
        best = max(per_size, key=per_size.get)
        result["matmul_peak"][p] = {
            "dtype": str(dtypes[p]).replace("torch.", ""),
            "peak_flops": per_size[best],
            "best_size": int(best),
            "per_size": per_size,
            "model_shaped": {
                "shape": f"({shape[0]}, {shape[1]}) x ({shape[1]}, {shape[2]})",
                "flops": 2 * shape[0] * shape[1] * shape[2] * 5 * reps / med[("shaped", p)],
            },
        }
    result["data_pipeline"] = {
        "img_per_s": n_images / med[("pipeline",)],
        "what": "index cached uint8 + transfer + RandomResizedCrop + flip + normalize",
    }
    for (r, p), tr in trainers.items():
        classes = data.num_classes if r == "classify" else None
        flops = analytic_flops(cfg, r, classes or None)
        row = {
            "regime": r,
            "precision": p,
            "flops_fwd_per_img": flops["forward"],
            "flops_train_per_img": flops["train"],
        }
        row["train_img_per_s"] = batch * steps / med[("train", r, p)]
        row["eval_img_per_s"] = batch * steps / med[("eval", r, p)]
        row["train_flops"] = row["train_img_per_s"] * flops["train"]
        row["eval_flops"] = row["eval_img_per_s"] * flops["forward"]
        peak = result["matmul_peak"][p]["peak_flops"]
        row["train_frac_of_peak"] = row["train_flops"] / peak
        row["eval_frac_of_peak"] = row["eval_flops"] / peak
        if epoch:
            sec = med[("epoch", r, p)]
            row["epoch_img_per_s"] = n_images / sec
            row["epoch_seconds"] = sec
            row["epoch_vs_step"] = sec / (n_images / row["train_img_per_s"])  # 1.0: no data overhead at all
        row["final_loss"] = float(tr.losses[-1])
        result["regimes"].append(row)
    if baseline:
        b = {"regime": baseline, "precision": "fp32", "dataloader_workers": workers}
        b["train_img_per_s"] = batch * steps / med[("baseline", "train")]
        b["eval_img_per_s"] = batch * steps / med[("baseline", "eval")]
        if epoch:
            b["dataloader_img_per_s"] = n_images / med[("baseline", "dataloader")]
            b["epoch_img_per_s"] = n_images / med[("baseline", "epoch")]
            b["epoch_seconds"] = med[("baseline", "epoch")]
        result["baseline"] = b
        result["ratios"] = _ratios(result)
    best_rate: dict[str, float] = {}
    for row in result["regimes"]:
        best_rate[row["regime"]] = max(best_rate.get(row["regime"], 0.0), row["train_img_per_s"])
    plan = paper_plan()
    result["paper_plan"] = {
        **plan,
        "projection": project_plan(plan, best_rate),
        "projection_uses": "best measured training img/s of each stage's regime",
    }
    return result


@torch.no_grad()
def _eval_steps(trainer: Trainer, images: torch.Tensor, steps: int) -> None:
    trainer.encoder.eval(), trainer.head.eval()
    try:
        for _ in range(steps):
            trainer.evaluate(images)
    finally:
        trainer.encoder.train(), trainer.head.train()


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
    for r in REGIMES:
        if (r, "fp32") in rows and (r, "bf16") in rows:
            out[f"{r}_bf16_vs_fp32"] = (
                rows[(r, "bf16")]["train_img_per_s"] / rows[(r, "fp32")]["train_img_per_s"]
            )
    return out


# --------------------------------------------------------------------------------------------------
# Checks used by the tests (and by anyone doubting the comparison)
# --------------------------------------------------------------------------------------------------


def precision_agreement(
    model: str = "tiny", regime: str = "simmim", steps: int = 5, batch: int = 16, seed: int = 0
) -> dict:
    """Train the same seeded model ``steps`` steps in fp32 and in bf16 autocast on the same batches
    (CPU) and return both loss curves."""
    cfg = model_config(model)
    data = bench_data(cfg, batch * steps, "random", seed)
    curves = {}
    for p in ("fp32", "bf16"):
        tr = make_trainer(regime, cfg, data, torch.device("cpu"), p, seed=seed, lr=1e-3)
        gen = torch.Generator().manual_seed(seed)
        for i in range(steps):
            tr.step(_fixed_batch(data.subset(list(range(i * batch, (i + 1) * batch))), batch, tr.device), gen)
        curves[p] = [float(v) for v in tr.losses]
    return curves


def _sdpa_backend(name: str | None):
    """Force F.scaled_dot_product_attention onto one backend ("math": the unfused reference)."""
    if name is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([{"math": SDPBackend.MATH, "flash": SDPBackend.FLASH_ATTENTION}[name]])


@contextlib.contextmanager
def _attention_in_fp32(enabled: bool):
    """Experiment: run F.scaled_dot_product_attention in float32 when autocast hands it bf16 (the
    change suggested for model.py in docs/performance.md), by wrapping the function for the duration."""
    if not enabled:
        yield
        return
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention

    def upcast(q, k, v, *args, **kwargs):
        if q.dtype == torch.bfloat16:
            return original(q.float(), k.float(), v.float(), *args, **kwargs).to(q.dtype)
        return original(q, k, v, *args, **kwargs)

    F.scaled_dot_product_attention = upcast
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original


def step_variants(
    device: str = "cpu",
    regime: str = "simmim",
    model: str = "viny",
    batch: int = 64,
    steps: int = 2,
    warmup: int = 1,
    repeats: int = 3,
    variants: tuple[str, ...] = (
        "loop",
        "fused",
        "foreach",
        "bf16",
        "bf16+fused",
        "compile",
        "compile+fused",
    ),
    log: Callable[[str], None] | None = None,
) -> dict:
    """Training img/s of one regime under alternative settings, each against the loop's default in
    the same run: the evidence behind the suggestions in docs/performance.md. A variant is parts
    joined by "+": loop (as trainers.loop), fused / foreach (AdamW), bf16 (autocast), compile
    (torch.compile the encoder), whole (the whole batch in one forward/backward, no micro-batches),
    mbN (micro-batches of N), nosync (never read the loss on the host; the loop reads it every step
    on a CPU, every 25 on a GPU), sdpa-math (unfused attention), attn-fp32 (attention in float32
    inside bf16 autocast), plain (the baseline's explicit-attention PlainViT in place of ViNy,
    everything else as the variant says). sdpa-math and attn-fp32 act on
    torch's fused attention, which ViNy calls on CUDA only (``model.attend``): elsewhere they change
    nothing."""
    log = log or (lambda _msg: None)
    dev = resolve_bench_device(device)
    cfg = model_config(model)
    data = bench_data(cfg, batch, "random").to(dev)
    fixed = _fixed_batch(data, batch, dev)
    out: dict[str, object] = {}
    runs: dict[str, Callable[[], object]] = {}
    for v in variants:
        parts = set(v.split("+"))
        opt = "fused" if "fused" in parts else "foreach" if "foreach" in parts else "loop"
        prec = "bf16" if "bf16" in parts else "fp32"
        encoder_cls = ViNy
        if "plain" in parts:
            from .bench_baseline import PlainViT as encoder_cls
        tr = make_trainer(
            regime, cfg, data, dev, prec, optimizer=opt, compile="compile" in parts, encoder_cls=encoder_cls
        )
        if "nosync" in parts:
            tr.check_every = 1 << 30
        if "whole" in parts:
            tr.micro_batch = batch
        for part in parts:
            if part.startswith("mb") and part[2:].isdigit():
                tr.micro_batch = int(part[2:])
        sdpa = "math" if "sdpa-math" in parts else None
        fp32_attn = "attn-fp32" in parts

        def run(tr=tr, sdpa=sdpa, fp32_attn=fp32_attn, g=torch.Generator().manual_seed(0)):
            with _sdpa_backend(sdpa), _attention_in_fp32(fp32_attn):
                for _ in range(steps):
                    tr.step(fixed, g)

        runs[v] = run
    times: dict[str, list[float]] = {v: [] for v in variants}
    for i in range(warmup + 1 + repeats):  # one extra warm-up round: torch.compile compiles in the first
        log(f"round {i + 1}/{warmup + 1 + repeats}")
        for v, fn in runs.items():
            if v in out:
                continue
            try:
                _sync(dev)
                t0 = time.perf_counter()
                fn()
                _sync(dev)
            except Exception as err:  # a variant this machine cannot run (e.g. no compiler) is reported
                out[v] = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}"
                continue
            if i > warmup:
                times[v].append(time.perf_counter() - t0)
    for v in variants:
        if v not in out:
            out[v] = batch * steps / statistics.median(times[v])
    return {
        "device": str(dev),
        "regime": regime,
        "model": model,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "rounds": repeats,
        "train_img_per_s": out,
    }
