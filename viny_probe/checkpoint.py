"""Checkpoints: plain dicts of tensors and Python scalars, loaded with ``weights_only=True`` (no code runs).

A checkpoint carries its format version, regime, resolved config, model config, encoder and head
weights, optimiser/scheduler state, epoch, metrics and its lineage: the chain of stages (regime,
dataset, file digest) the encoder went through. Every write is atomic (temp file, fsync, rename); one
that fails on a full disk is a one-line DiskFullError naming the file (docs/reliability.md).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checks import all_finite
from .errors import VinyError
from .model import ViNy, ViTConfig, model_config

FORMAT_VERSION = 2
# Format 1 was written before viny ran the study's token path: its encoders had the CLS token in the
# blocks in every stage, so they are read with ``cls_in_sequence=True`` (as they were trained).
CLS_PATH_FORMAT = 2

# A write that fails for want of room: a full disk, a full quota, or over the process's file-size limit.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
TEMP_SUFFIX = ".tmp"  # atomic_write_bytes' temp files are ``.<name>.<random>.tmp`` beside the target
DISK_FULL_ADVICE = (
    "Free space (or raise the file-size limit, `ulimit -f`) and run the same command again; "
    "a training run continues from its last checkpoint with --resume."
)


class DiskFullError(VinyError):
    """A write that failed for want of room (ENOSPC, EDQUOT, EFBIG), in one line: the file, the reason
    and ``advice``. Raised only after the temp file is removed: the file that was there stays whole."""

    def __init__(self, path: Path, error_number: int, advice: str = DISK_FULL_ADVICE) -> None:
        self.path, self.errno = Path(path), error_number
        name = errno.errorcode.get(error_number, str(error_number))
        self.reason = f"{os.strerror(error_number)} ({name})"
        super().__init__(f"cannot write {path}: {self.reason}. {advice}")


def disk_full_cause(error: BaseException | None) -> OSError | None:
    """The OSError of a full disk or a file-size limit behind ``error``, following its cause/context
    chain (``torch.save`` reports a failed write as a RuntimeError whose context is the OSError)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def disk_full_message(error: BaseException) -> str | None:
    """One line for a write that failed for want of room anywhere in viny (None for any other error):
    the file when the error names it, the reason, and what to do."""
    if isinstance(error, DiskFullError):
        return str(error)
    full = disk_full_cause(error)
    if full is None:
        return None
    where = f" {full.filename}" if full.filename else " a file"
    name = errno.errorcode.get(full.errno, str(full.errno))
    return f"cannot write{where}: {os.strerror(full.errno)} ({name}). {DISK_FULL_ADVICE}"


_PAUSE_ENV = "VINY_TEST_PAUSE_IN_WRITE"
_pause_counts: dict[str, int] = {}


def _pause_for_tests(path: Path, tmp: str) -> None:
    """TEST ONLY (tests/faults), unset in normal use: ``VINY_TEST_PAUSE_IN_WRITE=NAME:N:SECONDS`` makes
    the N-th atomic write of a file named NAME in this process say so on stderr and sleep SECONDS after
    its temp file is written and synced, before the rename, so that a test can kill it inside the write."""
    spec = os.environ.get(_PAUSE_ENV)
    if not spec:
        return
    name, nth, seconds = spec.rsplit(":", 2)
    if path.name != name:
        return
    _pause_counts[name] = _pause_counts.get(name, 0) + 1
    if _pause_counts[name] == int(nth):
        print(f"viny-test: paused in write {nth} of {path} (temp {tmp})", file=sys.stderr, flush=True)
        time.sleep(float(seconds))


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a crash right after it keeps the new name)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is still atomic
    finally:
        os.close(fd)


def _umask_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _umask_file_mode()


