"""Decode a dataset once, keep it as ``.npy`` arrays on disk, and load it back memory-mapped.

One cache entry is a folder ``<cache_dir>/<name>-<size>px-<hash>/`` holding ``images.npy`` (N, 3, S, S)
uint8, optionally ``labels.npy`` (N,) int64 and ``masks.npy`` (N, S, S) uint8, and ``meta.json``
(name, class_names, ids, the files left out, and a readable summary of the key). The hash covers
everything that changes the content, including every source file's size and mtime, so an edited or
added file gives a new entry instead of stale pixels. Entries are written to a temporary folder
beside the final one and renamed into place, so a crash never leaves a half-written entry behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from viny_probe.data import decode
from viny_probe.data.base import ImageSet
from viny_probe.errors import VinyError, VinyWarning

CACHE_FORMAT = 2  # 2: skipped images are recorded with their ids (the split is keyed by them)
ON_ERROR_CHOICES = ("skip", "fail")

# Arrays at most this large are copied into RAM on load (writable, no memory map kept open);
# larger ones (an ImageNet subset of ~10 GB) stay memory-mapped and are paged in on demand.
IN_MEMORY_MAX_BYTES = 1 << 30
# Show a progress bar only when decoding takes long enough to be worth watching.
PROGRESS_MIN_FILES = 500
_CHUNK = 256  # images decoded per batch of thread-pool work, then written to the memory map


class SkippedImagesWarning(VinyWarning):
    """Some images of a dataset could not be read and were left out (``on_error="skip"``)."""


@dataclass(frozen=True)
class Sample:
    """One image to decode: its file, an optional class index and trimap file, and its id."""

    image: Path
    id: str
    label: int | None = None
    mask: Path | None = None


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The cache root: the argument, else ``$VINY_CACHE_DIR``, else ``~/.cache/viny``."""
    chosen = cache_dir or os.environ.get("VINY_CACHE_DIR") or Path.home() / ".cache" / "viny"
    return Path(chosen).expanduser().resolve()


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR_CHOICES:
        raise VinyError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")


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


def read_entry(entry: Path) -> tuple[ImageSet, dict[str, Any]]:
    """Load a finished cache entry folder as (ImageSet, meta)."""
    try:
        meta = json.loads((entry / "meta.json").read_text())
        images = _as_tensor(entry / "images.npy")
        labels = _as_tensor(entry / "labels.npy") if (entry / "labels.npy").exists() else None
        masks = _as_tensor(entry / "masks.npy") if (entry / "masks.npy").exists() else None
        dataset = ImageSet(
            name=meta["name"],
            images=images,
            labels=labels,
            masks=masks,
            class_names=list(meta["class_names"]),
            ids=list(meta["ids"]),
            skipped=[item[2] for item in meta.get("skipped", [])],
        )
    except (OSError, ValueError, KeyError) as err:
        raise VinyError(
            f"the dataset cache entry '{entry}' is damaged ({err}); delete that folder and run again "
            "to rebuild it"
        ) from err
    return dataset, meta


