"""The embedded default datasets: deterministic synthetic stand-ins for Oxford-IIIT Pet, Intel scenes and ImageNet.

Three generators, each ``f(n, size=128, seed=0) -> ImageSet``:

- ``synthetic_pets`` ("toy-pets"): one smooth "animal" per image on a photo background, a 3-class trimap
  (pet / background / a thin boundary band around the outline) and an image-level type label
  (3 shape families x 3 coat patterns = 9 types).
- ``synthetic_scenes`` ("toy-scenes"): 6 scene classes named like Intel Image Classification, each a
  global composition (sky, horizon, ridges, water, facades, roads...), balanced labels, no masks.
- ``synthetic_unlabeled`` ("toy-unlabeled"): a mix of pet-like images, scenes and plain photo crops,
  no labels, for SimMIM pre-training.

Images are rendered analytically at the requested size (never resized), in float64, and rounded to
uint8 once. Each image draws from its own ``numpy.random.SeedSequence([seed, stream, IMAGE, i])``;
only the labels (balanced within each block of ``CHUNK`` images) and the unlabeled set's mix come from
the block's ``SeedSequence([seed, stream, BLOCK, chunk])``. So: the same seed gives identical bytes on
any machine; image i is the same whether it is generated alone, among the first 20 or among 3,000
(``indices=`` generates only the images asked for); and the three generators draw from disjoint
streams. Textures are scikit-image's bundled sample photos (CC0 / public domain,
see docs/data.md); a photo that cannot be loaded is replaced by a procedural tile.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..errors import VinyError
from . import _textures as tx
from .base import BACKGROUND, BOUNDARY, PET, ImageSet

CHUNK = 36  # images per random stream: a multiple of the 9 pet types and the 6 scene classes
_STREAM_PETS, _STREAM_SCENES, _STREAM_UNLABELED = 1, 2, 3

PET_FAMILIES = ("cat", "dog", "rabbit")
PET_COATS = ("tabby", "spotted", "bicolour")
PET_TYPES = [f"{coat}-{family}" for family in PET_FAMILIES for coat in PET_COATS]
SCENE_CLASSES = ["buildings", "forest", "glacier", "mountain", "sea", "street"]
UNLABELED_MIX = {"pets": 0.35, "scenes": 0.35, "photos": 0.30}

BOUNDARY_WIDTH_128 = 4.5  # trimap boundary band width in pixels at 128 px; scales with size (>= 1.6 px)


def _check_args(n, size, seed) -> None:
    def is_int(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not is_int(n) or n < 1:
        raise VinyError(f"n must be an integer >= 1 (the number of images to generate), got {n!r}")
    if not is_int(size) or size < 32 or size % 8:
        raise VinyError(
            f"size must be an integer multiple of 8 and >= 32 (image side in pixels), got {size!r}"
        )
    if not is_int(seed) or seed < 0:
        raise VinyError(f"seed must be a non-negative integer, got {seed!r}")


_BLOCK, _IMAGE = 0, 1  # the two kinds of random stream: a block's labels, one image's pixels


def _block_seq(seed: int, stream: int, chunk: int) -> np.random.SeedSequence:
    """The labels (and the unlabeled mix) of images ``chunk * CHUNK`` .. ``chunk * CHUNK + CHUNK - 1``."""
    return np.random.SeedSequence([int(seed), stream, _BLOCK, int(chunk)])


def _image_seq(seed: int, stream: int, index: int) -> np.random.SeedSequence:
    """Everything image ``index`` draws (its pixels and mask): its own stream, whatever else is made."""
    return np.random.SeedSequence([int(seed), stream, _IMAGE, int(index)])


def _gen(ss: np.random.SeedSequence) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(ss))


def _block_values(
    draw: Callable[[np.random.Generator], np.ndarray], indices: np.ndarray, seed: int, stream: int
):
    """``draw(block generator)`` (CHUNK values) read at each of ``indices``: one draw per block touched."""
    blocks = {c: draw(_gen(_block_seq(seed, stream, c))) for c in np.unique(indices // CHUNK).tolist()}
    return np.array([blocks[i // CHUNK][i % CHUNK] for i in indices.tolist()], dtype=np.int64)


def _indices(n: int, indices) -> np.ndarray:
    """The image indices to generate: ``indices`` (each in [0, n)) or all n."""
    if indices is None:
        return np.arange(n, dtype=np.int64)
    out = np.asarray(indices, dtype=np.int64).reshape(-1)
    if out.size == 0 or out.min() < 0 or out.max() >= n:
        raise VinyError(f"indices must be image indices in [0, {n}) (at least one), got {list(indices)[:8]}")
    return out


def _one_blas_thread():
    """Limit BLAS to one thread while rendering: the matrices are small, and BLAS threads on top of the
    chunk threads only spin against each other (2 s instead of 0.2 s for the photo atlas on 2 cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, run as is
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _map_images(render: Callable, items: list, size: int) -> list:
    """render(item) for every image, in order; images run on a few threads (numpy releases the GIL).

    Each image depends only on its own SeedSequence, so the result does not depend on the thread count
    nor on which other images are made.
    """
    workers = min(len(items), os.cpu_count() or 1, 4)
    with _one_blas_thread():
        tx.atlas(2 * size)  # build shared caches once, before any thread needs them
        tx._atlas_rows(2 * size)
        _template_stats()
        if workers <= 1:
            return [render(item) for item in items]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(render, items))


def _b(a, ndim: int = 3) -> np.ndarray:
    """(B,) -> (B, 1, ..., 1) with ndim dimensions in all, for broadcasting over pixels."""
    a = np.asarray(a)
    return a.reshape(a.shape[0], *([1] * (ndim - 1)))


# ==================================================================================================
# Pets: one animal-like object on a photo background