def atomic_write_bytes(path: Path, writer, before_rename=None) -> None:
    """Call ``writer(file_object)`` on a temp file beside ``path``, sync it, then rename it over ``path``.

    A crash or kill at any point leaves ``path`` as it was or whole and new, never part-written (a temp
    file may stay behind: ``remove_temp_files``). ``before_rename()``, if given, runs once the temp file
    is synced; when it raises, ``path`` is left as it was. A write that fails for want of room raises
    DiskFullError naming the file (``path``, or the one ``before_rename`` failed on), after removing the
    temp file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp makes 0600; the file gets what open() would have given it
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        _pause_for_tests(path, tmp)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        full = disk_full_cause(error)
        if full is not None:
            raise DiskFullError(full.filename or path, full.errno) from None
        raise
    _fsync_folder(path.parent)


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of atomic writes in ``folder`` that a killed process left behind; call it
    only where no other process writes (a run folder being resumed). Returns the files removed."""
    stray = sorted(Path(folder).glob(f".*{TEMP_SUFFIX}"))
    for path in stray:
        path.unlink(missing_ok=True)
    return stray


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON; pass results through :func:`jsonable` first when
    they may hold tensors, numpy values, paths or non-finite floats."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def jsonable(value: Any) -> Any:
    """Plain JSON types: tensors and arrays to lists, numpy scalars to Python, paths to strings,
    NaN and infinities to None (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_checkpoint(path: Path, payload: dict, before_rename=None) -> str:
    """Save atomically (``before_rename`` as in ``atomic_write_bytes``); return the file's sha256 digest."""
    payload = {"format_version": FORMAT_VERSION, **payload}
    atomic_write_bytes(path, lambda f: torch.save(payload, f), before_rename)
    return file_digest(path)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_IMPORT_ADVICE = (
    "A plain state_dict of the study authors' ViT can be converted with `viny import-checkpoint`."
)
_DAMAGED_ADVICE = "Train the run that wrote it again, or give another checkpoint."
_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
_WEIGHTS_ONLY_REFUSAL = re.compile(r"WeightsUnpickler error:\s*(\S[^\n]*)")


def damage(path: Path) -> str | None:
    """How the file at ``path`` is damaged, read off its bytes without loading it: empty, zeroed, or a
    zip archive (torch's format) cut short. None when it looks whole."""
    if path.stat().st_size == 0:
        return f"{path} is empty (0 bytes): the write that made it was cut short"
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"\0\0\0\0":
        return f"{path} is zeroed (its data never reached the disk)"
    if head[:2] == b"PK" and not zipfile.is_zipfile(path):
        return f"{path} is truncated (a zip archive without its central directory)"
    return None


def _load_failure(path: Path, error: Exception) -> tuple[str, bool]:
    """Why torch could not load ``path``, in one line, and whether the file is damaged (empty or cut
    short) rather than foreign (another format, or pickled code)."""
    text = str(error)
    broken = damage(path)
    if broken:
        return broken, True
    unsafe = _UNSAFE_GLOBAL.search(text)
    if unsafe:
        why = (
            f"{path} holds pickled code ({unsafe[1]}), which viny refuses to run: a viny checkpoint holds "
            "only tensors and plain values"
        )
        return why, False
    if text.startswith("Weights only load failed"):
        # Not torch's first line: it suggests weights_only=False, which would run whatever is pickled.
        refusal = _WEIGHTS_ONLY_REFUSAL.search(text)
        detail = f" ({refusal[1].strip()})" if refusal else ""
        why = (
            f"{path} is not a file of tensors and plain values that torch can read without running code"
            f"{detail}; viny refuses to load it"
        )
        return why, False
    if isinstance(error, EOFError):
        return f"{path} is truncated or damaged ({type(error).__name__})", True
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no message")
    return f"{path} is not a loadable checkpoint ({type(error).__name__}: {first[:200]})", False


