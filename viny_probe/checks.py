"""Input validation shared by the diagnostics and the data helpers they use: every public function checks its arguments here, so
a wrong shape fails at the boundary with a message that names the argument and the expected form."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from viny_probe.errors import VinyError

ArrayLike = torch.Tensor | np.ndarray


def _as_tensor(value: ArrayLike, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise VinyError(f"{name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def _shape(t: torch.Tensor) -> str:
    return str(tuple(t.shape))


def as_float(value: ArrayLike, name: str, ndim: int | tuple[int, ...], form: str) -> torch.Tensor:
    """``value`` as a floating tensor with ``ndim`` dimensions, all finite and none of size 0: a floating
    dtype stays as it is (float64, float32 and the bfloat16 / float16 token storage dtypes: a
    half-precision set is never copied whole to float32 here; every caller upcasts chunk by chunk),
    anything else becomes float32. ``form`` is the expected shape, for the message."""
    t = _as_tensor(value, name)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if t.ndim not in allowed:
        raise VinyError(f"{name} must have shape {form}, got {_shape(t)}")
    if t.numel() == 0:
        raise VinyError(f"{name} must not be empty, got shape {_shape(t)}")
    if t.dtype == torch.bool or t.is_complex():
        raise VinyError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.float()
    if not all_finite(t):
        raise VinyError(f"{name} contains NaN or infinite values")
    return t


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value is finite. A finite sum settles it in one pass without a temporary
    (``torch.isfinite`` allocates a full-size copy: 500 MB for 1,000 x 196 x 384 tokens); only a
    non-finite sum (a NaN or infinity, or an overflow) is checked value by value, in chunks."""
    if bool(torch.isfinite(t.sum())):
        return True
    rows = max(1, (1 << 22) // max(1, t[0].numel())) if t.ndim else 1
    flat = t if t.ndim else t.reshape(1)
    return all(bool(torch.isfinite(flat[s : s + rows]).all()) for s in range(0, len(flat), rows))


def as_embeddings(
    value: ArrayLike, name: str = "emb", min_images: int = 1, min_patches: int = 1
) -> torch.Tensor:
    """Patch embeddings ``(N, P, D)`` as a float tensor."""
    t = as_float(value, name, 3, "(N, P, D): N images, P patches, D channels")
    n, p, _ = t.shape
    if n < min_images:
        raise VinyError(f"{name} needs at least {min_images} images (N), got shape {_shape(t)}")
    if p < min_patches:
        raise VinyError(f"{name} needs at least {min_patches} patches (P), got shape {_shape(t)}")
    return t


def grid_side(num_patches: int, name: str = "emb") -> int:
    """Side g of the square patch grid holding ``num_patches`` = g * g patches."""
    g = math.isqrt(num_patches)
    if g * g != num_patches:
        raise VinyError(
            f"{name} has P = {num_patches} patches, which is not a square grid (P must be g * g, e.g. 64 = 8 x 8)"
        )
    return g


# A patch with no labelled pixel (all its mask pixels are the dataset's ignore value): scored nowhere.
UNLABELLED = -1


def as_labels(value: ArrayLike, name: str, shape: tuple[int, ...], form: str) -> torch.Tensor:
    """Integer class labels >= 0 (or ``UNLABELLED``, left out of fits and scores) of exactly ``shape``,
    as int64."""
    t = _as_tensor(value, name)
    if tuple(t.shape) != tuple(shape):
        raise VinyError(f"{name} must have shape {form} = {tuple(shape)}, got {_shape(t)}")
    if t.dtype.is_floating_point or t.is_complex() or t.dtype == torch.bool:
        raise VinyError(f"{name} must hold integer class indices, got dtype {t.dtype}")
    t = t.long()
    if t.numel() and int(t.min()) < UNLABELLED:
        raise VinyError(
            f"{name} must hold class indices >= 0 (or {UNLABELLED}: unlabelled), found {int(t.min())}"
        )
    return t


def as_masks(value: ArrayLike, name: str, patch_size: int, ndim: int = 3) -> torch.Tensor:
    """Trimap masks ``(N, H, W)`` (or ``(H, W)`` with ndim=2) with H = W a multiple of ``patch_size``."""
    check_positive_int(patch_size, "patch_size")
    form = "(N, H, W)" if ndim == 3 else "(H, W)"
    t = _as_tensor(value, name)
    if t.ndim != ndim:
        raise VinyError(f"{name} must have shape {form}, got {_shape(t)}")
    if t.dtype.is_floating_point or t.is_complex() or t.dtype == torch.bool:
        raise VinyError(f"{name} must hold integer trimap classes (uint8), got dtype {t.dtype}")
    h, w = t.shape[-2:]
    if h != w or h == 0 or h % patch_size:
        raise VinyError(
            f"{name} must be square with a side that is a multiple of patch_size = {patch_size}, "
            f"got {h}x{w} (shape {_shape(t)})"
        )
    return t


def max_workers() -> int:
    """The most decode threads / loader workers a ``--workers`` may ask for: four per CPU core, at least
    32 (decoding waits on the disk too, so a few more threads than cores can help; 1000 cannot)."""
    return max(32, 4 * (os.cpu_count() or 1))


def check_range(
    value: float, flag: str, low: float | None = None, high: float | None = None, low_open: bool = False
) -> None:
    """A numeric option within ``[low, high]`` (``(low, ...`` with ``low_open``) and finite; else one line
    naming the option as typed: ``--workers must be between 0 and 16 (got -1)``. NaN and infinities are
    out of every range (a float option's message says "a finite number")."""
    number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    ok = (
        number
        and math.isfinite(value)
        and (low is None or (value > low if low_open else value >= low))
        and (high is None or value <= high)
    )
    if ok:
        return
    if low is not None and high is not None:
        want = f"in ({low}, {high}]" if low_open else f"between {low} and {high}"
    elif low is not None:
        want = f"{'>' if low_open else '>='} {low}"
    else:
        want = f"<= {high}"
    kind = "a finite number " if isinstance(value, float) else ""
    raise VinyError(f"{flag} must be {kind}{want} (got {value!r})")


def check_positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise VinyError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def as_labelled_patches(
    train_emb: ArrayLike, train_labels: ArrayLike, test_emb: ArrayLike, test_labels: ArrayLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Validate a train/test pair of ``(N, P, D)`` embeddings with ``(N, P)`` patch labels; same D in both."""
    train_emb = as_embeddings(train_emb, "train_emb")
    test_emb = as_embeddings(test_emb, "test_emb")
    if train_emb.shape[2] != test_emb.shape[2]:
        raise VinyError(
            f"train_emb and test_emb must have the same number of channels D, "
            f"got {train_emb.shape[2]} and {test_emb.shape[2]}"
        )
    train_labels = as_labels(train_labels, "train_labels", tuple(train_emb.shape[:2]), "(N, P) of train_emb")
    test_labels = as_labels(test_labels, "test_labels", tuple(test_emb.shape[:2]), "(N, P) of test_emb")
    return train_emb, train_labels, test_emb, test_labels
