"""Decode one image or trimap file into a square uint8 array, whatever the file's pixel mode.

Images are resized to ``size x size`` without keeping the aspect ratio, as the study does, with the
filter ``resize`` names (``RESIZE_FILTERS``: Pillow's antialiased bilinear, viny's default, or nearest,
the study's code on Pets and Intel); trimaps are resized with nearest-neighbour whatever the image's
filter, so that their classes stay exact and, with ``nearest``, image and trimap are resized jointly
(the same source pixel behind each output pixel). ``load_source`` keeps the aspect ratio instead: the
copy SimMIM's crops are cut from when they come from the original (``crop_source="original"``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from viny_probe.data.base import IGNORE, TRIMAP, MaskClasses
from viny_probe.errors import VinyError, VinyWarning

# Bump when decoding changes the pixels it produces, so that caches built by older code are not reused.
DECODER_VERSION = 1

# Image resize filters: "bilinear" = Pillow's bilinear, antialiased when shrinking (torchvision's Resize on
# a PIL image); "nearest" = Pillow's nearest-neighbour (torchvision's Resize(interpolation=NEAREST)).
RESIZE_FILTERS = ("bilinear", "nearest")
_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}

# Lower-case suffixes treated as images when folders are listed.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# Pillow's DecompressionBombWarning (an image over Image.MAX_IMAGE_PIXELS, decoded anyway) is a raw
# Python warning with Pillow's source line; viny says it as one HugeImageWarning naming the file instead.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class HugeImageWarning(VinyWarning):
    """An image over Pillow's decompression-bomb limit was decoded (it is not over twice the limit,
    where Pillow refuses it and the file is left out as unreadable)."""


_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})

_UNDECLARED = 256  # a file value neither in a mask dataset's value map nor among its ignore values


def _lookup_table(classes: MaskClasses) -> np.ndarray:
    """File value -> class index (IGNORE for an ignore value, _UNDECLARED for any other value)."""
    table = np.full(257, _UNDECLARED, dtype=np.int64)
    table[list(classes.ignore)] = IGNORE
    for value, index in classes.values.items():
        table[value] = index
    return table


class ImageDecodeError(VinyError):
    """A file could not be read as an image (missing, corrupt, truncated, not an image, odd mode)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(
            f"cannot read image file '{self.path}': {reason}. Replace or delete the file "
            "(dataset loaders leave such files out with --on-error skip, on_error='skip' in Python)."
        )


class TrimapError(ImageDecodeError):
    """A mask file holds values its dataset does not declare (Oxford-IIIT Pet: 1 pet, 2 background,
    3 boundary), or is not a single-channel map."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        VinyError.__init__(
            self,
            f"invalid mask file '{self.path}': {reason}. Replace the file with the dataset's original "
            "(or declare the value in the dataset's MaskClasses).",
        )


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 1:
        raise VinyError(f"size must be a positive integer (pixels per side), got {size!r}")


def check_resize(resize: str) -> None:
    if resize not in RESIZE_FILTERS:
        raise VinyError(f"resize must be one of {', '.join(RESIZE_FILTERS)}, got {resize!r}")


def _high_depth_to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float greyscale array (H, W) to uint8 (H, W)."""
    values = np.nan_to_num(pixels.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if mode.startswith("I;16"):
        values = values / 257.0  # 65535 -> 255
    elif mode == "I":
        # Older Pillow opens 16-bit PNG greyscale as "I": values above 255 can only mean a 16-bit range.
        if values.max(initial=0.0) > 255:
            values = values / 257.0
    elif values.max(initial=0.0) <= 1.0:  # "F": floats in [0, 1] are the usual convention
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """The image in mode RGB, from any mode Pillow opens.

    Alpha is dropped, not composited: the colour under a transparent pixel is kept, which is what
    ``Image.convert("RGB")`` does in torchvision's datasets and in the study's code.
    """
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_DEPTH_MODES:
        return Image.fromarray(_high_depth_to_uint8(np.asarray(image), image.mode)).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        # Through RGBA so Pillow applies the palette without its "palette with transparency" warning.
        image = image.convert("RGBA")
    # Covers RGBA, LA, PA (alpha dropped), L, 1, P, CMYK (Pillow's naive inversion), YCbCr, LAB, HSV.
    return image.convert("RGB")


def _open_and_load(path: Path) -> Image.Image:
    image = None
    try:
        image = Image.open(path)
        limit = Image.MAX_IMAGE_PIXELS
        if limit and image.width * image.height > limit:
            warnings.warn(
                f"{path}: {image.width} x {image.height} pixels, more than Pillow's decompression-bomb limit "
                f"of {limit:,}; decoded anyway (it takes memory and time). Shrink the file if it is not meant "
                "to be this large.",
                HugeImageWarning,
                stacklevel=2,
            )
        image.load()  # Image.open is lazy: force the decode here so truncation errors surface now
        return image
    except BaseException:
        if image is not None:
            image.close()
        raise


def _open(path: Path) -> Image.Image:
    """Open and fully decode ``path``; every failure becomes ImageDecodeError naming the file."""
    if not path.is_file():
        raise ImageDecodeError(path, "no such file" if not path.exists() else "not a regular file")
    try:
        return _open_and_load(path)
    except Image.DecompressionBombError as err:
        raise ImageDecodeError(path, f"image too large to decode safely ({err})") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # UnidentifiedImageError is an OSError
        raise ImageDecodeError(path, str(err) or type(err).__name__) from err


def _resized_rgb(path: Path, image: Image.Image, width: int, height: int, resize: str) -> np.ndarray:
    """``image`` in RGB at ``width`` x ``height`` (filter ``resize``; unchanged at its own size), (3, H, W)."""
    try:
        rgb = to_rgb(image)
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), _PIL_FILTERS[resize])
    except (OSError, ValueError) as err:  # e.g. a mode Pillow cannot convert
        raise ImageDecodeError(path, f"cannot convert mode {image.mode} to RGB ({err})") from err
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def load_rgb(path: str | Path, size: int, resize: str = "bilinear") -> np.ndarray:
    """Decode ``path`` to RGB and resize it to (3, size, size) uint8 with filter ``resize``.

    The aspect ratio is not kept, as in the study. Pillow's bilinear resize (the default) widens its
    filter when it shrinks, so downsampling is antialiased (the same pixels torchvision's Resize gives
    on a PIL image); ``nearest`` is Pillow's nearest-neighbour, what the study's code used on Pets and
    Intel. EXIF orientation is not applied, matching torchvision and the study.
    """
    _check_size(size)
    check_resize(resize)
    path = Path(path)
    with _open(path) as image:
        return np.ascontiguousarray(_resized_rgb(path, image, size, size, resize))