def torch_load_safely(path: Path, what: str, if_damaged: str = _DAMAGED_ADVICE, if_foreign: str = "") -> Any:
    """``torch.load(path, weights_only=True)``: nothing in the file is executed. A file torch cannot
    read so is a one-line VinyError (empty, cut short, pickled code named, foreign), with ``if_damaged``
    or ``if_foreign`` as the way forward; never torch's advice to load it unsafely. ``what`` names what
    the file was expected to be."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign/corrupt files
        why, damaged = _load_failure(Path(path), e)
        advice = if_damaged if damaged else (if_foreign or f"Expected {what}.")
        raise VinyError(f"{why}. {advice}") from None


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", if_damaged: str = _DAMAGED_ADVICE
) -> dict:
    """Load a viny checkpoint without unpickling code. A missing, empty, damaged or foreign file is a
    one-line VinyError naming it and what to do: ``if_damaged`` for an empty or truncated file (the
    caller knows the way forward, e.g. resume's), the import command for a foreign one."""
    path = Path(path)
    if not path.is_file():
        raise VinyError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for foreign/corrupt files
        why, damaged = _load_failure(path, e)
        raise VinyError(f"{why}. {if_damaged if damaged else _IMPORT_ADVICE}") from None
    if not isinstance(ckpt, dict) or "encoder" not in ckpt or "format_version" not in ckpt:
        raise VinyError(
            f"{path} is not a viny checkpoint (no 'encoder'/'format_version' entries). If it is the study "
            "authors' state_dict, convert it with `viny import-checkpoint FILE OUT`."
        )
    if ckpt["format_version"] > FORMAT_VERSION:
        raise VinyError(
            f"{path} has checkpoint format {ckpt['format_version']}; this viny reads up to {FORMAT_VERSION}"
        )
    for part in ("encoder", "head"):
        if isinstance(ckpt.get(part), Mapping):
            check_finite_state(ckpt[part], f"{part} in {path}")
    return ckpt


def checkpoint_model_config(ckpt: dict) -> ViTConfig:
    """The ViTConfig a loaded checkpoint's encoder runs with. A checkpoint older than format 2 (no
    ``cls_in_sequence`` recorded) ran the CLS token through the blocks in every stage: read it so."""
    fields = dict(ckpt["model_config"])
    if ckpt.get("format_version", FORMAT_VERSION) < CLS_PATH_FORMAT:
        fields.setdefault("cls_in_sequence", True)
    return model_config(fields)


def encoder_from_checkpoint(ckpt: dict, path: str | Path = "checkpoint") -> ViNy:
    """Build the encoder of a loaded checkpoint, strictly: a mismatch names missing/unexpected keys."""
    encoder = ViNy(checkpoint_model_config(ckpt))
    load_state_strict(encoder, ckpt["encoder"], f"encoder in {path}")
    return encoder


NON_FINITE_ADVICE = (
    "give weights saved before training diverged (an earlier checkpoint), or train again with a lower --lr "
    "or --precision fp32"
)


def check_finite_state(state: Mapping[str, Any], what: str, advice: str = NON_FINITE_ADVICE) -> None:
    """Every floating tensor of ``state`` finite; else a one-line VinyError naming ``what`` (the file
    and part it was read from) and the first tensor, in ``state``'s order, holding NaN or infinity."""
    for name, t in state.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not all_finite(t.detach()):
            raise VinyError(f"{what}: tensor {name!r} holds NaN or infinite values; {advice}")


def load_state_strict(module: torch.nn.Module, state: dict, what: str) -> None:
    """Load ``state`` into ``module``: the same keys and shapes (else a VinyError naming the missing,
    unexpected and mismatched ones) and every floating tensor finite (``check_finite_state``). Every
    file's weights reach a module through here: checkpoints, ``--weights``, exports, the authors' file."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = [k for k in set(own) & set(state) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if wrong_shape:
            shapes = [
                f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                for k in sorted(wrong_shape)[:3]
            ]
            parts.append(f"shape mismatch {shapes}")
        raise VinyError(f"{what} does not match the model architecture: " + "; ".join(parts))
    check_finite_state(state, what)
    module.load_state_dict(state)
