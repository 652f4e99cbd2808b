"""The one training loop every regime runs through (MAE-style: set-up apart from the epoch loop)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..checkpoint import (
    CLS_PATH_FORMAT,
    checkpoint_model_config,
    encoder_from_checkpoint,
    file_digest,
    load_checkpoint,
    load_state_strict,
    save_checkpoint,
    write_json,
)
from ..config import TrainConfig, is_legacy_config
from ..data.protocol import ids_digest
from ..errors import VinyError
from ..model import ViNy, ViTConfig, model_config
from ..progress import epoch_progress
from .base import REGISTRY, Regime, RegimeData, device_batch

LAST, FINAL = "checkpoint.pt", "final.pt"


@dataclass
class RunResult:
    run_dir: Path
    final_checkpoint: Path
    history: list[dict]
    results: dict


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise VinyError(
            "--device cuda was asked for, but torch sees no CUDA device here; use --device cpu or auto"
        )
    return torch.device(name)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """One generator per (seed, epoch): batch order, augmentation and masking of that epoch. Resuming
    at any epoch boundary therefore replays exactly what an uninterrupted run would have drawn."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _lineage_from(init_path: str, parent: dict) -> list[dict]:
    entry = {
        "regime": parent["regime"],
        "dataset": parent.get("config", {}).get("dataset"),
        "checkpoint": str(init_path),
        "digest": file_digest(Path(init_path)),
        "trained_on": parent.get("trained_on"),
    }
    return list(parent.get("lineage", [])) + [entry]


def trained_on(cfg: TrainConfig, data: RegimeData) -> dict:
    """Which images a stage trained on, carried by its checkpoints and every descendant's lineage, so
    a diagnostic can refuse to evaluate on them. The ids themselves are kept for datasets with
    trimaps (the only ones a diagnostic evaluates on); a digest for every dataset."""
    train = data.train
    return {
        "regime": cfg.regime,
        "dataset": cfg.dataset,
        "split_seed": cfg.split_seed,
        "test_size": data.info.get("test_size"),
        "images": len(train),
        "ids_sha256": ids_digest(train.ids),
        "ids": list(train.ids) if train.masks is not None else None,
    }


def run_model_config(cfg: TrainConfig) -> ViTConfig:
    """The encoder a run builds: the ``--model`` preset with the run's token path."""
    return dataclasses.replace(model_config(cfg.model), cls_in_sequence=cfg.cls_in_sequence)


def _check_parent_model(init: str, parent: ViTConfig, mcfg: ViTConfig) -> None:
    if parent == mcfg:
        return
    if dataclasses.replace(parent, cls_in_sequence=mcfg.cls_in_sequence) == mcfg:
        if parent.cls_in_sequence:
            advice = (
                f"it was trained with the CLS token in the blocks in every stage (as every checkpoint of "
                f"viny before format {CLS_PATH_FORMAT} was), and this run follows the study's token path. "
                "Pass --cls-in-sequence to continue its token path, or train the chain again from scratch"
            )
        else:
            advice = (
                "it follows the study's token path (CLS token only in classification), and this run puts "
                "the CLS token in every stage. Leave out --cls-in-sequence to continue its token path"
            )
        raise VinyError(f"--init {init}: {advice}.")
    raise VinyError(
        f"--init {init} holds a {parent.to_dict()} encoder, but this run builds {mcfg.to_dict()}; "
        "pass the same --model as the parent run"
    )


_LEGACY_RESUME = (
    "--resume refused: {where} was written by an older viny (before checkpoint format 2), which ran the "
    "CLS token through every stage and drew the data split from --seed. Its run cannot be continued the "
    "same way: start it again in a new --out folder (the finished checkpoints of older runs still load "
    "for --init and the diagnostics)."
)


def _prepare_run_dir(run_dir: Path, cfg: TrainConfig, resume: bool) -> dict | None:
    """Create the run folder, or check it for --resume. Returns the checkpoint to resume from."""
    config_path, last = run_dir / "config.json", run_dir / LAST
    if resume:
        if not config_path.exists():
            raise VinyError(f"--resume: {run_dir} has no config.json; nothing to resume")
        raw = json.loads(config_path.read_text())
        if is_legacy_config(raw):
            raise VinyError(_LEGACY_RESUME.format(where=config_path))
        old = TrainConfig.from_dict(raw)
        diff = old.differences(cfg)
        if diff:
            raise VinyError(
                f"--resume refused: the config differs from the one in {config_path}:\n  "
                + "\n  ".join(diff)
                + "\nUse the same options, or a new --out folder."
            )
        state = load_checkpoint(last) if last.exists() else None
        if state is not None and state["format_version"] < CLS_PATH_FORMAT:
            raise VinyError(_LEGACY_RESUME.format(where=last))
        return state
    if last.exists() or (run_dir / FINAL).exists():
        raise VinyError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