def source_extent(width: int, height: int, side: int) -> tuple[int, int]:
    """(h, w) of a ``width`` x ``height`` image scaled so that its longer side is at most ``side``
    (never enlarged), each side rounded and at least 1 pixel: the aspect ratio kept."""
    scale = min(1.0, side / max(width, height))
    return max(1, round(height * scale)), max(1, round(width * scale))


def load_source(path: str | Path, side: int, resize: str = "bilinear") -> tuple[np.ndarray, tuple[int, int]]:
    """Decode ``path`` to RGB keeping its aspect ratio: (array (3, side, side) uint8, (h, w)).

    The image is resized with ``resize`` so that its longer side is at most ``side`` (a smaller image
    keeps its own size) and stored in the top-left (h, w) corner of the array; the rest is zero. A crop
    cut from it in its own (h, w) is a crop of the original, as torchvision's RandomResizedCrop cuts it
    from the decoded file before resizing (the study's SimMIM; ``augment.random_resized_crop_boxes``).
    """
    _check_size(side)
    check_resize(resize)
    path = Path(path)
    with _open(path) as image:
        h, w = source_extent(image.width, image.height, side)
        out = np.zeros((3, side, side), dtype=np.uint8)
        out[:, :h, :w] = _resized_rgb(path, image, w, h, resize)
    return out, (h, w)


def _trimap_values(image: Image.Image, path: Path) -> np.ndarray:
    """The raw trimap values (H, W) as int64; a palette image gives its indices, as Oxford's PNGs hold."""
    if image.mode in ("L", "P", "1") or image.mode in _HIGH_DEPTH_MODES:
        return np.asarray(image).astype(np.int64)
    pixels = np.asarray(image.convert("RGB"))
    if not (
        np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 0], pixels[..., 2])
    ):
        raise TrimapError(path, f"it is a colour image (mode {image.mode}), not a single-channel map")
    return pixels[..., 0].astype(np.int64)


def load_mask(path: str | Path, size: int, classes: MaskClasses = TRIMAP) -> np.ndarray:
    """Decode a mask file to (size, size) uint8 class indices through ``classes``' value map: each
    declared value becomes its class, an ignore value ``IGNORE``; any other value raises TrimapError.

    Nearest-neighbour resize, so no new values appear (the image's ``nearest`` resize of a file of the
    same size samples the same pixels: image and trimap resized jointly). With ``TRIMAP`` (the default), an Oxford-IIIT
    Pet trimap's 1/2/3 become classes 0 pet, 1 background, 2 boundary.
    """
    _check_size(size)
    path = Path(path)
    with _open(path) as image:
        values = _trimap_values(image, path)
    mapped = _lookup_table(classes)[np.where((values >= 0) & (values <= 255), values, _UNDECLARED)]
    undeclared = mapped == _UNDECLARED
    if undeclared.any():
        found = [int(v) for v in np.unique(values[undeclared])]
        raise TrimapError(path, f"found values {found[:10]}, expected only {classes.describe()}")
    classes = mapped.astype(np.uint8)
    resized = Image.fromarray(classes).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.uint8).copy()


def load_trimap(path: str | Path, size: int) -> np.ndarray:
    """An Oxford-IIIT Pet trimap as (size, size) uint8 classes 0 pet, 1 background, 2 boundary
    (``load_mask`` with ``TRIMAP``); any value other than 1/2/3 raises TrimapError."""
    return load_mask(path, size, TRIMAP)
