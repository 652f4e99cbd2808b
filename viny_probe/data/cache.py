"""Decode a dataset once, keep it as ``.npy`` arrays on disk, and load it back memory-mapped.

One cache entry is a folder ``<cache_dir>/<name>-<size>px-<hash>/`` holding ``images.npy`` (N, 3, S, S)
uint8, optionally ``labels.npy`` (N,) int64, ``masks.npy`` (N, S, S) uint8 and ``extents.npy`` (N, 2)
int64 (the (h, w) of each image of an aspect-kept entry, ``keep_aspect``), and ``meta.json``
(name, class_names, ids, the files left out, and a readable summary of the key). The hash covers
everything that changes the content, including every source file's size and mtime, so an edited or
added file gives a new entry instead of stale pixels. Entries are written to a temporary folder
beside the final one and renamed into place, so a crash never leaves a half-written entry behind.

meta.json also records each ``.npy`` file's size and sha256 as written, checked on every read: an
array of at most ``IN_MEMORY_MAX_BYTES`` is read whole into memory anyway, so its digest covers the
whole file (about 2 GB/s, a few ms for the embedded sets); a larger one stays memory-mapped and
unread, so its digest covers only the first and last MiB and 64 KiB at each 64th of the file (a few
MiB read whatever the size). A damaged entry (size or digest changed, unreadable arrays or meta) is set
aside and built again, with a DamagedCacheWarning that says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from viny_probe.data import decode
from viny_probe.data.base import TRIMAP, ImageSet, MaskClasses
from viny_probe.errors import VinyError, VinyWarning

CACHE_FORMAT = 2  # 2: skipped images are recorded with their ids (the split is keyed by them)
ON_ERROR_CHOICES = ("skip", "fail")

# Arrays at most this large are copied into RAM on load (writable, no memory map kept open);
# larger ones (an ImageNet subset of ~10 GB) stay memory-mapped and are paged in on demand.
IN_MEMORY_MAX_BYTES = 1 << 30
# Show a progress bar only when decoding takes long enough to be worth watching.
PROGRESS_MIN_FILES = 500
_CHUNK = 256  # images decoded per batch of thread-pool work, then written to the memory map
# The digest of an array file: whole up to this size, sampled above it (see the module doc).
_SAMPLE_END_BYTES, _SAMPLE_BLOCKS, _SAMPLE_BLOCK_BYTES = 1 << 20, 64, 64 * 1024


class SkippedImagesWarning(VinyWarning):
    """Some images of a dataset could not be read and were left out (``on_error="skip"``)."""


class DamagedCacheWarning(VinyWarning):
    """A cache entry did not match what was written (or could not be read) and was built again."""


class DamagedCacheEntry(VinyError):
    """A cache entry whose files are not what was written: changed size or digest, unreadable arrays
    or meta. ``cached_imageset`` builds it again; a direct ``read_entry`` caller sees this error."""

    def __init__(self, entry: Path, why: str) -> None:
        self.entry, self.why = entry, why
        super().__init__(
            f"the dataset cache entry '{entry}' is damaged ({why}); delete that folder and run again to "
            "rebuild it"
        )


@dataclass(frozen=True)
class Sample:
    """One image to decode: its file, an optional class index and trimap file, and its id."""

    image: Path
    id: str
    label: int | None = None
    mask: Path | None = None


# What to do when viny's cache cannot be written (the same words for the decode and embedding caches).
CACHE_DIR_FIX = "set VINY_CACHE_DIR to a writable folder (it moves every viny cache there)"


def cache_root() -> Path:
    """The root of viny's caches: ``$VINY_CACHE_DIR``, else ``$HOME/.cache/viny``. Without either (HOME
    unset or empty, or naming no folder) a VinyError naming VINY_CACHE_DIR, rather than a cache in a
    folder nobody chose (Python would fall back to the password file's home, or create HOME)."""
    chosen = os.environ.get("VINY_CACHE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    home = os.environ.get("HOME")
    if not home:
        raise VinyError(f"viny's cache goes under $HOME/.cache/viny, but HOME is not set; {CACHE_DIR_FIX}")
    if not Path(home).is_dir():
        raise VinyError(
            f"viny's cache goes under $HOME/.cache/viny, but HOME={home} is not a folder; {CACHE_DIR_FIX}"
        )
    return Path(home) / ".cache" / "viny"


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The decode cache's folder: the argument, else ``cache_root()`` ($VINY_CACHE_DIR or ~/.cache/viny)."""
    return Path(cache_dir or cache_root()).expanduser().resolve()


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise VinyError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")


@dataclass(frozen=True)
class DecodeOptions:
    """How a dataset's files are decoded into pixels beyond the side ``size`` (each default written here
    once): ``load_dataset``, the loaders of the real datasets, ``decode_cached`` and ``decode_into`` take
    one, and `viny train`'s ``--resize``, ``--keep-aspect`` source, ``--workers`` and ``--on-error``
    (through ``TrainConfig``) build it.

    resize: the image filter (``decode.RESIZE_FILTERS``: bilinear, or nearest as the study's code;
        trimaps always nearest).
    keep_aspect: the images keep their aspect ratio, the longer side at most ``size``, stored padded
        with each one's (h, w) in ``ImageSet.extents`` (``decode.load_source``; no masks).
    workers: decoding threads; 0: one per CPU core (at most 16).
    on_error: ``skip`` an unreadable image (left out with a warning, also on a cache hit) or ``fail``
        (stop at the first, naming the file).

    Only ``resize`` and ``keep_aspect`` change the pixels: they alone enter the cache key
    (``key_fields``), and only when not the default, so entries written before either existed keep
    their keys.
    """

    resize: str = "bilinear"
    keep_aspect: bool = False
    workers: int = 0
    on_error: str = "skip"

    def __post_init__(self) -> None:
        decode.check_resize(self.resize)
        check_on_error(self.on_error)

    def key_fields(self) -> dict[str, Any]:
        """What these options add to a decode-cache key: ``resize`` other than bilinear, ``aspect: keep``."""
        fields: dict[str, Any] = {}
        if self.resize != DecodeOptions.resize:
            fields["resize"] = self.resize
        if self.keep_aspect:
            fields["aspect"] = "keep"
        return fields

    def loader_keywords(self) -> dict[str, Any]:
        """The keyword arguments of a ``DatasetSpec``'s loader: ``on_error`` and ``workers``, plus
        ``resize`` and ``keep_aspect`` only where they differ from the defaults (``DECODING_DEFAULTS``),
        so that a loader written before they existed keeps working for every default run."""
        given = {"resize": self.resize, "keep_aspect": self.keep_aspect}
        return {
            "on_error": self.on_error,
            "workers": self.workers,
            **{k: v for k, v in given.items() if v != DECODING_DEFAULTS[k]},
        }

    @classmethod
    def from_loader(cls, on_error: str, workers: int, given: dict[str, Any]) -> DecodeOptions:
        """The options a loader was called with (``loader_keywords``); ``given``: its other keyword
        arguments, of which the decoding ones (``DECODING_DEFAULTS``) are taken."""
        return cls(
            workers=workers, on_error=on_error, **{k: v for k, v in given.items() if k in DECODING_DEFAULTS}
        )


# The decoding keywords a DatasetSpec's loader is given only when they differ from these defaults.
DECODING_DEFAULTS = {"resize": DecodeOptions.resize, "keep_aspect": DecodeOptions.keep_aspect}


def cache_key(key: dict[str, Any]) -> str:
    """A stable hex digest of ``key`` (any JSON-serialisable dict; order of dict keys does not matter)."""
    text = json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(path: Path) -> list[Any]:
    """``[path, size, mtime_ns]`` of a file; size and mtime are None for a missing file."""
    try:
        stat = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _entry_name(key: dict[str, Any], digest: str) -> str:
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(key.get("name", "data")))
    size = f"-{key['size']}px" if "size" in key else ""
    return f"{label}{size}-{digest[:16]}"


def _as_tensor(path: Path) -> torch.Tensor:
    array = np.load(path, mmap_mode="r")
    if array.nbytes <= IN_MEMORY_MAX_BYTES:
        return torch.from_numpy(np.array(array))  # small: a private, writable copy
    # Large: keep the read-only memory map. torch warns that it cannot mark the tensor read-only;
    # ImageSet documents its tensors as read-only and indexing (ImageSet.subset) copies, so silence it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _sampled_spans(size: int) -> list[tuple[int, int]]:
    """(offset, length) of the parts of a file of ``size`` bytes a sampled digest reads."""
    middle = [(k * size // _SAMPLE_BLOCKS, _SAMPLE_BLOCK_BYTES) for k in range(1, _SAMPLE_BLOCKS)]
    return [(0, _SAMPLE_END_BYTES), *middle, (max(0, size - _SAMPLE_END_BYTES), _SAMPLE_END_BYTES)]


def array_digest(path: Path, method: str) -> str:
    """sha256 of the ``.npy`` file at ``path``: of all of it (``"full"``) or of its sampled parts
    (``"sampled"``: the first and last MiB and 64 KiB at each 64th of the file)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if method == "full":
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        else:
            size = os.fstat(f.fileno()).st_size
            for offset, length in _sampled_spans(size):
                f.seek(offset)
                h.update(f.read(length))
    return h.hexdigest()


def record_digests(folder: Path) -> None:
    """Add the size and digest of every ``.npy`` in ``folder`` to its meta.json (a finished build)."""
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    digests = {}
    for path in sorted(folder.glob("*.npy")):
        size = path.stat().st_size
        method = "full" if size <= IN_MEMORY_MAX_BYTES else "sampled"
        digests[path.name] = {"size": size, "method": method, "sha256": array_digest(path, method)}
    meta["digests"] = digests
    meta_path.write_text(json.dumps(meta, indent=1))


def entry_damage(entry: Path, meta: dict[str, Any]) -> str | None:
    """How the arrays of ``entry`` differ from what its meta.json recorded when they were written, or
    None when they match (entries written before digests were recorded are not checked)."""
    for name, recorded in meta.get("digests", {}).items():
        path = entry / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != recorded["size"]:
            return f"{name} is {size} bytes, {recorded['size']} when written"
        if array_digest(path, recorded["method"]) != recorded["sha256"]:
            return f"{name} does not match the digest recorded when it was written ({recorded['method']})"
    return None


def read_entry(entry: Path) -> tuple[ImageSet, dict[str, Any]]:
    """Load a finished cache entry folder as (ImageSet, meta), after checking its arrays' sizes and
    digests against meta.json. DamagedCacheEntry when they differ or do not load."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        damage = entry_damage(entry, meta)
        if damage is not None:
            raise DamagedCacheEntry(entry, damage)
        images = _as_tensor(entry / "images.npy")
        labels = _as_tensor(entry / "labels.npy") if (entry / "labels.npy").exists() else None
        masks = _as_tensor(entry / "masks.npy") if (entry / "masks.npy").exists() else None
        extents = _as_tensor(entry / "extents.npy") if (entry / "extents.npy").exists() else None
        dataset = ImageSet(
            name=meta["name"],
            images=images,
            labels=labels,
            masks=masks,
            class_names=list(meta["class_names"]),
            ids=list(meta["ids"]),
            skipped=[item[2] for item in meta.get("skipped", [])],
            mask_classes=MaskClasses.from_json(meta["mask_classes"]) if "mask_classes" in meta else TRIMAP,
            extents=extents,
        )
    except (FileNotFoundError, ValueError, KeyError, TypeError) as err:  # its content, not the disk
        raise DamagedCacheEntry(entry, str(err)) from err
    except OSError as err:
        raise VinyError(f"cannot read the dataset cache entry '{entry}' ({err})") from err
    return dataset, meta


def _set_aside(entry: Path) -> None:
    """Move a damaged entry out of the way (atomically, so a reader sees it whole or not at all) and delete it."""
    aside = entry.with_name(f".damaged-{entry.name}-{uuid.uuid4().hex[:8]}")
    with contextlib.suppress(FileNotFoundError):  # another process set it aside first
        os.replace(entry, aside)
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_staging(root: Path, entry_name: str, max_age_s: float = 24 * 3600) -> None:
    """Delete temporary folders left by builds of this entry that were killed (older than a day,
    so that a build still running in another process is left alone)."""
    now = time.time()
    for stale in root.glob(f".tmp-{entry_name}-*"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)


def cached_entry(key: dict[str, Any], cache_dir: str | Path | None = None) -> Path | None:
    """The folder of the finished cache entry for ``key``, or None where there is none yet."""
    entry = resolve_cache_dir(cache_dir) / _entry_name(key, cache_key(key))
    return entry if (entry / "meta.json").exists() else None


def cached_imageset(
    key: dict[str, Any], build: Callable[[Path], None], cache_dir: str | Path | None = None
) -> tuple[ImageSet, dict[str, Any]]:
    """The ImageSet cached under ``key``, building it first with ``build(folder)`` on a miss.

    ``build`` writes ``images.npy`` (and optionally ``labels.npy``, ``masks.npy``) plus ``meta.json``
    (see ``write_meta``) into the empty folder it is given. Returns the ImageSet and its meta dict.
    """
    root = resolve_cache_dir(cache_dir)
    digest = cache_key(key)
    entry = root / _entry_name(key, digest)
    if entry.exists():
        try:
            return read_entry(entry)
        except DamagedCacheEntry as err:
            message = f"the dataset cache entry '{entry}' is damaged ({err.why}); building it again"
            warnings.warn(message, DamagedCacheWarning, stacklevel=2)
            _set_aside(entry)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(root, entry.name)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=root))
    except OSError as err:
        raise VinyError(
            f"cannot write the dataset cache in '{root}' ({err.strerror or err}); {CACHE_DIR_FIX}"
        ) from err
    try:
        build(staging)
        record_digests(staging)
        (staging / "key.json").write_text(json.dumps(key, sort_keys=True, default=str))
        try:
            os.replace(staging, entry)
        except OSError:
            # Another process finished the same entry first: theirs is identical, keep it.
            if not (entry / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # no-op after a successful rename
    return read_entry(entry)


def write_meta(
    folder: Path,
    *,
    name: str,
    class_names: Sequence[str],
    ids: Sequence[str],
    skipped: Sequence[tuple[str, str, str]] = (),
    summary: dict[str, Any] | None = None,
    mask_classes: MaskClasses | None = None,
) -> None:
    """Write ``meta.json``; ``skipped`` lists (file, reason, id) of images left out; ``mask_classes``
    what the values of masks.npy mean (left out for Oxford's trimap classes, the default)."""
    meta = {
        "format": CACHE_FORMAT,
        "name": name,
        "class_names": list(class_names),
        "ids": list(ids),
        "skipped": [list(item) for item in skipped],
        "key": summary or {},
    }
    if mask_classes is not None and mask_classes != TRIMAP:
        meta["mask_classes"] = mask_classes.to_json()
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _chunks(items: Sequence[Sample], size: int) -> Iterator[Sequence[Sample]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass(frozen=True)
class _Decoding:
    """How each file of a cache entry is decoded: the side, the mask value map and the options."""

    size: int
    mask_classes: MaskClasses
    options: DecodeOptions


Decoded = tuple[np.ndarray, np.ndarray | None, tuple[int, int] | None]


def _decode_sample(sample: Sample, how: _Decoding) -> Decoded | decode.ImageDecodeError:
    """(image (3, S, S), mask (S, S) or None, (h, w) or None), or the error naming the unreadable file."""
    try:
        if how.options.keep_aspect:
            image, extent = decode.load_source(sample.image, how.size, how.options.resize)
            return image, None, extent
        image = decode.load_rgb(sample.image, how.size, how.options.resize)
        mask = None if sample.mask is None else decode.load_mask(sample.mask, how.size, how.mask_classes)
    except decode.ImageDecodeError as err:  # TrimapError included; other errors are not per-file
        return err
    return image, mask, None


def _progress(total: int, description: str):
    """A transient rich progress bar on stderr, or None when there are too few files to bother."""
    if total < PROGRESS_MIN_FILES:
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn(description),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def _decoded(
    samples: Sequence[Sample], how: _Decoding, description: str
) -> Iterator[tuple[Sample, Decoded | decode.ImageDecodeError]]:
    """(sample, decoded arrays or its error) in input order, decoded by a thread pool chunk by chunk.

    Pillow releases the GIL while decoding and resizing, so threads use every core without the cost
    of sending arrays between processes; chunks bound the memory held by finished-but-unwritten images.
    """
    progress = _progress(len(samples), description)
    with ThreadPoolExecutor(max_workers=how.options.workers or min(16, os.cpu_count() or 1)) as pool:
        with progress or contextlib.nullcontext():
            task = progress.add_task(description, total=len(samples)) if progress else None
            for chunk in _chunks(samples, _CHUNK):
                yield from zip(chunk, pool.map(lambda s: _decode_sample(s, how), chunk), strict=True)
                if progress:
                    progress.advance(task, len(chunk))


def _shrink(path: Path, rows: int) -> None:
    """Rewrite the .npy at ``path`` keeping only its first ``rows`` rows, chunk by chunk."""
    source = np.load(path, mmap_mode="r")
    smaller = path.with_name(path.stem + ".shrunk.npy")
    target = np.lib.format.open_memmap(
        smaller, mode="w+", dtype=source.dtype, shape=(rows, *source.shape[1:])
    )
    for start in range(0, rows, 1024):
        target[start : start + 1024] = source[start : min(rows, start + 1024)]
    target.flush()
    del source, target
    os.replace(smaller, path)


def decode_into(
    folder: Path,
    samples: Sequence[Sample],
    *,
    name: str,
    size: int,
    class_names: Sequence[str],
    decoding: DecodeOptions = DecodeOptions(),
    summary: dict[str, Any] | None = None,
    mask_classes: MaskClasses = TRIMAP,
) -> None:
    """Decode ``samples`` into ``folder`` as images.npy (N, 3, S, S), labels.npy, masks.npy, meta.json.

    Masks are decoded through ``mask_classes``' value map into class indices (``IGNORE`` for an ignore
    value), stored like Oxford's trimap classes. Images are resized with ``decoding.resize``; with
    ``decoding.keep_aspect`` they keep their aspect ratio (longer side at most S, padded;
    ``extents.npy`` holds each one's (h, w)) and masks are not decoded.

    Decoded images are written into memory-mapped arrays chunk by chunk, so the whole set never has to
    fit in RAM, by ``decoding.workers`` threads. Unreadable files are recorded in meta.json
    (``on_error="skip"``) or raise at once (``on_error="fail"``).
    """
    keep_aspect, on_error = decoding.keep_aspect, decoding.on_error
    with_labels = any(s.label is not None for s in samples)
    with_masks = not keep_aspect and any(s.mask is not None for s in samples)
    how = _Decoding(size, mask_classes, decoding)
    n = len(samples)
    images = np.lib.format.open_memmap(
        folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 3, size, size)
    )
    masks = (
        np.lib.format.open_memmap(folder / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
        if with_masks
        else None
    )
    extents: list[tuple[int, int]] = []
    labels: list[int] = []
    ids: list[str] = []
    skipped: list[tuple[str, str, str]] = []
    description = f"decoding {name} ({n} images)"
    for sample, result in _decoded(samples, how, description):
        if isinstance(result, decode.ImageDecodeError):
            if on_error == "fail":
                raise result
            skipped.append((str(result.path), result.reason, sample.id))
            continue
        row = len(ids)  # rows are compacted: skipped images leave no gap
        images[row] = result[0]
        if masks is not None:
            masks[row] = result[1]
        if keep_aspect:
            extents.append(result[2])
        labels.append(-1 if sample.label is None else sample.label)
        ids.append(sample.id)
    images.flush()
    del images
    if masks is not None:
        masks.flush()
        del masks
    kept = len(ids)
    if kept == 0:
        raise VinyError(
            f"none of the {n} images of {name} could be read (first: {skipped[0][0]}: {skipped[0][1]})"
        )
    if kept < n:
        _shrink(folder / "images.npy", kept)
        if with_masks:
            _shrink(folder / "masks.npy", kept)
    if with_labels:
        np.save(folder / "labels.npy", np.asarray(labels, dtype=np.int64))
    if keep_aspect:
        np.save(folder / "extents.npy", np.asarray(extents, dtype=np.int64).reshape(kept, 2))
    write_meta(
        folder,
        name=name,
        class_names=class_names,
        ids=ids,
        skipped=skipped,
        summary=summary,
        mask_classes=mask_classes if with_masks else None,
    )


def report_skipped(name: str, skipped: Sequence[Sequence[str]], total: int, on_error: str) -> None:
    """Warn (``skip``) or raise (``fail``) about images left out of a dataset, naming the first few."""
    if not skipped:
        return
    if on_error == "fail":
        path, reason = skipped[0][:2]
        raise decode.ImageDecodeError(path, f"{reason} (one of {len(skipped)} unreadable files in {name})")
    listed = "; ".join(f"{item[0]} ({item[1]})" for item in skipped[:5])
    more = f"; and {len(skipped) - 5} more" if len(skipped) > 5 else ""
    warnings.warn(
        f"{name}: skipped {len(skipped)} of {total} images that could not be read: {listed}{more}. "
        "Their names are kept in the run's data.json ('skipped'); pass --on-error fail (on_error='fail' "
        "in Python) to stop at the first one instead.",
        SkippedImagesWarning,
        stacklevel=3,
    )


def decode_cached(
    samples: Sequence[Sample],
    *,
    name: str,
    size: int,
    class_names: Sequence[str],
    decoding: DecodeOptions = DecodeOptions(),
    cache_dir: str | Path | None = None,
    key: dict[str, Any] | None = None,
    mask_classes: MaskClasses = TRIMAP,
) -> ImageSet:
    """Decode ``samples`` at ``size`` as ``decoding`` says once, cache them, and return the ImageSet
    (name ``name``).

    Mask files are read through ``mask_classes`` (default: Oxford-IIIT Pet's trimap values); a value
    map other than ``TRIMAP`` is part of the cache key, so changing it decodes the masks again.
    Images are resized with ``decoding.resize`` (``decode.RESIZE_FILTERS``; trimaps always nearest); a
    filter other than bilinear is part of the key, so the filters never share an entry and the
    bilinear entries keep theirs. ``decoding.keep_aspect``: the images keep their aspect ratio, the
    longer side at most ``size``, padded, with ``extents`` (``decode.load_source``); no masks (a key of
    its own too). ``decoding.workers`` and ``on_error`` are not part of the key.
    The cache key covers ``name``, ``size``, ``class_names``, ``key`` (the loader's own choices: root,
    subset, seed) and, per sample, its id, label and the size + mtime of its image and trimap files.
    Images that cannot be read are left out with a SkippedImagesWarning (``on_error="skip"``, also
    on a cache hit) or raise ImageDecodeError naming the file (``on_error="fail"``).
    """
    on_error = decoding.on_error
    if not samples:
        raise VinyError(f"{name}: no images to load")
    summary = {
        "name": name,
        "size": size,
        "decoder": decode.DECODER_VERSION,
        "format": CACHE_FORMAT,
        **(key or {}),
    }
    if mask_classes != TRIMAP:  # the trimap entries keep their keys (and their caches)
        summary["mask_classes"] = mask_classes.to_json()
    summary.update(decoding.key_fields())  # likewise: the bilinear, square entries keep theirs
    full_key = {
        **summary,
        "class_names": list(class_names),
        "samples": [
            [s.id, s.label, fingerprint(s.image), None if s.mask is None else fingerprint(s.mask)]
            for s in samples
        ],
    }
    dataset, meta = cached_imageset(
        full_key,
        lambda folder: decode_into(
            folder,
            samples,
            name=name,
            size=size,
            class_names=class_names,
            decoding=decoding,
            summary=summary,
            mask_classes=mask_classes,
        ),
        cache_dir,
    )
    report_skipped(name, meta.get("skipped", []), len(samples), on_error)
    return dataset