class _Step(nn.Module):
    """Encoder + head + the regime's loss as one module, so DistributedDataParallel sees one forward."""

    def __init__(self, regime: Regime, encoder: nn.Module, head: nn.Module, use_compile: bool) -> None:
        super().__init__()
        self.regime, self.encoder, self.head = regime, encoder, head
        self.run_encoder = _compiled(encoder, use_compile)

    def forward(self, inputs: dict[str, torch.Tensor]):
        return self.regime.compute_loss(self.run_encoder, self.head, inputs)


ACTIVATION_BUDGET = 256 * 1024**2  # bytes of saved activations per micro-batch on a CPU


def micro_batch_size(
    requested: int, device: torch.device, batch_size: int, mcfg, precision: str = "fp32"
) -> int:
    """Images per forward/backward. ``requested`` > 0 is taken as given (at most the batch). Auto (0):
    the whole batch on a GPU; on a CPU as many images as keep the saved activations under
    ``ACTIVATION_BUDGET``, evened out over the batch, bf16 activations counting half (ViNy at batch
    64: 4 x 16 in fp32, 2 x 32 in bf16; the demo model: 64).
    Smaller live activations keep a CPU step's peak memory down at no cost in speed: ViNy, batch 64,
    2 threads, fp32 measured 51.1 img/s whole against 51.7 in 4 x 16, and 1.99 GB against 1.29 GB
    peak; bf16 93.6 whole, 94.1 in 2 x 32, 89.0 in 4 x 16 (docs/performance.md)."""
    if requested > 0:
        return min(requested, batch_size)
    if device.type != "cpu":
        return batch_size
    per_image = mcfg.activation_bytes_per_image() // (2 if precision == "bf16" else 1)
    fits = max(1, ACTIVATION_BUDGET // per_image)
    if fits >= batch_size:
        return batch_size
    parts = math.ceil(batch_size / fits)
    return math.ceil(batch_size / parts)


def forward_backward(
    step, inputs: dict, micro_batch: int, device, precision: str, no_sync=None, loss_scale: float = 1.0
):
    """One batch's forward and backward, in micro-batches of at most ``micro_batch`` images whose
    gradients accumulate to the whole batch's: each part's loss is weighted by its share of the
    images, which is exact because every regime's loss is a mean in which each image weighs the same.
    ``no_sync`` (DistributedDataParallel.no_sync) defers the gradient all-reduce to the last part.
    ``loss_scale`` multiplies what is backpropagated, not what is returned: a data-parallel rank's
    ``distributed.Shard.loss_scale``, which makes the ranks' averaged gradients the global batch's.
    Returns the batch's loss (detached) and statistics, as the same weighted means."""
    n = next(iter(inputs.values())).shape[0]
    parts = distributed.even_slices(n, max(1, math.ceil(n / micro_batch)))
    total, stats_total = None, {}
    for i, part in enumerate(parts):
        weight = (part.stop - part.start) / n
        factor = weight * loss_scale
        sync = no_sync() if no_sync is not None and i < len(parts) - 1 else contextlib.nullcontext()
        with sync:
            with autocast(device, precision):
                loss, stats = step({k: v[part] for k, v in inputs.items()})
            (loss * factor if factor != 1.0 else loss).backward()
        loss = loss.detach() * weight
        total = loss if total is None else total + loss
        _accumulate(stats_total, stats, weight, loss.device)
    return total, stats_total


def _accumulate(sums: dict, values: dict, factor, device, dtype: torch.dtype | None = None) -> None:
    """sums[k] += values[k] * factor for every key, as detached tensors on ``device``."""
    for k, v in values.items():
        v = torch.as_tensor(v, device=device).detach()
        v = (v if dtype is None else v.to(dtype)) * factor
        sums[k] = sums[k] + v if k in sums else v


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> RunResult:
    """Train one regime as ``cfg`` says, writing config, metrics, checkpoints and results to ``run_dir``.

    Under torchrun every rank calls this; batches are split across ranks and rank 0 writes the files."""
    cfg = cfg.resolved()
    run_dir = Path(run_dir)
    info = distributed.from_environment()
    device = distributed.setup(info, resolve_device(cfg.device))
    state = _prepare_run_dir(run_dir, cfg, resume)
    distributed.barrier(info)
    main = info.is_main
    mcfg = run_model_config(cfg)
    regime: Regime = REGISTRY[cfg.regime]()

    parent = None
    if cfg.init:  # checked before the data is loaded: a wrong --init fails at once
        parent = load_checkpoint(cfg.init)
        _check_parent_model(cfg.init, checkpoint_model_config(parent), mcfg)

    torch.manual_seed(cfg.seed)  # initialisation of encoder and head
    if not main:
        distributed.barrier(info)  # rank 0 builds any dataset cache first
    data: RegimeData = regime.load_data(cfg, mcfg)
    if main:
        distributed.barrier(info)
    encoder, lineage = ViNy(mcfg), []
    if parent is not None:
        encoder = encoder_from_checkpoint(parent, cfg.init)
        lineage = _lineage_from(cfg.init, parent)
    head = regime.make_head(mcfg, data)
    used = trained_on(cfg, data)
    # The CLS token takes part only where it enters the blocks; frozen elsewhere, so the optimiser
    # leaves it as it was (weight decay included) and DistributedDataParallel sees no unused parameter.
    encoder.cls_token.requires_grad_(regime.uses_cls or mcfg.cls_in_sequence)
    encoder.to(device), head.to(device)
    train_set = _resident(data.train, device)
    micro = micro_batch_size(cfg.micro_batch, device, cfg.batch_size, mcfg, cfg.precision)
    if main:
        write_json(run_dir / "config.json", cfg.to_dict())
        write_json(
            run_dir / "data.json",
            {
                **data.info,
                "world_size": info.world_size,
                "train_set_on": str(train_set.images.device),
                "micro_batch": micro,
            },
        )

    params = list(encoder.parameters()) + list(head.parameters())
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda"
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma
    )
    history: list[dict] = []
    start_epoch = 0
    if state is not None:
        load_state_strict(encoder, state["encoder"], f"encoder in {run_dir / LAST}")
        load_state_strict(head, state["head"], f"head in {run_dir / LAST}")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, history = state["epoch"], list(state["history"])
    if main:
        # metrics.jsonl mirrors the history of the last good checkpoint: a resumed run has no gap or repeat.
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))

    step: nn.Module = _Step(regime, encoder, head, cfg.compile)
    if info.enabled:
        # Every trainable parameter takes part: the CLS token is frozen where unused (above).
        step = torch.nn.parallel.DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None
        )
    n = len(train_set)
    check_every = loss_check_interval(device)
    no_sync = step.no_sync if info.enabled else None
    with epoch_progress(enabled=progress and main, description=f"{cfg.regime}") as bar:
        for epoch in range(start_epoch, cfg.epochs):
            step.train()
            gen = epoch_generator(cfg.seed, epoch)
            order = torch.randperm(n, generator=gen).to(train_set.images.device)
            meter = _EpochMeter(device, info, epoch, run_dir / LAST)
            t0 = time.perf_counter()
            task = bar.start_epoch(epoch, cfg.epochs, n)
            for i, start in enumerate(range(0, n, cfg.batch_size)):
                batch = device_batch(train_set, order[start : start + cfg.batch_size], device)
                part = distributed.shard(regime.prepare(batch, gen), info)
                optimizer.zero_grad(set_to_none=True)
                loss, stats = forward_backward(
                    step, part.inputs, micro, device, cfg.precision, no_sync, part.loss_scale
                )
                meter.add(loss, stats, part.images, batch["images"].shape[0])
                last = start + cfg.batch_size >= n
                shown = meter.check() if (i + 1) % check_every == 0 or last else None
                optimizer.step()
                bar.advance(task, batch["images"].shape[0], shown, meter.seen / (time.perf_counter() - t0))
            totals = meter.means()
            seen = meter.seen
            scheduler.step()
            seconds = time.perf_counter() - t0
            record = {"epoch": epoch + 1, **totals}
            record.update(
                {"lr": optimizer.param_groups[0]["lr"], "seconds": seconds, "img_per_s": seen / seconds}
            )
            history.append(record)
            if main:
                save_checkpoint(
                    run_dir / LAST,
                    _payload(
                        cfg, mcfg, encoder, head, lineage, used, history, epoch + 1, optimizer, scheduler
                    ),
                )
                with open(run_dir / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
            distributed.barrier(info)

    encoder.eval(), head.eval()
    final_path = run_dir / FINAL
    results: dict = {}
    if main:
        results = regime.evaluate(encoder, head, data, max(cfg.batch_size, 128))
        save_checkpoint(
            final_path,
            _payload(cfg, mcfg, encoder, head, lineage, used, history, cfg.epochs, results=results),
        )
        regime.finish(run_dir, encoder, head, data, results)
        write_json(
            run_dir / "results.json",
            {"regime": cfg.regime, "final": history[-1] if history else {}, **results},
        )
    distributed.barrier(info)
    return RunResult(run_dir, final_path, history, results)


def loss_check_interval(device: torch.device) -> int:
    """Steps between reads of the loss on the host. Reading it waits for the device to finish, which
    on a GPU stalls the queue of kernels every step; on a CPU it costs nothing, so every step is
    checked there and a non-finite loss stops the run before its update is applied."""
    return 1 if device.type == "cpu" else 25


def _resident(train_set, device: torch.device):
    """The training set on ``device`` when that is a GPU with room for it (a quarter of its free
    memory at most), so batches never cross from the host; otherwise the set as it is."""
    if device.type != "cuda":
        return train_set
    free, _total = torch.cuda.mem_get_info(device)
    return train_set.to(device) if train_set.nbytes <= free // 4 else train_set


class _EpochMeter:
    """Running sums of one epoch's loss and statistics, kept on the device (no host sync per step).

    ``check`` reads the losses added since the last check, once, and stops the run at the first
    non-finite one, naming its batch; ``means`` gives the epoch's averages, summed over all ranks."""

    def __init__(self, device, info: distributed.DistInfo, epoch: int, last_checkpoint: Path) -> None:
        self.device, self.info, self.epoch, self.last_checkpoint = device, info, epoch, last_checkpoint
        self.sums: dict[str, torch.Tensor] = {}
        self.count = torch.zeros((), dtype=torch.float64, device=device)  # this rank's images
        self.pending: list[torch.Tensor] = []
        self.batches = 0  # batches added so far this epoch
        self.seen = 0  # images of the global batches so far (host-side, for the progress bar)

    def add(self, loss: torch.Tensor, stats: dict, local: int, global_batch: int) -> None:
        self.pending.append(loss.detach().float())
        _accumulate(self.sums, {"loss": loss, **stats}, local, self.device, torch.float64)
        self.count += local
        self.batches += 1
        self.seen += global_batch

    def check(self) -> float:
        """Stop at a non-finite loss among those added since the last check; else the running mean loss."""
        finite = torch.isfinite(torch.stack(self.pending))
        bad = (~finite).any().to(torch.float64).reshape(1)
        bad = distributed.sum_across_ranks(bad, self.info)
        if float(bad) > 0:
            first = self.batches - len(self.pending) + 1
            if not bool(finite.all()):
                first += int((~finite).nonzero()[0, 0])
                where = f"batch {first}"
            else:
                where = f"batch {first}..{self.batches} (on another rank)"
            raise VinyError(
                f"non-finite loss at epoch {self.epoch + 1}, {where}; stopped. The last good checkpoint "
                f"is kept in {self.last_checkpoint}. Try a lower --lr or --precision fp32."
            )
        self.pending.clear()
        return float(self.sums["loss"] / self.count.clamp(min=1))  # 0 on a rank given no images yet

    def means(self) -> dict[str, float]:
        keys = list(self.sums)
        totals = distributed.sum_across_ranks(
            torch.stack([self.sums[k] for k in keys] + [self.count]), self.info
        )
        return {k: float(v) for k, v in zip(keys, (totals[:-1] / totals[-1]).tolist(), strict=True)}


def _compiled(encoder: nn.Module, use_compile: bool) -> nn.Module:
    return torch.compile(encoder) if use_compile else encoder


def _payload(
    cfg, mcfg, encoder, head, lineage, used, history, epoch, optimizer=None, scheduler=None, results=None
) -> dict:
    payload = {
        "regime": cfg.regime,
        "config": cfg.to_dict(),
        "model_config": mcfg.to_dict(),
        "encoder": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "head": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "head_type": type(head).__name__,
        "lineage": lineage,
        "trained_on": used,
        "epoch": epoch,
        "history": history,
    }
    if optimizer is not None:
        payload["optimizer"] = optimizer.state_dict()
        payload["scheduler"] = scheduler.state_dict()
    if results is not None:
        payload["results"] = results
    return payload
