"""Building blocks for the embedded synthetic datasets: bundled photos, noise, colour and geometry helpers.

Everything is computed in float64 numpy from uniform draws of a ``numpy.random.Generator`` (only
``Generator.random`` is used: its stream is the raw PCG64 bits, with no distribution code that could
change between numpy versions) and rounded to uint8 once at the end, so a seed gives the same bytes on
any machine. (Elementwise float64 maths can differ by an ulp between CPUs' vector units; at that size a
difference essentially never crosses a rounding or threshold boundary.) numpy is used rather than torch
because float64 elementwise work is several times faster there on CPU.

Shapes: single-channel fields are (B, S, S) or (B, 1, S, S); images are (B, 3, S, S) in [0, 1].
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage, sparse

# scikit-image sample images used as textures, in a fixed order (a tile's index must never move).
# (name, licence as stated in the skimage.data docstring, role). All ship inside the scikit-image
# wheel and load without network access; ones that need pooch (brain, eagle, lily, skin...) are absent.
PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("grass", "CC0", "texture"),
    ("gravel", "CC0", "texture"),
    ("brick", "CC0", "texture"),
    ("coins", "no known copyright restrictions", "texture"),
    ("text", "public domain", "texture"),
    ("cell", "CC0", "texture"),
    ("clock", "public domain", "photo"),
    ("camera", "CC0", "photo"),
    ("coffee", "CC0", "photo"),
    ("astronaut", "public domain", "photo"),
    ("rocket", "public domain", "photo"),
    ("hubble_deep_field", "public domain", "photo"),
    ("immunohistochemistry", "no known copyright restrictions", "photo"),
    ("retina", "CC0", "photo"),
    ("chelsea", "CC0", "photo"),
)
TILE = {name: i for i, (name, _, _) in enumerate(PHOTOS)}
LUMA = np.array([0.299, 0.587, 0.114])


# --------------------------------------------------------------------------------------------------
# Random draws (uniform only)


def uniform(rng: np.random.Generator, lo: float, hi: float, shape) -> np.ndarray:
    return lo + (hi - lo) * rng.random(shape)


def randint(rng: np.random.Generator, k: int, shape) -> np.ndarray:
    """Integers in [0, k), from uniform draws (never numpy's integer sampler)."""
    return np.minimum((rng.random(shape) * k).astype(np.int64), k - 1)


def coin(rng: np.random.Generator, p: float, shape) -> np.ndarray:
    return rng.random(shape) < p


def choice_p(rng: np.random.Generator, p: list[float], n: int) -> np.ndarray:
    """n category indices with probabilities p."""
    cdf = np.cumsum(np.asarray(p, dtype=np.float64) / sum(p))
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(p) - 1)


def balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """A shuffled sequence of n labels in which each of k classes appears n // k or n // k + 1 times."""
    return (np.arange(n) % k)[np.argsort(rng.random(n), kind="stable")].astype(np.int64)


# --------------------------------------------------------------------------------------------------
# Fields


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x right, y down) in [0, 1], each (1, S, S)."""
    t = (np.arange(size) + 0.5) / size
    return np.broadcast_to(t[None, None, :], (1, size, size)), np.broadcast_to(
        t[None, :, None], (1, size, size)
    )


@functools.lru_cache(maxsize=64)
def _cubic_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) Keys-cubic (a = -0.5) interpolation matrix, half-pixel centres, clamped edges."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    i0 = np.floor(pos).astype(int)
    t = pos - i0
    a = -0.5
    w = [
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
        ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    ]
    m = np.zeros((n_out, n_in))
    for k, wk in zip(range(-1, 3), w, strict=True):
        np.add.at(m, (np.arange(n_out), np.clip(i0 + k, 0, n_in - 1)), wk)
    return m


def value_noise(rng: np.random.Generator, b: int, size: int, cells, ch: int = 1) -> np.ndarray:
    """Smooth noise in about [-1, 1]: a random (cy, cx) lattice upsampled bicubically, (B, ch, S, S)."""
    cy, cx = (cells, cells) if isinstance(cells, int) else cells
    lattice = uniform(rng, -1.0, 1.0, (b, ch, cy, cx))
    return (_cubic_matrix(cy, size) @ lattice) @ _cubic_matrix(cx, size).T


def fractal_noise(
    rng: np.random.Generator, b: int, size: int, base: int = 3, octaves: int = 4, gain: float = 0.5
) -> np.ndarray:
    """Sum of value-noise octaves (cells base, 2 base, ...), normalised to about [-1, 1], (B, 1, S, S)."""
    out = np.zeros((b, 1, size, size))
    amp, total = 1.0, 0.0
    for o in range(octaves):
        out += amp * value_noise(rng, b, size, min(base * 2**o, max(size // 2, 2)))
        total += amp
        amp *= gain
    return out / total


def grain(rng: np.random.Generator, b: int, size: int, ch: int = 1) -> np.ndarray:
    """Pixel-level noise in [-1, 1], (B, ch, S, S)."""
    return uniform(rng, -1.0, 1.0, (b, ch, size, size))


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the last two axes (reflect at the borders); sigma in pixels."""
    if sigma <= 0.05:
        return x
    x = ndimage.gaussian_filter1d(x, sigma, axis=-1, mode="reflect", truncate=3.0)
    return ndimage.gaussian_filter1d(x, sigma, axis=-2, mode="reflect", truncate=3.0)


