"""Reference-patch similarity maps (Fig 6): cosine between one patch and every patch of the same image,
the study's choice of reference patches, and parsing of user-given patch / pixel positions."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from viny_probe.checks import ArrayLike, as_float, as_masks, check_positive_int, grid_side
from viny_probe.data.base import TRIMAP, MaskClasses
from viny_probe.data.patch_labels import patch_class_fractions
from viny_probe.errors import VinyError

DEFAULT_GRID = 8  # ViNy: 128 px input / 16 px patches
MAX_FOREGROUND_BOUNDARY = 0.2  # the study's foreground reference may have at most this boundary fraction

Patch = tuple[int, int]  # (row, col) on the patch grid


def _check_patch(row: int, col: int, grid: int, argument: str) -> Patch:
    if not (0 <= row < grid and 0 <= col < grid):
        raise VinyError(
            f"{argument} = ({row}, {col}) is outside the {grid}x{grid} patch grid: row and column must be in 0..{grid - 1}"
        )
    return int(row), int(col)


def _parse_pair(text: str, argument: str, form: str) -> tuple[int, int]:
    parts = str(text).replace(" ", "").split(",")
    try:
        first, second = (int(part) for part in parts)
    except ValueError:
        raise VinyError(f"{argument} must be two integers '{form}', got {text!r}") from None
    return first, second


def parse_patch(text: str, grid: int = DEFAULT_GRID, argument: str = "patch") -> Patch:
    """``"R,C"`` -> ``(row, col)`` on a ``grid`` x ``grid`` patch grid; VinyError naming ``argument`` otherwise."""
    grid = check_positive_int(grid, "grid")
    row, col = _parse_pair(text, argument, "ROW,COL")
    return _check_patch(row, col, grid, argument)


def pixel_to_patch(
    y: int, x: int, patch_size: int = 16, image_size: int = 128, argument: str = "pixel"
) -> Patch:
    """The ``(row, col)`` of the patch holding pixel (y, x) of an ``image_size`` square image."""
    patch_size = check_positive_int(patch_size, "patch_size")
    image_size = check_positive_int(image_size, "image_size")
    if image_size % patch_size:
        raise VinyError(f"image_size = {image_size} must be a multiple of patch_size = {patch_size}")
    if not (0 <= y < image_size and 0 <= x < image_size):
        raise VinyError(
            f"{argument} = ({y}, {x}) is outside the {image_size}x{image_size} image: "
            f"y and x must be in 0..{image_size - 1}"
        )
    return y // patch_size, x // patch_size


def parse_pixel(text: str, patch_size: int = 16, image_size: int = 128, argument: str = "pixel") -> Patch:
    """``"Y,X"`` (pixel coordinates) -> ``(row, col)`` of the patch holding that pixel."""
    y, x = _parse_pair(text, argument, "Y,X")
    return pixel_to_patch(y, x, patch_size, image_size, argument)


def _patch_position(patch: int | Patch, grid: int, argument: str) -> Patch:
    if isinstance(patch, int | np.integer) and not isinstance(patch, bool):
        if not 0 <= patch < grid * grid:
            raise VinyError(
                f"{argument} = {patch} is outside the {grid * grid} patches: it must be in 0..{grid * grid - 1}"
            )
        return int(patch) // grid, int(patch) % grid
    if isinstance(patch, tuple | list) and len(patch) == 2:
        return _check_patch(int(patch[0]), int(patch[1]), grid, argument)
    raise VinyError(f"{argument} must be a patch index (int) or a (row, col) pair, got {patch!r}")


def similarity_map(emb: ArrayLike, patch: int | Patch) -> np.ndarray:
    """Cosine similarity between one reference patch and every patch of the same image.

    emb:   ``(P, D)`` patch embeddings of ONE image, P = g * g in row-major order.
    patch: the reference, as a row-major index in 0..P-1 or a ``(row, col)`` pair.
    Returns ``(g, g)`` float32; the reference's own entry is 1.
    """
    emb = as_float(emb, "emb", 2, "(P, D): the patches of one image")
    g = grid_side(emb.shape[0], "emb")
    row, col = _patch_position(patch, g, "patch")
    tokens = torch.nn.functional.normalize(emb.double(), dim=-1)
    return (tokens @ tokens[row * g + col]).reshape(g, g).float().numpy()


def similarity_maps(emb: ArrayLike, refs: Mapping[str, int | Patch]) -> dict[str, np.ndarray]:
    """``similarity_map`` for each named reference: ``{name: (g, g)}``. emb: ``(P, D)`` of one image."""
    return {name: similarity_map(emb, patch) for name, patch in refs.items()}


BACKGROUND_CHOICES = ("study", "most-background-corner")


def choose_reference_patches(
    mask: ArrayLike | None = None,
    patch_size: int = 16,
    grid: int | None = None,
    background: str = "study",
    classes: MaskClasses = TRIMAP,
) -> dict[str, Patch]:
    """The study's reference patches for one image, as ``{name: (row, col)}``.

    mask: ``(H, W)`` mask classes of ``classes`` (default a trimap: 0 pet, 1 background, 2 boundary),
    H = W = g * patch_size. Another dataset's classes play the parts its ``MaskClasses`` gives them: the
    foreground is every class but the background and boundary ones; without a boundary class there is
    no "boundary" reference (and no boundary limit on the foreground's); without a background class the
    most-background corner is the top-left one. Picks
      - "background": patch (0, 0), as the study's code does (``background="study"``, the default),
        or with ``background="most-background-corner"`` the corner patch with the largest background
        fraction (ties: top-left, top-right, bottom-left, bottom-right, in that order);
      - "foreground": the patch with the largest pet fraction among those whose boundary fraction is
        <= 0.2 (all patches if none is);
      - "boundary": the patch with the largest boundary fraction;
      other ties go to the first patch in row-major order.
    With no mask (a plain image): {"centre": (g // 2, g // 2), "top_left_corner": (0, 0)} on a
    ``grid`` x ``grid`` grid (default 8).
    """
    if background not in BACKGROUND_CHOICES:
        raise VinyError(f"background must be one of {', '.join(BACKGROUND_CHOICES)}, got {background!r}")
    if mask is None:
        g = check_positive_int(DEFAULT_GRID if grid is None else grid, "grid")
        return {"centre": (g // 2, g // 2), "top_left_corner": (0, 0)}
    mask = as_masks(mask, "mask", patch_size, ndim=2)
    g = mask.shape[0] // patch_size
    if grid is not None and grid != g:
        raise VinyError(
            f"grid = {grid} disagrees with the mask: {mask.shape[0]} px / patch_size {patch_size} = {g}"
        )
    fractions = patch_class_fractions(mask[None], patch_size, classes.num_classes)[0].numpy()  # (P, K)
    roles = {classes.background, classes.boundary}
    foreground_share = fractions[:, [c for c in range(classes.num_classes) if c not in roles]].sum(axis=1)
    zero = np.zeros(len(fractions))
    background_share = zero if classes.background is None else fractions[:, classes.background]
    boundary_share = zero if classes.boundary is None else fractions[:, classes.boundary]
    corners = [0, g - 1, (g - 1) * g, g * g - 1]
    most_background = corners[int(np.argmax(background_share[corners]))]
    pet = np.where(boundary_share <= MAX_FOREGROUND_BOUNDARY, foreground_share, -np.inf)
    foreground = int(np.argmax(pet)) if np.isfinite(pet).any() else int(np.argmax(foreground_share))
    chosen = [("background", 0 if background == "study" else most_background), ("foreground", foreground)]
    if classes.boundary is not None:
        chosen.append(("boundary", int(np.argmax(boundary_share))))
    return {name: (index // g, index % g) for name, index in chosen}