# Part templates in the animal's own frame (u forward towards the head, v up), one row per part slot:
# (centre u, centre v, half-length a, half-width b, angle in degrees, taper towards the +a end).
# A row of zeros is an unused slot; every family has the same number of slots so a batch is one array.
_PARTS = {
    "cat": [
        (0.00, 0.00, 1.00, 0.66, 0, 0.0),  # body
        (0.95, 0.55, 0.46, 0.42, 0, 0.0),  # head
        (1.30, 0.45, 0.18, 0.14, 0, 0.0),  # muzzle
        (0.76, 1.00, 0.26, 0.16, 105, 0.9),  # pointed ears
        (1.14, 0.97, 0.26, 0.16, 72, 0.9),
        (-1.12, 0.62, 0.60, 0.10, 118, 0.5),  # tail, raised behind
        (0.58, -0.62, 0.36, 0.12, -90, 0.2),  # legs
        (0.30, -0.66, 0.34, 0.12, -90, 0.2),
        (-0.60, -0.52, 0.30, 0.15, -90, 0.2),
        (0, 0, 0, 0, 0, 0),
    ],
    "dog": [
        (0.00, 0.00, 1.15, 0.50, 0, 0.0),
        (1.30, 0.55, 0.42, 0.36, 10, 0.0),
        (1.72, 0.42, 0.32, 0.17, -10, 0.3),  # snout
        (1.10, 0.40, 0.36, 0.14, -75, 0.2),  # floppy ears
        (1.40, 0.50, 0.30, 0.12, -65, 0.2),
        (-1.42, 0.38, 0.42, 0.08, 145, 0.6),  # tail
        (0.80, -0.75, 0.45, 0.11, -90, 0.25),
        (0.55, -0.78, 0.45, 0.11, -90, 0.25),
        (-0.65, -0.75, 0.45, 0.11, -90, 0.25),
        (-0.90, -0.72, 0.45, 0.11, -90, 0.25),
    ],
    "rabbit": [
        (0.00, 0.00, 0.90, 0.75, 0, 0.0),
        (0.75, 0.60, 0.40, 0.36, 0, 0.0),
        (1.08, 0.50, 0.14, 0.12, 0, 0.0),
        (0.60, 1.30, 0.52, 0.13, 100, 0.3),  # long ears
        (0.86, 1.25, 0.52, 0.13, 78, 0.3),
        (-0.95, 0.15, 0.20, 0.18, 0, 0.0),  # round tail
        (0.45, -0.72, 0.32, 0.12, 0, 0.0),  # feet
        (-0.40, -0.70, 0.42, 0.15, 0, 0.0),
        (0, 0, 0, 0, 0, 0),
        (0, 0, 0, 0, 0, 0),
    ],
}
_N_PARTS = 10
_KAPPA = 14.0  # sharpness of the smooth union of parts (larger: crisper joints)

_PET_COLOURS = [
    (0.85, 0.52, 0.22),  # ginger
    (0.52, 0.34, 0.20),  # brown
    (0.16, 0.14, 0.13),  # black
    (0.56, 0.56, 0.57),  # grey
    (0.90, 0.82, 0.66),  # cream
    (0.80, 0.64, 0.36),  # golden
    (0.90, 0.89, 0.86),  # white
    (0.36, 0.23, 0.15),  # chocolate
]
_FLOOR_COLOURS = [
    (0.45, 0.60, 0.30),
    (0.62, 0.55, 0.45),
    (0.55, 0.55, 0.55),
    (0.55, 0.38, 0.25),
    (0.70, 0.45, 0.35),
    (0.35, 0.40, 0.30),
]
_WALL_COLOURS = [
    (0.85, 0.82, 0.75),
    (0.60, 0.65, 0.70),
    (0.75, 0.62, 0.50),
    (0.40, 0.45, 0.38),
    (0.90, 0.88, 0.85),
    (0.55, 0.35, 0.30),
]
_TEXTURE_TILES = [tx.TILE[k] for k in ("grass", "gravel", "brick", "coins", "text", "cell")]
# chelsea (a real cat) is kept out of pet backgrounds: a cat labelled "background" would be a lie
_PHOTO_TILES = [
    tx.TILE[k]
    for k in (
        "clock",
        "camera",
        "coffee",
        "astronaut",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
    )
]


