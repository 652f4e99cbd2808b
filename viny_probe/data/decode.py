"""Decode one image or trimap file into a square uint8 array, whatever the file's pixel mode.

Images are resized to ``size x size`` without keeping the aspect ratio, as the study does; trimaps are
resized with nearest-neighbour so that their classes stay exact.
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


def load_rgb(path: str | Path, size: int) -> np.ndarray:
    """Decode ``path`` to RGB and resize it to (3, size, size) uint8 (bilinear, antialiased).

    The aspect ratio is not kept, as in the study. Pillow's bilinear resize widens its filter when it
    shrinks, so downsampling is antialiased (the same pixels torchvision's Resize gives on a PIL image).
    EXIF orientation is not applied, matching torchvision and the study.
    """
    _check_size(size)
    path = Path(path)
    with _open(path) as image:
        try:
            rgb = to_rgb(image).resize((size, size), Image.Resampling.BILINEAR)
        except (OSError, ValueError) as err:  # e.g. a mode Pillow cannot convert
            raise ImageDecodeError(path, f"cannot convert mode {image.mode} to RGB ({err})") from err
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))


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

    Nearest-neighbour resize, so no new values appear. With ``TRIMAP`` (the default), an Oxford-IIIT
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
