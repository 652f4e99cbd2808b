"""The one training run every regime goes through (MAE-style): set-up, resume and checkpoints here; the
epoch itself is ``engine.train_one_epoch``."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..checkpoint import (
    CLS_PATH_FORMAT,
    DiskFullError,
    atomic_write_text,
    checkpoint_model_config,
    encoder_from_checkpoint,
    file_digest,
    load_checkpoint,
    load_state_strict,
    remove_temp_files,
    save_checkpoint,
    write_json,
)
from ..config import TrainConfig, is_legacy_config
from ..data.protocol import ids_digest
from ..errors import VinyError, VinyWarning
from ..model import ViNy, ViTConfig, model_config
from ..precision import emulated_bf16_note, resolve_precision
from ..progress import console, epoch_progress
from ..runlock import FINAL, LAST, StageLock, hold_run_folder
from .base import REGISTRY, Regime, RegimeData
from .engine import (
    EpochMeter,
    StepSettings,
    TrainStep,
    activation_bytes,
    epoch_generator,
    loss_check_interval,
    make_optimizer,
    micro_batch_size,
    train_one_epoch,
    unused_cls_frozen,
)
from .streams import resolve_streams


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


# Checkpoints are written whole and renamed into place, so no earlier one is kept to fall back to.
_DAMAGED_RESUME = (
    "--resume cannot continue from it, and no earlier checkpoint is kept: delete {last} and --resume "
    "again to train this run from its first epoch, or start again in a new --out."
)


def _take_run_folder(run_dir: Path, resume: bool) -> StageLock | None:
    """The run folder's lock for this run (None: borrowed from this process's sweep claim); a folder
    another process writes is refused in one line naming its pid."""
    if resume and not run_dir.is_dir():
        raise VinyError(f"--resume: {run_dir} has no config.json; nothing to resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    return hold_run_folder(run_dir, lambda message: console.print(message, highlight=False))


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
        remove_temp_files(run_dir)  # left by a write that was killed; the files they were for are whole
        state = load_checkpoint(last, if_damaged=_DAMAGED_RESUME.format(last=last)) if last.exists() else None
        if state is not None and state["format_version"] < CLS_PATH_FORMAT:
            raise VinyError(_LEGACY_RESUME.format(where=last))
        if state is not None:
            _check_checkpoint_run(last, state, config_path, old)
        return state
    if last.exists() or (run_dir / FINAL).exists():
        raise VinyError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


# Where the files are, not what a run computes: config.json's copy is updated when a stage moves.
_PATH_FIELDS = ("init", "data_root")


def _check_checkpoint_run(last: Path, state: dict, config_path: Path, config: TrainConfig) -> None:
    """--resume: the checkpoint must be of the run config.json describes (the same result-relevant
    options), not of another run that wrote into the same folder."""
    try:
        theirs = TrainConfig.from_dict(state["config"])
        diff = [d for d in theirs.differences(config) if d.split(":")[0] not in _PATH_FIELDS]
    except (KeyError, TypeError, VinyError):
        diff = ["the checkpoint holds no config of a viny training run"]
    if diff:
        raise VinyError(
            f"--resume refused: {last} was written by another run than {config_path} "
            f"({'; '.join(diff)}, checkpoint -> config.json): the folder holds files of two runs. "
            f"Train again in a new --out, or delete {last.name} to train the run of {config_path.name} "
            "from its first epoch."
        )


def _lineage_key(lineage: list[dict]) -> list[tuple]:
    return [(entry.get("regime"), entry.get("digest")) for entry in lineage]


def _check_checkpoint_lineage(last: Path, state: dict, lineage: list[dict], init: str | None) -> None:
    """--resume: the checkpoint must continue the parent this run starts from (--init, by digest)."""
    theirs, ours = _lineage_key(state.get("lineage", [])), _lineage_key(lineage)
    if theirs != ours:

        def show(key: list[tuple]) -> str:
            return (
                " > ".join(f"{regime} {str(digest)[:12]}" for regime, digest in key) or "none (from scratch)"
            )

        raise VinyError(
            f"--resume refused: {last} continues another lineage ({show(theirs)}) than this run's --init "
            f"{init} gives ({show(ours)}): its parent checkpoint was replaced. Train again in a new --out, "
            "or give --init the parent the run started from."
        )


class Run:
    """One training run: its folder, data, model, optimiser and schedule, set up (or restored for
    ``--resume``) on construction. ``end_epoch`` records and saves a finished epoch, ``finish``
    evaluates and writes the final files. ``train`` drives one run through its epochs; a fleet
    (``trainers.fleet``) drives several together, each through these same steps at its own epoch ends.

    ``resident=False`` leaves the training set where it was loaded (a fleet places shared sets itself).
    Under torchrun every rank builds its Run; rank 0 writes the files."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, resume: bool = False, resident: bool = True):
        self.cfg = cfg = cfg.resolved()
        self.run_dir = run_dir = Path(run_dir)
        self.info = info = distributed.from_environment()
        self.device = device = distributed.setup(info, resolve_device(cfg.device))
        # "auto" becomes the precision this device runs natively; config.json records which
        self.cfg = cfg = dataclasses.replace(cfg, precision=resolve_precision(cfg.precision, device))
        note = emulated_bf16_note(device, cfg.precision)
        if note:
            warnings.warn(note, VinyWarning, stacklevel=3)
        self._lock = _take_run_folder(run_dir, resume) if info.is_main else None
        try:
            self._set_up(cfg, run_dir, resume, resident)
        except BaseException:
            self.release()
            raise

    def _set_up(self, cfg: TrainConfig, run_dir: Path, resume: bool, resident: bool) -> None:
        info, device = self.info, self.device
        state = _prepare_run_dir(run_dir, cfg, resume)
        distributed.barrier(info)
        self.main = info.is_main
        self.mcfg = mcfg = run_model_config(cfg)
        self.regime: Regime = REGISTRY[cfg.regime]()
        parent = _load_parent(cfg, mcfg)  # before the data is loaded: a wrong --init fails at once

        torch.manual_seed(cfg.random_seed)  # initialisation of encoder and head
        self.data = _load_data(self.regime, cfg, mcfg, info)
        self.encoder, self.head, self.lineage = _build_model(
            cfg, mcfg, self.regime, self.data, parent, device
        )
        if state is not None:
            _check_checkpoint_lineage(run_dir / LAST, state, self.lineage, cfg.init)
        self.used = trained_on(cfg, self.data)
        self.train_set = _resident(self.data.train, device) if resident else self.data.train
        self.micro = micro_batch_size(cfg.micro_batch, device, cfg.batch_size, mcfg, cfg.precision)
        part = self.micro * activation_bytes(mcfg, cfg.precision)
        self.streams = resolve_streams(
            cfg.streams, device, part_bytes=part, compiled=cfg.compile, ranks=info.world_size
        )
        # What every step of the run shares; the loss is read every loss_check_interval steps.
        self.settings = StepSettings(
            device, cfg.precision, self.micro, info, loss_check_interval(device), self.streams
        )
        if self.main:
            _write_run_files(run_dir, cfg, self.data, info, self.train_set, self.micro, self.streams)
        self.optimizer = make_optimizer(
            list(self.encoder.parameters()) + list(self.head.parameters()), cfg.lr, cfg.weight_decay, device
        )
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(cfg.milestones), gamma=cfg.gamma
        )
        self.start_epoch, self.history = _restore(
            state, run_dir, self.encoder, self.head, self.optimizer, self.scheduler
        )
        if self.main:
            # metrics.jsonl mirrors the history of the last good checkpoint: a resumed run has no gap or repeat.
            atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))

    def release(self) -> None:
        """Let go of the run folder's lock (after ``finish``, or when the run stops); idempotent."""
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()

    def step_module(self) -> nn.Module:
        return _step_module(self.regime, self.encoder, self.head, self.cfg.compile, self.info, self.device)

    def meter(self, epoch: int) -> EpochMeter:
        return EpochMeter(self.device, self.info, epoch, self.run_dir / LAST)

    def end_epoch(
        self, epoch: int, totals: dict, seconds: float, images: int, extra: dict | None = None
    ) -> dict:
        """Step the schedule, append the epoch's record to the history and save it (checkpoint.pt and
        metrics.jsonl together); returns the record. ``images``: how many this run trained on."""
        self.scheduler.step()
        record = {"epoch": epoch + 1, **totals}
        record.update(
            {"lr": self.optimizer.param_groups[0]["lr"], "seconds": seconds, "img_per_s": images / seconds}
        )
        record.update(extra or {})
        self.history.append(record)
        if self.main:
            _save_epoch(self.run_dir, record, self.payload(epoch + 1, with_optimizer=True))
        distributed.barrier(self.info)
        return record

    def payload(self, epoch: int, with_optimizer: bool = False, results: dict | None = None) -> dict:
        """What one checkpoint file holds after ``epoch`` epochs: the config, model config, encoder and
        head weights (on the CPU), lineage, the images trained on and the history; with
        ``with_optimizer`` the optimiser and schedule (checkpoint.pt, to resume), with ``results`` the
        held-out results (final.pt)."""
        payload = {
            "regime": self.cfg.regime,
            "config": self.cfg.to_dict(),
            "model_config": self.mcfg.to_dict(),
            "encoder": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
            "head": {k: v.detach().cpu() for k, v in self.head.state_dict().items()},
            "head_type": type(self.head).__name__,
            "lineage": self.lineage,
            "trained_on": self.used,
            "epoch": epoch,
            "history": self.history,
        }
        if with_optimizer:
            payload["optimizer"] = self.optimizer.state_dict()
            payload["scheduler"] = self.scheduler.state_dict()
        if results is not None:
            payload["results"] = results
        return payload

    def finish(self) -> RunResult:
        """Held-out evaluation, the regime's outputs, results.json and (last) final.pt."""
        encoder, head, regime, cfg = self.encoder, self.head, self.regime, self.cfg
        encoder.eval(), head.eval()
        final_path = self.run_dir / FINAL
        results: dict = {}
        if self.main:
            results = regime.evaluate(encoder, head, self.data, max(cfg.batch_size, 128))
            regime.finish(self.run_dir, encoder, head, self.data, results)
            write_json(
                self.run_dir / "results.json",
                {"regime": cfg.regime, "final": self.history[-1] if self.history else {}, **results},
            )
            # final.pt last: it marks a finished run (a sweep never trains a stage holding one again), so a
            # run killed before it is resumed and evaluated again instead of missing its results.
            save_checkpoint(final_path, self.payload(cfg.epochs, results=results))
        self.release()
        distributed.barrier(self.info)
        return RunResult(self.run_dir, final_path, self.history, results)


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> RunResult:
    """Train one regime as ``cfg`` says, writing config, metrics, checkpoints and results to ``run_dir``.

    Under torchrun every rank calls this; batches are split across ranks and rank 0 writes the files."""
    run = Run(cfg, run_dir, resume)
    try:
        train_epochs(run, progress)
        return run.finish()
    finally:
        run.release()