def _remove_stale_staging(root: Path, entry_name: str, max_age_s: float = 24 * 3600) -> None:
    """Delete temporary folders left by builds of this entry that were killed (older than a day,
    so that a build still running in another process is left alone)."""
    now = time.time()
    for stale in root.glob(f".tmp-{entry_name}-*"):
        with contextlib.suppress(OSError):
            if now - stale.stat().st_mtime > max_age_s:
                shutil.rmtree(stale, ignore_errors=True)


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
    if (entry / "meta.json").exists():
        return read_entry(entry)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(root, entry.name)
        staging = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=root))
    except OSError as err:
        raise VinyError(
            f"cannot write the dataset cache in '{root}' ({err}); pass another cache_dir or set VINY_CACHE_DIR"
        ) from err
    try:
        build(staging)
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
) -> None:
    """Write ``meta.json``; ``skipped`` lists (file, reason, id) of images left out."""
    meta = {
        "format": CACHE_FORMAT,
        "name": name,
        "class_names": list(class_names),
        "ids": list(ids),
        "skipped": [list(item) for item in skipped],
        "key": summary or {},
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _chunks(items: Sequence[Sample], size: int) -> Iterator[Sequence[Sample]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _decode_sample(
    sample: Sample, size: int
) -> tuple[np.ndarray, np.ndarray | None] | decode.ImageDecodeError:
    """(image (3, S, S), mask (S, S) or None), or the error that names the unreadable file."""
    try:
        image = decode.load_rgb(sample.image, size)
        mask = None if sample.mask is None else decode.load_trimap(sample.mask, size)
    except decode.ImageDecodeError as err:  # TrimapError included; other errors are not per-file
        return err
    return image, mask


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
    samples: Sequence[Sample], size: int, workers: int, description: str
) -> Iterator[tuple[Sample, tuple[np.ndarray, np.ndarray | None] | decode.ImageDecodeError]]:
    """(sample, decoded arrays or its error) in input order, decoded by a thread pool chunk by chunk.

    Pillow releases the GIL while decoding and resizing, so threads use every core without the cost
    of sending arrays between processes; chunks bound the memory held by finished-but-unwritten images.
    """
    progress = _progress(len(samples), description)
    with ThreadPoolExecutor(max_workers=workers or min(16, os.cpu_count() or 1)) as pool:
        with progress or contextlib.nullcontext():
            task = progress.add_task(description, total=len(samples)) if progress else None
            for chunk in _chunks(samples, _CHUNK):
                yield from zip(chunk, pool.map(lambda s: _decode_sample(s, size), chunk), strict=True)
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
    on_error: str,
    summary: dict[str, Any] | None = None,
    workers: int = 0,
) -> None:
    """Decode ``samples`` into ``folder`` as images.npy (N, 3, S, S), labels.npy, masks.npy, meta.json.

    Decoded images are written into memory-mapped arrays chunk by chunk, so the whole set never has to fit in RAM. Unreadable
    files are recorded in meta.json (``on_error="skip"``) or raise at once (``on_error="fail"``).
    ``workers`` decoding threads; 0 means one per CPU core (at most 16).
    """
    with_labels = any(s.label is not None for s in samples)
    with_masks = any(s.mask is not None for s in samples)
    n = len(samples)
    images = np.lib.format.open_memmap(
        folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, 3, size, size)
    )
    masks = (
        np.lib.format.open_memmap(folder / "masks.npy", mode="w+", dtype=np.uint8, shape=(n, size, size))
        if with_masks
        else None
    )
    labels: list[int] = []
    ids: list[str] = []
    skipped: list[tuple[str, str, str]] = []
    for sample, result in _decoded(samples, size, workers, f"decoding {name} ({n} images)"):
        if isinstance(result, decode.ImageDecodeError):
            if on_error == "fail":
                raise result
            skipped.append((str(result.path), result.reason, sample.id))
            continue
        row = len(ids)  # rows are compacted: skipped images leave no gap
        images[row] = result[0]
        if masks is not None:
            masks[row] = result[1]
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
    write_meta(folder, name=name, class_names=class_names, ids=ids, skipped=skipped, summary=summary)


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
    on_error: str = "skip",
    cache_dir: str | Path | None = None,
    key: dict[str, Any] | None = None,
    workers: int = 0,
) -> ImageSet:
    """Decode ``samples`` at ``size`` once, cache them, and return the ImageSet (name ``name``).

    The cache key covers ``name``, ``size``, ``class_names``, ``key`` (the loader's own choices: root,
    subset, seed) and, per sample, its id, label and the size + mtime of its image and trimap files.
    Images that cannot be read are left out with a SkippedImagesWarning (``on_error="skip"``, also
    on a cache hit) or raise ImageDecodeError naming the file (``on_error="fail"``).
    """
    check_on_error(on_error)
    if not samples:
        raise VinyError(f"{name}: no images to load")
    summary = {
        "name": name,
        "size": size,
        "decoder": decode.DECODER_VERSION,
        "format": CACHE_FORMAT,
        **(key or {}),
    }
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
            on_error=on_error,
            summary=summary,
            workers=workers,
        ),
        cache_dir,
    )
    report_skipped(name, meta.get("skipped", []), len(samples), on_error)
    return dataset
