"""Checkpoints: plain dicts of tensors and Python scalars, loaded with ``weights_only=True`` (no code runs).

A checkpoint carries its format version, regime, resolved config, model config, encoder and head
weights, optimiser/scheduler state, epoch, metrics and its lineage: the chain of stages (regime,
dataset, file digest) the encoder went through. Every write is atomic (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import VinyError
from .model import ViNy, ViTConfig, model_config

FORMAT_VERSION = 2
# Format 1 was written before viny ran the study's token path: its encoders had the CLS token in the
# blocks in every stage, so they are read with ``cls_in_sequence=True`` (as they were trained).
CLS_PATH_FORMAT = 2


def atomic_write_bytes(path: Path, writer) -> None:
    """Call ``writer(file_object)`` on a temp file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def save_checkpoint(path: Path, payload: dict) -> str:
    """Save atomically; return the file's sha256 digest."""
    payload = {"format_version": FORMAT_VERSION, **payload}
    atomic_write_bytes(path, lambda f: torch.save(payload, f))
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
    if isinstance(error, EOFError):
        return f"{path} is truncated or damaged ({type(error).__name__})", True
    first = next((line.strip() for line in text.splitlines() if line.strip()), "no message")
    return f"{path} is not a loadable checkpoint ({type(error).__name__}: {first[:200]})", False


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


def load_state_strict(module: torch.nn.Module, state: dict, what: str) -> None:
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
    module.load_state_dict(state)