def train_epochs(run: Run, progress: bool = True) -> None:
    """Train ``run`` alone from its first epoch (``start_epoch``) to its last, saving each epoch."""
    cfg = run.cfg
    step = run.step_module()
    with epoch_progress(enabled=progress and run.main, description=f"{cfg.regime}") as bar:
        for epoch in range(run.start_epoch, cfg.epochs):
            meter = run.meter(epoch)
            t0 = time.perf_counter()
            task = bar.start_epoch(epoch, cfg.epochs, len(run.train_set))
            totals = train_one_epoch(
                step,
                run.optimizer,
                run.train_set,
                run.regime,
                epoch_generator(cfg.random_seed, epoch),
                run.settings,
                batch_size=cfg.batch_size,
                meter=meter,
                progress=functools.partial(bar.advance, task),
            )
            run.end_epoch(epoch, totals, time.perf_counter() - t0, meter.seen)


def _save_epoch(run_dir: Path, record: dict, payload: dict) -> None:
    """Record a finished epoch in checkpoint.pt and its line in metrics.jsonl, so that metrics.jsonl
    always holds the epochs of the last checkpoint: the line is appended once the new checkpoint is
    written and synced, just before it is renamed into place, and cut off again when anything fails
    (a full disk, an interrupt). A write that failed for want of room stops the run with a one-line
    DiskFullError saying what is kept. The line is not fsynced: --resume rewrites metrics.jsonl from
    the checkpoint's history."""
    metrics, last = run_dir / "metrics.jsonl", run_dir / LAST
    size = metrics.stat().st_size

    def append_line() -> None:
        try:
            with open(metrics, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as error:  # name the file: a failed write on an open file carries no name
            raise OSError(error.errno, error.strerror, str(metrics)) from None

    try:
        save_checkpoint(last, payload, before_rename=append_line)
    except BaseException as error:
        os.truncate(metrics, size)  # shrinking a file needs no free space
        if not isinstance(error, DiskFullError):
            raise
        epoch = record["epoch"]
        kept = (
            f"{last.name} and metrics.jsonl in {run_dir} hold epoch {epoch - 1}"
            if epoch > 1
            else f"no epoch of {run_dir} is saved yet"
        )
        advice = (
            f"Epoch {epoch} finished (loss {record.get('loss', float('nan')):.4g}) but is not saved: {kept}. "
            "Free space (or raise the file-size limit, `ulimit -f`) and run the same command with --resume "
            "to train it again."
        )
        raise DiskFullError(error.path, error.errno, advice) from None


def _load_parent(cfg: TrainConfig, mcfg: ViTConfig) -> dict | None:
    """The --init checkpoint, checked against the encoder this run builds; None without --init."""
    if not cfg.init:
        return None
    parent = load_checkpoint(cfg.init)
    _check_parent_model(cfg.init, checkpoint_model_config(parent), mcfg)
    return parent


def _load_data(regime: Regime, cfg: TrainConfig, mcfg: ViTConfig, info: distributed.DistInfo) -> RegimeData:
    """The regime's data, loaded by rank 0 first so it alone builds any dataset cache."""
    if not info.is_main:
        distributed.barrier(info)
    data = regime.load_data(cfg, mcfg)
    if info.is_main:
        distributed.barrier(info)
    return data


def _build_model(
    cfg: TrainConfig, mcfg: ViTConfig, regime: Regime, data: RegimeData, parent: dict | None, device
) -> tuple[nn.Module, nn.Module, list[dict]]:
    """Encoder (fresh, or the --init parent's), the regime's head and the lineage, on ``device``.
    A fresh encoder is built even when the parent replaces it, so the head's initialisation draws the
    same numbers with and without --init."""
    encoder, lineage = ViNy(mcfg), []
    if parent is not None:
        encoder = encoder_from_checkpoint(parent, cfg.init)
        lineage = _lineage_from(cfg.init, parent)
    head = regime.make_head(mcfg, data)
    unused_cls_frozen(encoder, regime)
    encoder.to(device), head.to(device)
    return encoder, head, lineage


def _write_run_files(
    run_dir: Path, cfg: TrainConfig, data: RegimeData, info, train_set, micro: int, streams: int
) -> None:
    write_json(run_dir / "config.json", cfg.to_dict())
    write_json(
        run_dir / "data.json",
        {
            **data.info,
            "world_size": info.world_size,
            "train_set_on": str(train_set.images.device),
            "micro_batch": micro,
            "streams": streams,
        },
    )


def _restore(
    state: dict | None, run_dir: Path, encoder, head, optimizer, scheduler
) -> tuple[int, list[dict]]:
    """Load a --resume checkpoint's weights and optimiser state; returns (first epoch to run, history)."""
    if state is None:
        return 0, []
    load_state_strict(encoder, state["encoder"], f"encoder in {run_dir / LAST}")
    load_state_strict(head, state["head"], f"head in {run_dir / LAST}")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["epoch"], list(state["history"])


def _step_module(
    regime: Regime, encoder: nn.Module, head: nn.Module, use_compile: bool, info, device
) -> nn.Module:
    """The ``TrainStep``, wrapped in DistributedDataParallel under torchrun. Every trainable parameter
    takes part in its forward: the CLS token is frozen where unused (``unused_cls_frozen``)."""
    step: nn.Module = TrainStep(regime, encoder, head, use_compile)
    if info.enabled:
        step = torch.nn.parallel.DistributedDataParallel(
            step, device_ids=[device.index] if device.type == "cuda" else None
        )
    return step


def _resident(train_set, device: torch.device):
    """The training set on ``device`` when that is a GPU with room for it (a quarter of its free
    memory at most), so batches never cross from the host; otherwise the set as it is."""
    if device.type != "cuda":
        return train_set
    free, _total = torch.cuda.mem_get_info(device)
    return train_set.to(device) if train_set.nbytes <= free // 4 else train_set