def _part_fields(parts: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth union of tapered ellipses. parts (B, P, 6), angles in radians; u, v (B, S, S) -> (B, S, S).

    Each part contributes (1 - r) * half-width, roughly a signed distance in body units (> 0 inside);
    parts merge through a log-sum-exp soft maximum, which gives joints (neck, legs) organic fillets.
    """
    acc = np.zeros(np.broadcast_shapes(u.shape, v.shape))
    for k in range(parts.shape[1]):
        mu, mv, a, b, ang, taper = (_b(parts[:, k, j]) for j in range(6))
        active = a > 0
        a = np.where(active, a, 1.0)
        b = np.where(active, b, 1.0)
        ca, sa = np.cos(ang), np.sin(ang)
        du, dv = u - mu, v - mv
        p = (ca * du + sa * dv) / a
        q = -sa * du + ca * dv
        w = b * (1 - taper * (np.clip(p, -1.0, 1.0) + 1) / 2)
        r = np.sqrt(p * p + (q / w) ** 2)
        acc += np.where(active, np.exp(_KAPPA * np.maximum((1 - r) * w, -3.0)), 0.0)
    return np.log(np.maximum(acc, 1e-300)) / _KAPPA


@functools.lru_cache(maxsize=1)
def _template_stats() -> dict[str, tuple[float, float, float]]:
    """Area and centroid of each family's template at scale 1 (body units), to place and size pets."""
    h = 0.01
    t = np.arange(-3.0, 3.0, h)
    u, v = np.meshgrid(t, -t)
    stats = {}
    for fam, rows in _PARTS.items():
        parts = np.array(rows, dtype=np.float64)
        parts[:, 4] *= math.pi / 180
        inside = _part_fields(parts[None], u[None], v[None])[0] > 0
        stats[fam] = (inside.sum() * h * h, u[inside].mean(), v[inside].mean())
    return stats


def _axis(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised image coordinates of pixel centres on an n x n grid: X per column (right), Y per row (up)."""
    t = (np.arange(n) + 0.5) / n
    return 2 * t - 1, 1 - 2 * t


def _affine(coef: np.ndarray, n: int) -> np.ndarray:
    """A field a X + b Y + c on an n x n grid from per-image coefficients (B, 3): (B, n, n)."""
    X, Y = _axis(n)
    return (
        coef[:, 0, None, None] * X[None, None, :]
        + coef[:, 1, None, None] * Y[None, :, None]
        + coef[:, 2, None, None]
    )


def _waves(
    rng: np.random.Generator, cu: np.ndarray, cv: np.ndarray, n: int, k: int, f_lo: float, f_hi: float
) -> np.ndarray:
    """Mean of k plane waves over the animal's own frame (u, v), with random directions/frequencies/phases.

    cu, cv: (B, 3) affine coefficients of u and v in image coordinates. Because u and v are affine in
    (X, Y), each wave sin(aX + bY + c) = sin(aX) cos(bY + c) + cos(aX) sin(bY + c) is separable, so the
    sum is one small batched matrix product instead of k full-image sines. Returns (B, n, n).
    """
    b = len(cu)
    freq = tx.uniform(rng, f_lo, f_hi, (b, k))
    theta = tx.uniform(rng, 0, 2 * math.pi, (b, k))
    phase = tx.uniform(rng, 0, 2 * math.pi, (b, k))
    fu, fv = freq * np.cos(theta), freq * np.sin(theta)
    a = fu * cu[:, None, 0] + fv * cv[:, None, 0]
    bb = fu * cu[:, None, 1] + fv * cv[:, None, 1]
    c = fu * cu[:, None, 2] + fv * cv[:, None, 2] + phase
    X, Y = _axis(n)
    ax = a[:, :, None] * X  # (B, k, n)
    by = bb[:, :, None] * Y + c[:, :, None]
    left = np.concatenate([np.cos(by), np.sin(by)], 1).transpose(0, 2, 1)  # (B, n, 2k): rows
    right = np.concatenate([np.sin(ax), np.cos(ax)], 1)  # (B, 2k, n): columns
    return (left @ right) / k


def _crop_params(
    rng: np.random.Generator, tiles: list[int], b: int, zoom=(0.35, 1.0), rot: float = 0.25
) -> tuple:
    pick = np.asarray(tiles)[tx.randint(rng, len(tiles), b)]
    z = tx.uniform(rng, zoom[0], zoom[1], b)
    angle = tx.uniform(rng, -rot, rot, b) * tx.coin(rng, 0.4, b)
    flip = tx.coin(rng, 0.5, b)
    return pick, z, angle, flip, tx.uniform(rng, 0, 1, b), tx.uniform(rng, 0, 1, b)


def _crops(
    rng: np.random.Generator,
    tiles: list[int],
    b: int,
    size: int,
    zoom=(0.35, 1.0),
    rot: float = 0.25,
    only=None,
) -> np.ndarray:
    """Random crops (scale, flip, sometimes a small rotation) of random atlas tiles; only: subset to render."""
    params = _crop_params(rng, tiles, b, zoom, rot)
    if only is not None:
        params = tuple(p[only] for p in params)
    return tx.sample_tiles(params[0], size, *params[1:])


def _pet_background(rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    """Indoor/outdoor-like backgrounds: a floor/wall split, one full-frame photo crop, or one texture."""
    kind = tx.choice_p(rng, [0.55, 0.25, 0.20], b)  # split, photo, floor only
    wall_is_photo = tx.coin(rng, 0.5, b)
    need_floor = kind != 1
    need_photo = (kind == 1) | ((kind == 0) & wall_is_photo)
    need_wall = (kind == 0) & ~wall_is_photo
    floor_c, wall_c = tx.palette(rng, _FLOOR_COLOURS, b, 0.15), tx.palette(rng, _WALL_COLOURS, b, 0.1)
    floor_k, wall_k = tx.uniform(rng, 0.5, 1.3, b), tx.uniform(rng, 0.2, 0.8, b)
    horizon = tx.uniform(rng, 0.15, 0.7, b)
    tilt = tx.uniform(rng, -0.15, 0.15, b)
    blur = tx.uniform(rng, -1.0, 1.6, b) * size / 128  # depth of field (<= 0: sharp)
    out = np.empty((b, 3, size, size))
    floor = tx.tint(
        _crops(rng, _TEXTURE_TILES, b, size, only=need_floor), floor_c[need_floor], floor_k[need_floor]
    )
    wall = tx.tint(_crops(rng, _TEXTURE_TILES, b, size, only=need_wall), wall_c[need_wall], wall_k[need_wall])
    photo = tx.photometric(rng, _crops(rng, _PHOTO_TILES, b, size, zoom=(0.3, 0.9), only=need_photo), 0.8)
    out[need_floor] = floor
    out[need_photo & (kind == 1)] = photo[(kind == 1)[need_photo]]
    split = np.flatnonzero(kind == 0)
    if len(split):
        upper = np.empty((len(split), 3, size, size))
        upper[wall_is_photo[split]] = photo[(kind == 0)[need_photo]]
        upper[~wall_is_photo[split]] = wall
        x, y = tx.grid(size)
        t = tx.smoothstep(-0.01, 0.01, y - _b(horizon[split]) - _b(tilt[split]) * (x - 0.5))[:, None]
        out[split] = tx.lerp(upper, out[split], t)
    for i in np.flatnonzero(blur > 0.3):
        out[i] = tx.gaussian_blur(out[i], blur[i])
    return np.clip(out * (1 + 0.18 * tx.value_noise(rng, b, size, 2)), 0.0, 1.0)  # uneven illumination


def _pet_frame(rng: np.random.Generator, fam: np.ndarray):
    """Per-image jittered parts, pose, scale and position (uniform, not centred): the parts, the
    scale, and the animal's frame as affine functions of image coordinates, u = cu . (X, Y, 1),
    v = cv . (X, Y, 1)."""
    b = len(fam)
    stats = _template_stats()
    parts = np.stack([np.array(_PARTS[f], dtype=np.float64) for f in PET_FAMILIES])[fam]
    parts[:, :, 0:2] += tx.uniform(rng, -0.08, 0.08, (b, _N_PARTS, 2))
    parts[:, :, 2:4] *= tx.uniform(rng, 0.85, 1.15, (b, _N_PARTS, 2))
    parts[:, :, 4] = (parts[:, :, 4] + tx.uniform(rng, -14, 14, (b, _N_PARTS))) * math.pi / 180
    area, mu, mv = (np.array([stats[f][i] for f in PET_FAMILIES])[fam] for i in range(3))
    cover = tx.uniform(rng, 0.2, 0.68, b)  # fraction of the frame the whole animal would cover
    scale = np.sqrt(4 * cover / area)  # body units -> normalised image units ([-1, 1] across)
    theta = np.where(tx.coin(rng, 0.8, b), tx.uniform(rng, -0.45, 0.45, b), tx.uniform(rng, -1.6, 1.6, b))
    flip = np.where(tx.coin(rng, 0.5, b), -1.0, 1.0)
    cx, cy = tx.uniform(rng, -0.55, 0.55, b), tx.uniform(rng, -0.55, 0.55, b)
    ct, st = np.cos(theta) / scale, np.sin(theta) / scale
    cu = np.stack([ct * flip, st * flip, -(ct * cx + st * cy) * flip + mu], 1)
    cv = np.stack([-st, ct, st * cx - ct * cy + mv], 1)
    return parts, scale, cu, cv


def _pet_outline(rng, parts, scale, cu, cv, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The part field (B, S, S) and the signed distance to the outline in pixels. The field is
    smooth, so it is evaluated on a half-resolution grid and upsampled bicubically (a quarter of the
    work; the outline moves by well under 0.1 px)."""
    h = max(size // 2, 16)
    field = _part_fields(parts, _affine(cu, h), _affine(cv, h)) + 0.035 * _waves(rng, cu, cv, h, 4, 3.0, 7.0)
    up = tx._cubic_matrix(h, size)
    field = up @ field @ up.T
    # signed distance to the outline in pixels, to first order: field / |grad field|
    fpx = field * _b(scale) * (size / 2)
    gy, gx = np.gradient(fpx, axis=(1, 2))
    return field, fpx / np.maximum(np.sqrt(gx * gx + gy * gy), 0.25)


def _pet_trimap(dist: np.ndarray, size: int) -> np.ndarray:
    """A band BOUNDARY_WIDTH wide centred on the outline; pet and background never touch."""
    half = 0.5 * max(BOUNDARY_WIDTH_128 * size / 128, 1.6)
    inside = dist > 0
    band = np.abs(dist) <= half
    bgm = np.pad(~inside & ~band, ((0, 0), (1, 1), (1, 1)), mode="edge")
    near_bg = np.zeros_like(inside)
    for oy in range(3):
        for ox in range(3):
            near_bg |= bgm[:, oy : oy + size, ox : ox + size]
    band |= inside & near_bg
    mask = np.full(dist.shape, BACKGROUND, dtype=np.uint8)
    mask[inside] = PET
    mask[band] = BOUNDARY
    return mask


def _coat_colours(rng, coat: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Base and pattern colours (B, 3); the base overlaps the background's colours some of the time."""
    b = len(coat)
    c1 = tx.palette(rng, _PET_COLOURS, b, 0.12)
    camo = tx.coin(rng, 0.35, (b, 1))  # coat colour taken from the background's mean colour
    c1 = np.where(camo, tx.jitter_colour(rng, bg.mean(axis=(2, 3)), 0.12), c1)
    dark_patch = tx.palette(rng, [(0.12, 0.10, 0.09), (0.30, 0.20, 0.14)], b, 0.1)
    pale_patch = tx.palette(rng, [(0.93, 0.91, 0.88), (0.88, 0.80, 0.65)], b, 0.05)
    c2 = np.where(
        (coat == 0)[:, None],
        c1 * tx.uniform(rng, 0.3, 0.55, (b, 1)),  # tabby: darker stripes of the same hue
        np.where(
            (coat == 1)[:, None],
            c1 * tx.uniform(rng, 0.12, 0.35, (b, 1)),
            np.where((tx.luminance(c1) > 0.5)[:, None], dark_patch, pale_patch),
        ),
    )
    return c1, c2


def _coat_pattern(rng, coat: np.ndarray, cu, cv, size: int) -> np.ndarray:
    """The coat's pattern in [0, 1] (B, S, S), drawn in the animal's own frame (stripes follow the body)."""
    b = len(coat)
    stripe_f = tx.uniform(rng, 9.0, 14.0, b)
    pattern = np.empty((b, size, size))
    for k in range(len(PET_COATS)):
        idx = np.flatnonzero(coat == k)
        if not len(idx):
            continue
        if k == 0:  # stripes across the body, bent by a slow wobble
            wob = _waves(rng, cu[idx], cv[idx], size, 3, 1.0, 3.0)
            lin = _affine(stripe_f[idx, None] * cu[idx] + 0.8 * cv[idx], size)
            pattern[idx] = tx.smoothstep(0.15, 0.55, np.sin(lin + 1.6 * wob))
        elif k == 1:  # spots: peaks of an interference pattern of five waves
            pattern[idx] = tx.smoothstep(0.30, 0.48, _waves(rng, cu[idx], cv[idx], size, 5, 9.0, 13.0))
        else:  # two-tone: large smooth patches
            pattern[idx] = tx.smoothstep(-0.08, 0.08, _waves(rng, cu[idx], cv[idx], size, 3, 1.5, 3.5))
    return pattern


def _pet_light(rng, field: np.ndarray, scale: np.ndarray, fur: np.ndarray, size: int) -> np.ndarray:
    """A dome over the silhouette lit from a random direction, darker towards the rim, times the fur."""
    height = 1 - np.exp(-4 * np.maximum(field, 0.0))
    hy, hx = np.gradient(height, axis=(1, 2))
    k = _b(scale) * size * 0.175  # slope per body unit
    hx, hy = hx * k, -hy * k
    la = tx.uniform(rng, 0, 2 * math.pi, len(field))
    lambert = np.maximum(
        (-_b(0.6 * np.cos(la)) * hx - _b(0.6 * np.sin(la)) * hy + 0.8) / np.sqrt(hx * hx + hy * hy + 1), 0.0
    )
    return (0.45 + 0.7 * lambert) * (1 + 0.16 * fur)


def _render_pets(rng: np.random.Generator, labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (B, 3, S, S) float64 in [0, 1] and trimaps (B, S, S) uint8 for the given type labels.
    Every random draw comes from ``rng`` in this order: frame, outline, background, coat, light,
    shadow, photometrics (a seed gives the same images)."""
    b = len(labels)
    fam = labels // len(PET_COATS)
    coat = labels % len(PET_COATS)
    parts, scale, cu, cv = _pet_frame(rng, fam)
    field, dist = _pet_outline(rng, parts, scale, cu, cv, size)
    mask = _pet_trimap(dist, size)

    bg = _pet_background(rng, b, size)
    c1, c2 = _coat_colours(rng, coat, bg)
    pattern = _coat_pattern(rng, coat, cu, cv, size)
    fur = (
        tx.gaussian_blur(tx.grain(rng, b, size)[:, 0], 0.6 * size / 128)
        + 0.5 * tx.value_noise(rng, b, size, (size // 3, size // 10))[:, 0]
    )
    light = _pet_light(rng, field, scale, fur, size)
    pet_rgb = np.minimum(tx.lerp(tx.col(c1), tx.col(c2), pattern[:, None]) * light[:, None], 1.0)

    # --- composite with an anti-aliased edge and a soft contact shadow below the animal
    alpha = np.clip(dist + 0.5, 0.0, 1.0)
    shift = max(1, round(0.03 * size))
    sh = np.zeros_like(alpha)
    sh[:, shift:] = alpha[:, :-shift]
    shadow = 1 - _b(tx.uniform(rng, 0.1, 0.4, b)) * tx.gaussian_blur(sh, 0.04 * size)
    bg *= shadow[:, None]
    img = tx.lerp(bg, pet_rgb, alpha[:, None])
    img = tx.photometric(rng, img, 0.5) + 0.012 * tx.grain(rng, b, size)
    return np.clip(img, 0.0, 1.0), mask


def image_ids(name: str, seed: int, indices) -> list[str]:
    """The ids of images ``indices`` of embedded set ``name`` at data seed ``seed`` (known without
    generating them: the split protocol is keyed by them)."""
    return [f"{name}-s{seed}-{int(i):06d}" for i in indices]


def synthetic_pets(n: int, size: int = 128, seed: int = 0, *, indices=None) -> ImageSet:
    """``n`` pet-like images with trimaps and 9 balanced type labels ("toy-pets"); see docs/data.md.
    ``indices``: only those images of the n (in that order), each the same as in the whole set."""
    _check_args(n, size, seed)
    index = _indices(n, indices)
    labels = _block_values(lambda g: tx.balanced_labels(g, CHUNK, len(PET_TYPES)), index, seed, _STREAM_PETS)

    def render(item):
        i, lab = item
        img, mask = _render_pets(_gen(_image_seq(seed, _STREAM_PETS, i)), np.array([lab]), size)
        return tx.to_uint8(img), mask

    images, masks = zip(
        *_map_images(render, list(zip(index.tolist(), labels.tolist(), strict=True)), size), strict=True
    )
    return ImageSet(
        name="toy-pets",
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(labels),
        masks=torch.from_numpy(np.concatenate(masks)),
        class_names=list(PET_TYPES),
        ids=image_ids("toy-pets", seed, index),
    )


# ==================================================================================================
# Scenes: six global compositions named like Intel Image Classification


def _sky(rng: np.random.Generator, b: int, size: int, horizon: np.ndarray) -> np.ndarray:
    """Sky gradient (clear, overcast, dusk or hazy) with soft clouds; horizon (B, 1, 1) as an image row in [0, 1]."""
    _, y = tx.grid(size)
    tops = np.array([(0.22, 0.42, 0.78), (0.55, 0.58, 0.63), (0.30, 0.30, 0.55), (0.35, 0.55, 0.85)])
    lows = np.array([(0.72, 0.82, 0.93), (0.78, 0.80, 0.83), (0.95, 0.70, 0.50), (0.85, 0.90, 0.95)])
    kind = tx.choice_p(rng, [0.45, 0.25, 0.1, 0.2], b)
    top = tx.jitter_colour(rng, tops[kind], 0.1)
    low = tx.jitter_colour(rng, lows[kind], 0.06)
    t = np.clip(y / np.maximum(horizon, 0.05), 0.0, 1.0)[:, None]
    sky = tx.lerp(tx.col(top), tx.col(low), t**0.8)
    clouds = tx.fractal_noise(rng, b, size, base=3, octaves=4)
    cover = tx.smoothstep(0.0, 0.45, clouds + _b(tx.uniform(rng, -0.4, 0.3, b), 4))
    return np.clip(tx.lerp(sky, 0.93 * (0.85 + 0.15 * clouds), 0.85 * cover), 0.0, 1.0)


def _ridge(rng: np.random.Generator, b: int, size: int, base, amp, sharp: float = 1.0) -> np.ndarray:
    """A jagged skyline row y(x), (B, 1, S): base minus ridged multi-frequency waves (peaks point up)."""
    x = (np.arange(size) + 0.5) / size
    prof, total = 0.0, 0.0
    for o in range(6):
        f = 2.0**o * _b(tx.uniform(rng, 0.8, 1.6, b))
        ph = _b(tx.uniform(rng, 0, 2 * math.pi, b))
        a = 0.55**o
        wave = (
            1 - np.abs(np.sin(math.pi * f * x + ph)) ** sharp if o < 3 else np.sin(2 * math.pi * f * x + ph)
        )
        prof, total = prof + a * wave, total + a
    return base - amp * prof / total


def _texture(
    rng: np.random.Generator,
    name: str,
    b: int,
    size: int,
    colour,
    contrast: float,
    zoom=(0.3, 0.8),
    stretch=None,
) -> np.ndarray:
    """A tinted crop of one named texture photo for every image."""
    z = tx.uniform(rng, zoom[0], zoom[1], b)
    if stretch is not None:
        z = np.minimum(z, 1.0 / stretch)
    crop = tx.sample_tiles(
        np.full(b, tx.TILE[name]),
        size,
        z,
        np.zeros(b),
        tx.coin(rng, 0.5, b),
        tx.uniform(rng, 0, 1, b),
        tx.uniform(rng, 0, 1, b),
        stretch,
    )
    return tx.tint(crop, colour, np.full(b, contrast))


def _windows(xf: np.ndarray, yf: np.ndarray, fill: float = 0.55) -> np.ndarray:
    """A soft grid of windows from facade coordinates measured in window periods."""
    wx = tx.smoothstep(fill, fill - 0.12, np.abs(np.remainder(xf, 1.0) - 0.5) * 2)
    wy = tx.smoothstep(fill, fill - 0.12, np.abs(np.remainder(yf, 1.0) - 0.5) * 2)
    return wx * wy


def _scene_buildings(rng, b, size):
    x, y = tx.grid(size)
    k = 14
    edges = np.cumsum(tx.uniform(rng, 0.08, 0.3, (b, k)), 1) - tx.uniform(rng, 0.0, 0.08, (b, 1))
    xs = (np.arange(size) + 0.5) / size
    idx = np.minimum(
        (xs[None, None, :] >= edges[:, :, None]).sum(1), k - 1
    )  # (B, S): building of each column

    def per_col(t):  # (B, k) -> (B, 1, S)
        return np.take_along_axis(t, idx, 1)[:, None, :]

    tops = tx.uniform(rng, 0.03, 0.45, (b, k))
    facade = tx.palette(
        rng,
        [(0.62, 0.60, 0.58), (0.62, 0.36, 0.28), (0.80, 0.74, 0.62), (0.45, 0.55, 0.65), (0.85, 0.85, 0.83)],
        b * k,
        0.1,
    ).reshape(b, k, 3)
    period_x, period_y = tx.uniform(rng, 0.025, 0.06, (b, k)), tx.uniform(rng, 0.035, 0.07, (b, k))
    left = np.concatenate([np.zeros((b, 1)), edges[:, :-1]], 1)
    shade = tx.uniform(rng, 0.75, 1.1, (b, k))
    top = per_col(tops)
    sky = _sky(rng, b, size, _b(tops.min(1)) + 0.2)
    fac = np.stack([per_col(facade[:, :, c]) for c in range(3)], 1)  # (B, 3, 1, S)
    brick = _texture(rng, "brick", b, size, np.ones((b, 3)), 0.6, zoom=(0.15, 0.3))
    concrete = 1 + 0.08 * tx.fractal_noise(rng, b, size, base=8, octaves=3)
    win = _windows((x - per_col(left)) / per_col(period_x), (y - top) / per_col(period_y))[:, None]
    glass = tx.col(tx.palette(rng, [(0.15, 0.2, 0.28), (0.45, 0.55, 0.65), (0.1, 0.1, 0.12)], b, 0.1))
    body = tx.lerp(fac * per_col(shade)[:, None] * brick * concrete, glass, win * 0.9)
    img = tx.lerp(sky, body, (y > top)[:, None])
    street = (y > _b(tx.uniform(rng, 0.85, 1.2, b)))[:, None]  # a street strip at the bottom of some
    road = _texture(rng, "gravel", b, size, np.full((b, 3), 0.35), 0.3, zoom=(0.8, 1.0))
    return tx.lerp(img, road, street)


def _scene_forest(rng, b, size):
    x, y = tx.grid(size)
    green = tx.palette(
        rng, [(0.22, 0.38, 0.16), (0.30, 0.45, 0.20), (0.18, 0.30, 0.14), (0.40, 0.45, 0.18)], b, 0.15
    )
    leaves = _texture(rng, "grass", b, size, green, 1.0, zoom=(0.25, 0.6))
    blotch = tx.fractal_noise(rng, b, size, base=4, octaves=4)
    img = leaves * (0.8 + 0.45 * blotch)
    # sky glimpses through the canopy near the top
    glimpse = tx.smoothstep(
        0.25, 0.5, blotch + 0.9 * (0.35 - y[:, None]) + _b(tx.uniform(rng, -0.3, 0.2, b), 4)
    )
    img = tx.lerp(img, 0.85, glimpse)
    # trunks: slightly leaning vertical bars with bark texture
    k = 9
    xs, ws = (
        tx.uniform(rng, -0.05, 1.05, (b, k)),
        tx.uniform(rng, 0.008, 0.06, (b, k)) * tx.coin(rng, 0.8, (b, k)),
    )
    lean = tx.uniform(rng, -0.06, 0.06, (b, k))
    bark = 1 + 0.25 * tx.value_noise(rng, b, size, (6, size // 3))
    trunk_col = tx.palette(rng, [(0.25, 0.18, 0.12), (0.35, 0.30, 0.25), (0.18, 0.14, 0.10)], b, 0.1)
    tr = np.zeros((b, 1, size, size))
    for j in range(k):
        cxj = _b(xs[:, j]) + _b(lean[:, j]) * (y - 0.5)
        tr = np.maximum(tr, tx.smoothstep(0.0, 0.004, _b(ws[:, j]) - np.abs(x - cxj))[:, None])
    img = tx.lerp(img, tx.col(trunk_col) * bark, tr)
    ground = (y > _b(tx.uniform(rng, 0.8, 1.3, b)) + 0.03 * blotch[:, 0])[:, None]
    litter = _texture(rng, "gravel", b, size, tx.palette(rng, [(0.4, 0.3, 0.18), (0.35, 0.4, 0.2)], b), 0.8)
    return tx.lerp(img, litter, ground)


def _scene_mountain(rng, b, size, glacier: bool = False):
    x, y = tx.grid(size)
    base = _b(tx.uniform(rng, 0.35, 0.65, b))
    far = _ridge(rng, b, size, base - 0.05, _b(tx.uniform(rng, 0.15, 0.35, b)))
    near = _ridge(rng, b, size, base + 0.12, _b(tx.uniform(rng, 0.1, 0.3, b)), sharp=0.7)
    sky = _sky(rng, b, size, far.min(axis=2, keepdims=True) + 0.1)
    if glacier:
        rock_col = tx.palette(rng, [(0.85, 0.92, 0.97), (0.75, 0.85, 0.93), (0.92, 0.94, 0.96)], b, 0.05)
        far_col = tx.palette(rng, [(0.80, 0.86, 0.92), (0.70, 0.78, 0.88)], b, 0.05)
        contrast = 0.3
    else:
        rock_col = tx.palette(
            rng, [(0.45, 0.40, 0.35), (0.38, 0.40, 0.36), (0.50, 0.44, 0.36), (0.32, 0.38, 0.30)], b, 0.12
        )
        far_col = tx.palette(rng, [(0.50, 0.56, 0.66), (0.58, 0.62, 0.70), (0.42, 0.48, 0.58)], b, 0.08)
        contrast = 0.7
    rock = _texture(
        rng, "gravel", b, size, rock_col, contrast, zoom=(0.6, 1.0), stretch=tx.uniform(rng, 1.0, 1.6, b)
    )
    relief = tx.fractal_noise(rng, b, size, base=5, octaves=4)
    # light from one side on the slopes: brightness follows the relief's horizontal gradient
    slope = np.gradient(relief[:, 0], axis=2) * size / 8
    rock = (
        rock
        * (0.85 + 0.3 * relief)
        * (1 + 0.5 * _b(tx.uniform(rng, -1, 1, b), 4) * np.clip(slope, -1, 1)[:, None])
    )
    far_img = tx.col(far_col) * (0.92 + 0.12 * relief)
    # snow above a per-image snow line, following the relief
    snowline = near.min(axis=2, keepdims=True) + _b(tx.uniform(rng, -0.05, 0.25, b))
    snow = tx.smoothstep(0.02, -0.02, y - snowline + 0.06 * relief[:, 0])[:, None]
    near_img = tx.lerp(rock, 0.95 * (0.9 + 0.1 * relief), snow * (0.4 if glacier else 0.8))
    img = tx.lerp(sky, far_img, (y > far)[:, None])
    img = tx.lerp(img, near_img, tx.smoothstep(0.0, 0.006, y - near)[:, None])
    if glacier:
        # crevasses: thin blue lines along iso-contours of the relief; a meltwater lake in some
        crev = tx.smoothstep(0.06, 0.0, np.abs(np.sin(18 * relief + 30 * y[:, None])))
        blue = tx.col(tx.palette(rng, [(0.35, 0.6, 0.8), (0.25, 0.5, 0.7)], b, 0.05))
        img = tx.lerp(img, blue, crev * (y > near)[:, None] * 0.7)
        lake = (y > _b(tx.uniform(rng, 0.78, 1.2, b)))[:, None]
        water = tx.col(tx.palette(rng, [(0.25, 0.45, 0.55), (0.35, 0.55, 0.6)], b, 0.08)) * (
            1 + 0.1 * tx.value_noise(rng, b, size, (size // 4, 4))
        )
        img = tx.lerp(img, water, lake)
    return img


def _scene_sea(rng, b, size):
    x, y = tx.grid(size)
    horizon = _b(tx.uniform(rng, 0.3, 0.6, b)) + _b(tx.uniform(rng, -0.03, 0.03, b)) * (x - 0.5)
    sky = _sky(rng, b, size, horizon)
    deep = tx.palette(
        rng, [(0.08, 0.25, 0.45), (0.10, 0.35, 0.45), (0.15, 0.30, 0.50), (0.25, 0.40, 0.45)], b, 0.12
    )
    d = np.maximum(y - horizon, 0.0)
    water = tx.lerp(
        tx.col(tx.lerp(deep, np.array([0.7, 0.78, 0.85]), 0.5)),
        tx.col(deep),
        (np.clip(d / (1 - horizon), 0, 1) ** 0.5)[:, None],
    )
    # waves: horizontal streaks that get finer towards the horizon (perspective)
    phase = _b(tx.uniform(rng, 0, 2 * math.pi, b))
    streak = np.sin(0.9 / (d + 0.02) + 2.5 * tx.value_noise(rng, b, size, (3, 6))[:, 0] + phase)
    chop = tx.value_noise(rng, b, size, (size // 2, size // 8))[:, 0]
    waves = (0.6 * streak + 0.6 * chop)[:, None]
    water = water * (1 + 0.12 * waves) + 0.1 * tx.smoothstep(0.7, 1.0, waves)
    img = tx.lerp(sky, water, tx.smoothstep(0.0, 0.004, y - horizon)[:, None])
    shore = _b(tx.uniform(rng, 0.75, 1.25, b)) + 0.03 * np.sin(7 * x + phase)
    sand = _texture(
        rng,
        "gravel",
        b,
        size,
        tx.palette(rng, [(0.85, 0.78, 0.60), (0.75, 0.68, 0.52)], b),
        0.4,
        zoom=(0.7, 1.0),
    )
    foam = tx.smoothstep(0.015, 0.0, np.abs(y - shore))[:, None]
    img = tx.lerp(img, sand, (y > shore)[:, None])
    return tx.lerp(img, 0.95, foam * 0.8)


def _scene_street(rng, b, size):
    x, y = tx.grid(size)
    vx, vy = _b(tx.uniform(rng, 0.3, 0.7, b)), _b(tx.uniform(rng, 0.3, 0.5, b))
    ax = np.maximum(np.abs(x - vx), 1e-3)
    dy = np.maximum(y - vy, 1e-3)
    k_road = _b(tx.uniform(rng, 0.5, 1.1, b))
    k_walk = k_road * _b(tx.uniform(rng, 1.2, 1.5, b))
    sky = _sky(rng, b, size, vy)
    # facades on both sides converging to the vanishing point; windows in perspective coordinates
    top = vy - _b(tx.uniform(rng, 0.5, 1.3, b)) * ax
    facade_col = tx.palette(
        rng, [(0.62, 0.60, 0.58), (0.62, 0.40, 0.30), (0.78, 0.72, 0.60), (0.50, 0.55, 0.60)], b, 0.12
    )
    win = _windows(
        _b(tx.uniform(rng, 0.15, 0.35, b)) / ax, (y - vy) / ax * _b(tx.uniform(rng, 3, 6, b)), fill=0.5
    )[:, None]
    facade = (
        tx.col(facade_col)
        * (1 + 0.1 * tx.fractal_noise(rng, b, size, base=6, octaves=3))
        * np.where(x < vx, 0.85, 1.05)[:, None]
    )
    facade = tx.lerp(facade, 0.15, win * 0.8)
    img = tx.lerp(sky, facade, (y > top)[:, None])
    below = y > vy
    pave = _texture(rng, "gravel", b, size, np.full((b, 3), 0.62), 0.3, zoom=(0.8, 1.0))
    asphalt = _texture(
        rng,
        "gravel",
        b,
        size,
        tx.palette(rng, [(0.30, 0.30, 0.32), (0.38, 0.37, 0.36)], b, 0.08),
        0.35,
        zoom=(0.8, 1.0),
    )
    img = tx.lerp(img, pave, (below & (ax < k_walk * dy))[:, None])
    img = tx.lerp(img, asphalt, (below & (ax < k_road * dy))[:, None])
    # dashed centre line (dashes shrink with distance) and solid edge lines
    dash = (np.sin(1.2 / dy + _b(tx.uniform(rng, 0, 2 * math.pi, b))) > 0) & (ax < 0.025 * dy) & below
    edge = (np.abs(ax - 0.93 * k_road * dy) < 0.02 * dy) & below
    paint = tx.col(tx.palette(rng, [(0.95, 0.95, 0.92), (0.95, 0.80, 0.25)], b, 0.03))
    img = tx.lerp(img, paint, (dash | edge)[:, None] * 0.9)
    px = _b(tx.uniform(rng, 0.0, 1.0, b))  # a lamp post
    pole = (np.abs(x - px) < 0.006) & (y > vy - 0.3) & (y < vy + 0.8 * np.abs(px - vx) / k_walk)
    return tx.lerp(img, 0.2, pole[:, None])


_SCENE_RENDERERS: dict[str, Callable] = {
    "buildings": _scene_buildings,
    "forest": _scene_forest,
    "glacier": functools.partial(_scene_mountain, glacier=True),
    "mountain": _scene_mountain,
    "sea": _scene_sea,
    "street": _scene_street,
}


def _render_scenes(rng: np.random.Generator, labels: np.ndarray, size: int) -> np.ndarray:
    """Images (B, 3, S, S) float64 in [0, 1] for the given scene labels (rendered class by class)."""
    out = np.zeros((len(labels), 3, size, size))
    for k, name in enumerate(SCENE_CLASSES):
        idx = np.flatnonzero(labels == k)
        if len(idx):
            out[idx] = _SCENE_RENDERERS[name](rng, len(idx), size)
    out = tx.photometric(rng, np.clip(out, 0.0, 1.0), 0.6)
    return np.clip(out + 0.012 * tx.grain(rng, len(labels), size), 0.0, 1.0)


def synthetic_scenes(n: int, size: int = 128, seed: int = 0, *, indices=None) -> ImageSet:
    """``n`` scene images in 6 balanced classes named like Intel Image Classification ("toy-scenes").
    ``indices``: only those images of the n (in that order), each the same as in the whole set."""
    _check_args(n, size, seed)
    index = _indices(n, indices)
    labels = _block_values(
        lambda g: tx.balanced_labels(g, CHUNK, len(SCENE_CLASSES)), index, seed, _STREAM_SCENES
    )

    def render(item):
        i, lab = item
        return tx.to_uint8(_render_scenes(_gen(_image_seq(seed, _STREAM_SCENES, i)), np.array([lab]), size))

    images = _map_images(render, list(zip(index.tolist(), labels.tolist(), strict=True)), size)
    return ImageSet(
        name="toy-scenes",
        images=torch.from_numpy(np.concatenate(images)),
        labels=torch.from_numpy(labels),
        class_names=list(SCENE_CLASSES),
        ids=image_ids("toy-scenes", seed, index),
    )


# ==================================================================================================
# Unlabeled: pets-like images, scenes and plain photo crops, for SimMIM pre-training


def _render_photos(rng: np.random.Generator, b: int, size: int) -> np.ndarray:
    """Random crops of every bundled photo; grey ones are tinted some of the time."""
    crops = _crops(rng, list(range(len(tx.PHOTOS))), b, size, zoom=(0.25, 1.0), rot=0.5)
    tinted = tx.tint(
        crops, tx.palette(rng, _FLOOR_COLOURS + _WALL_COLOURS, b, 0.15), tx.uniform(rng, 0.6, 1.2, b)
    )
    grey = crops.std(axis=1).mean(axis=(1, 2)) < 0.01
    img = np.where(_b(grey & tx.coin(rng, 0.6, b), 4), tinted, crops)
    img = tx.photometric(rng, img, 0.7) + 0.012 * tx.grain(rng, b, size)
    return np.clip(img, 0.0, 1.0)


def synthetic_unlabeled(n: int, size: int = 128, seed: int = 0, *, indices=None) -> ImageSet:
    """``n`` unlabeled images ("toy-unlabeled"): pets-like, scene and photo-crop images, mixed.
    ``indices``: only those images of the n (in that order), each the same as in the whole set."""
    _check_args(n, size, seed)
    index = _indices(n, indices)
    kinds = _block_values(
        lambda g: tx.choice_p(g, list(UNLABELED_MIX.values()), CHUNK), index, seed, _STREAM_UNLABELED
    )

    def render(item):
        i, kind = item
        rng = _gen(_image_seq(seed, _STREAM_UNLABELED, i))
        if kind == 0:
            img = _render_pets(rng, tx.randint(rng, len(PET_TYPES), 1), size)[0]
        elif kind == 1:
            img = _render_scenes(rng, tx.randint(rng, len(SCENE_CLASSES), 1), size)
        else:
            img = _render_photos(rng, 1, size)
        return tx.to_uint8(img)

    images = _map_images(render, list(zip(index.tolist(), kinds.tolist(), strict=True)), size)
    return ImageSet(
        name="toy-unlabeled",
        images=torch.from_numpy(np.concatenate(images)),
        ids=image_ids("toy-unlabeled", seed, index),
    )


SYNTHETIC: dict[str, Callable[..., ImageSet]] = {
    "toy-pets": synthetic_pets,
    "toy-scenes": synthetic_scenes,
    "toy-unlabeled": synthetic_unlabeled,
}