def smoothstep(e0, e1, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def lerp(a, b, t):
    return a + (b - a) * t


def col(c: np.ndarray) -> np.ndarray:
    """(B, 3) colours -> (B, 3, 1, 1) for broadcasting over images."""
    return c.reshape(-1, 3, 1, 1)


def luminance(img: np.ndarray) -> np.ndarray:
    """(B, 3, S, S) -> (B, 1, S, S); (B, 3) -> (B,)."""
    if img.ndim == 2:
        return img @ LUMA
    return np.einsum("bchw,c->bhw", img, LUMA)[:, None]


# --------------------------------------------------------------------------------------------------
# Colour


def jitter_colour(rng: np.random.Generator, base: np.ndarray, amount: float) -> np.ndarray:
    """(B, 3) colours multiplied per channel by U(1 - amount, 1 + amount), clipped to [0, 1]."""
    return np.clip(base * uniform(rng, 1 - amount, 1 + amount, base.shape), 0.0, 1.0)


def palette(rng: np.random.Generator, colours, b: int, amount: float = 0.12) -> np.ndarray:
    """b colours picked from a palette and jittered, (B, 3)."""
    table = np.asarray(colours, dtype=np.float64)
    return jitter_colour(rng, table[randint(rng, len(table), b)], amount)


def tint(gray: np.ndarray, colour: np.ndarray, contrast) -> np.ndarray:
    """Colour a texture by its luminance: colour * (lum / mean lum) ** contrast, (B, 3, S, S)."""
    g = np.maximum(luminance(gray), 0.02)
    g = g / g.mean(axis=(2, 3), keepdims=True)
    return np.clip(col(colour) * g ** np.reshape(contrast, (-1, 1, 1, 1)), 0.0, 1.0)


def photometric(rng: np.random.Generator, img: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Random per-channel gain, saturation, brightness, contrast and gamma, as cameras vary."""
    b = img.shape[0]
    gains = uniform(rng, 1 - 0.12 * strength, 1 + 0.12 * strength, (b, 3))
    sat = uniform(rng, 1 - 0.35 * strength, 1 + 0.25 * strength, (b, 1, 1, 1))
    bright = uniform(rng, 1 - 0.2 * strength, 1 + 0.15 * strength, (b, 1, 1, 1))
    contrast = uniform(rng, 1 - 0.25 * strength, 1 + 0.2 * strength, (b, 1, 1, 1))
    gamma = uniform(rng, 1 - 0.2 * strength, 1 + 0.2 * strength, (b, 1, 1, 1))
    y = luminance(img)
    img = y + sat * (img - y)
    img = img * col(gains) * bright
    m = img.mean(axis=(1, 2, 3), keepdims=True)
    img = np.clip(m + contrast * (img - m), 0.0, 1.0)
    return img**gamma


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Bundled photos


def _procedural_tile(name: str, res: int) -> np.ndarray:
    """Stand-in for a photo that failed to load: grey fractal noise seeded by the photo's name."""
    rng = np.random.default_rng(list(name.encode()))
    g = np.clip(0.5 + 0.35 * fractal_noise(rng, 1, res, base=4, octaves=5, gain=0.6)[0], 0.0, 1.0)
    return np.repeat(g, 3, axis=0)


@functools.lru_cache(maxsize=1)
def _raw_photos() -> tuple[tuple[np.ndarray | None, ...], tuple[str, ...]]:
    """The bundled photos as float64 (3, H, W) arrays in [0, 1]; None for one that could not be loaded."""
    try:
        import skimage.data as skdata
    except Exception:  # scikit-image absent or broken: every tile becomes procedural
        skdata = None
    out: list[np.ndarray | None] = []
    missing: list[str] = []
    for name, _, _ in PHOTOS:
        img = None
        if skdata is not None:
            try:
                arr = np.asarray(getattr(skdata, name)())
                if arr.ndim == 2:
                    arr = np.repeat(arr[..., None], 3, axis=2)
                img = np.ascontiguousarray(arr[..., :3].astype(np.float64).transpose(2, 0, 1) / 255.0)
            except Exception:  # a sample that needs a download, or a future rename
                img = None
        if img is None:
            missing.append(name)
        out.append(img)
    return tuple(out), tuple(missing)


def missing_photos() -> tuple[str, ...]:
    """Names of bundled photos that could not be loaded here (replaced by procedural tiles)."""
    return _raw_photos()[1]


def _area_resize(img: np.ndarray, res: int) -> np.ndarray:
    """(3, m, m) -> (3, res, res) by averaging (a box filter matrix on each axis): anti-aliased, exact."""
    m = img.shape[-1]
    edges = np.arange(res + 1) * m / res
    w = np.zeros((res, m))
    for i in range(res):
        lo, hi = edges[i], edges[i + 1]
        for j in range(int(math.floor(lo)), min(int(math.ceil(hi)), m)):
            w[i, j] = min(hi, j + 1) - max(lo, j)
    w /= w.sum(1, keepdims=True)
    if res > m:  # upsampling: bicubic instead
        w = _cubic_matrix(m, res)
    # w has a few non-zeros per row (the box or the cubic's taps): as a sparse matrix the two products
    # cost O(res * m) instead of O(res * m * m) (1 s of a 448-px atlas, the 1411-px retina mostly)
    ws = sparse.csr_matrix(w)
    return np.stack([(ws @ (ws @ channel).T).T for channel in img])


@functools.lru_cache(maxsize=4)
def atlas(res: int) -> np.ndarray:
    """Every photo as a square (res x res) tile: centre square crop, area-resized. (T, 3, res, res)."""
    photos, _ = _raw_photos()
    tiles = []
    for (name, _, _), img in zip(PHOTOS, photos, strict=True):
        if img is None:
            tiles.append(_procedural_tile(name, res))
            continue
        _, h, w = img.shape
        m = min(h, w)
        top, left = (h - m) // 2, (w - m) // 2
        tiles.append(_area_resize(img[:, top : top + m, left : left + m], res))
    out = np.clip(np.stack(tiles), 0.0, 1.0)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=4)
def _atlas_rows(res: int) -> np.ndarray:
    """The atlas as three channel planes, each flattened to T * res * res values, (3, T * res * res):
    a gather of one pixel index reads the same offset of each plane, and gives channels first."""
    out = np.ascontiguousarray(atlas(res).transpose(1, 0, 2, 3).reshape(3, -1))
    out.setflags(write=False)
    return out


def sample_tiles(tile, size, zoom, angle, flip, cx, cy, stretch=None) -> np.ndarray:
    """Bilinear crops from the photo atlas, one per image, (B, 3, S, S).

    tile: (B,) tile index. zoom: (B,) crop side as a fraction of the tile (<= 1). angle: (B,) radians.
    flip: (B,) bool, mirror horizontally. cx, cy: (B,) where the crop sits in its tile, in [0, 1].
    stretch: optional (B,) vertical extent factor (> 1 squashes the texture vertically, as a receding
    ground plane does). The crop is kept inside its tile. The atlas has 2 * size pixels per tile side.
    """
    res = 2 * size
    rows = _atlas_rows(res)
    b = len(tile)
    t = np.arange(size) + 0.5 - size / 2  # pixel offsets from the crop centre, in output pixels
    ext_y = np.ones(b) if stretch is None else np.asarray(stretch, dtype=np.float64)
    ca, sa = np.cos(angle), np.sin(angle)
    hx = 0.5 * zoom * (np.abs(ca) + np.abs(sa) * ext_y)
    hy = 0.5 * zoom * (np.abs(sa) + np.abs(ca) * ext_y)
    cxc = np.clip(cx, 0, 1) * np.clip(1 - 2 * hx, 0, 1) + np.minimum(hx, 0.5)
    cyc = np.clip(cy, 0, 1) * np.clip(1 - 2 * hy, 0, 1) + np.minimum(hy, 0.5)
    k = zoom * res / size  # tile pixels per output pixel
    sx = np.where(flip, -1.0, 1.0) * k
    sy = ext_y * k
    # source position = centre + R(angle) @ (sx * tx, sy * ty), separable into row and column terms
    col_x, col_y = (ca * sx)[:, None] * t, (sa * sx)[:, None] * t  # (B, S) contributions of the column index
    row_x, row_y = (-sa * sy)[:, None] * t, (ca * sy)[:, None] * t  # contributions of the row index
    px = np.clip((cxc * res - 0.5)[:, None, None] + row_x[:, :, None] + col_x[:, None, :], 0.0, res - 1.0)
    py = np.clip((cyc * res - 0.5)[:, None, None] + row_y[:, :, None] + col_y[:, None, :], 0.0, res - 1.0)
    x0 = np.minimum(np.floor(px), res - 2)
    y0 = np.minimum(np.floor(py), res - 2)
    fx, fy = px - x0, py - y0
    base = (
        np.asarray(tile, dtype=np.int64)[:, None, None] * (res * res)
        + y0.astype(np.int64) * res
        + x0.astype(np.int64)
    )
    # gathered channels first, (3, B, S, S): the weights broadcast over the leading channel axis
    top = lerp(np.take(rows, base, axis=1), np.take(rows, base + 1, axis=1), fx)
    bottom = lerp(np.take(rows, base + res, axis=1), np.take(rows, base + res + 1, axis=1), fx)
    return np.ascontiguousarray(lerp(top, bottom, fy).transpose(1, 0, 2, 3))
