"""Patch tokens on disk: `viny extract` writes them, your own tools (numpy, pandas, a notebook) and
viny's diagnostics (the model source ``tokens:DIR``) read them.

A token folder holds ``index.json`` and one ``.npy`` shard per block and run of images::

    index.json                 format, model (source, weights sha256, grid, patch and input size, depth,
                               width), dataset, split seed, test size, and per split the image ids,
                               blocks, dtype, and the shards
    test/block-12-00000.npy    (n, P, D) tokens of images 0..n-1 of the split at block 12, row-major
                               patches (P = g * g), float16 or float32
    test/labels.npy            (N, P) uint8 majority trimap class of each patch (datasets with masks)

Extraction streams: ``shard_images`` images at a time go through the model at every chosen block and are
written before the next run starts, so memory holds one run's tokens whatever the dataset's size. Every
file is written to a temporary name and renamed; index.json is written last, so a folder without it is
an extraction that did not finish.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from viny_probe.analysis.options import EvalSet, ExtractOptions, ModelOptions
from viny_probe.analysis.sources.base import TokenModel
from viny_probe.checkpoint import atomic_write_bytes, write_json
from viny_probe.data.base import SEG_CLASSES, ImageSet
from viny_probe.data.patch_labels import patch_majority_labels
from viny_probe.errors import VinyError

FORMAT = "viny-tokens/1"
DTYPES = {"float16": np.float16, "float32": np.float32}
DEFAULT_SHARD_IMAGES = ExtractOptions.shard_images  # the defaults' one home: analysis.options


def _save_npy(path: Path, array: np.ndarray) -> None:
    atomic_write_bytes(path, lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def model_record(model: TokenModel) -> dict:
    """What index.json says of the model the tokens came from."""
    return {
        "source": model.source,
        "name": model.name,
        "weights_sha256": model.digest(),
        "grid": model.grid,
        "patch_size": model.patch_size,
        "image_size": model.image_size,
        "depth": model.depth,
        "dim": model.dim,
        "mean": list(model.mean),
        "std": list(model.std),
        "config": model.config,
        "notes": list(model.notes),
        # what the overlap guard and the evaluation defaults read (viny checkpoints only)
        "meta": {k: model.meta[k] for k in ("regime", "lineage") if k in model.meta},
    }


def extract_split(
    model: TokenModel,
    images: ImageSet,
    out: Path,
    split: str,
    blocks: Sequence[int],
    dtype: str = "float16",
    shard_images: int = DEFAULT_SHARD_IMAGES,
    extract_options: dict | None = None,
) -> dict:
    """Write ``images``' patch tokens at ``blocks`` into ``out/split/``, ``shard_images`` at a time;
    returns the split's entry of index.json (ids, blocks, dtype, shards, labels file, img/s)."""
    from viny_probe.analysis.embeddings import extract_patch_tokens

    if dtype not in DTYPES:
        raise VinyError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    n = len(images)
    shards = []
    started = time.perf_counter()
    for start in range(0, n, shard_images):
        part = images.subset(list(range(start, min(start + shard_images, n))))
        tokens = extract_patch_tokens(model, part, list(blocks), use_cache=False, **(extract_options or {}))
        for block in blocks:
            name = f"block-{block:02d}-{start:05d}.npy"
            _save_npy(folder / name, tokens[block].numpy().astype(DTYPES[dtype]))
            shards.append({"block": block, "file": f"{split}/{name}", "start": start, "count": len(part)})
        del tokens
    seconds = time.perf_counter() - started
    labels = None
    if images.masks is not None:
        labels = f"{split}/labels.npy"
        patch = patch_majority_labels(images.masks, model.patch_size, num_classes=len(SEG_CLASSES))
        _save_npy(out / labels, patch.numpy().astype(np.uint8))
    return {
        "ids": list(images.ids),
        "images": n,
        "blocks": list(blocks),
        "dtype": dtype,
        "shards": shards,
        "labels": labels,
        "classes": list(SEG_CLASSES) if labels else None,
        "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else None,
    }


def write_index(out: Path, index: dict) -> None:
    write_json(out / "index.json", index)


@dataclass
class TokenFolder:
    """A token folder opened for reading (``TokenFolder.open(path)``)."""

    path: Path
    index: dict

    @classmethod
    def open(cls, path: str | Path) -> TokenFolder:
        path = Path(path).expanduser()
        index_file = path / "index.json"
        if not index_file.is_file():
            what = "an extraction that did not finish" if path.is_dir() else "no such folder"
            raise VinyError(f"{path}: no index.json ({what}); write one with `viny extract SOURCE -o {path}`")
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError) as e:
            raise VinyError(f"{index_file} is not readable JSON ({e}); extract the tokens again") from None
        if index.get("format") != FORMAT:
            raise VinyError(f"{index_file}: format {index.get('format')!r}, not {FORMAT!r}")
        return cls(path, index)

    @property
    def model(self) -> dict:
        return self.index["model"]

    def read(self, block: int, ids: Sequence[str]) -> torch.Tensor:
        """``(len(ids), P, D)`` float32 tokens of the images named ``ids`` at ``block``, from whichever
        split holds them; a VinyError naming the ids the folder does not hold."""
        where: dict[str, tuple[str, int]] = {}
        for split, entry in self.index["splits"].items():
            if block in entry["blocks"]:
                for row, image_id in enumerate(entry["ids"]):
                    where.setdefault(image_id, (split, row))
        missing = [i for i in ids if i not in where]
        if missing:
            held = sorted({b for e in self.index["splits"].values() for b in e["blocks"]})
            raise VinyError(
                f"{self.path}: {len(missing)} of the {len(ids)} images asked for at block {block} are not in "
                f"this token folder (e.g. {missing[0]!r}; it holds blocks {held}); extract them with `viny "
                "extract` using the same dataset, split seed and sizes"
            )
        model = self.model
        out = torch.empty(len(ids), model["grid"] ** 2, model["dim"], dtype=torch.float32)
        cache: dict[str, np.ndarray] = {}
        for k, image_id in enumerate(ids):
            split, row = where[image_id]
            shard = next(
                s
                for s in self.index["splits"][split]["shards"]
                if s["block"] == block and s["start"] <= row < s["start"] + s["count"]
            )
            if shard["file"] not in cache:
                cache[shard["file"]] = np.load(self.path / shard["file"], mmap_mode="r", allow_pickle=False)
            out[k] = torch.tensor(np.asarray(cache[shard["file"]][row - shard["start"]], dtype=np.float32))
        return out

    def token_model(self, source: str) -> TokenModel:
        """A TokenModel that serves these tokens to the diagnostics (by image id) and refuses to embed
        images it does not hold."""
        m = self.model

        def refuse(images, blocks):
            raise VinyError(
                f"{source}: a token folder holds tokens of the images it was extracted from and cannot embed "
                "other images; give the diagnostics the same dataset, split seed and sizes"
            )

        depth = m["depth"]
        held = sorted({b for e in self.index["splits"].values() for b in e["blocks"]})
        notes = [
            f"tokens read from {self.path} (extracted from {m['source']}, weights {m['weights_sha256'][:16]})"
        ]
        if held != list(range(1, depth + 1)):
            notes.append(f"the folder holds blocks {held} of {depth}")
        model = TokenModel(
            nn.Identity(),
            refuse,
            depth=depth,
            dim=m["dim"],
            patch_size=m["patch_size"],
            image_size=m["image_size"],
            mean=tuple(m["mean"]),
            std=tuple(m["std"]),
            source=source,
            name=m["name"],
            config={**m["config"], "token_folder": str(self.path)},
            meta=dict(m.get("meta", {})),
            notes=notes + list(m.get("notes", [])),
            _digest=m["weights_sha256"],
            stored=self,  # read by embeddings.extract_patch_tokens instead of a forward pass
        )
        return model


def extract_tokens(
    source: str | TokenModel,
    out: str | Path,
    opts: ExtractOptions = ExtractOptions(),
    model: ModelOptions = ModelOptions(),
    data: EvalSet = EvalSet(),
    progress: bool = True,
) -> dict:
    """Write the patch tokens of ``source`` on the diagnostics' pool and test images into the folder
    ``out`` (see the module docstring); returns what was written and how fast.

    ``opts``: the blocks, dtype, images per shard and ``force``; ``model``: how the model is loaded and
    run (its token cache is not used: the shards are the tokens); ``data``: the evaluation data, as
    `viny probe` / `viny diagnose` choose it (dataset, split seed and test size from a viny checkpoint's
    lineage unless given; ``allow_overlap`` is not read: extracting is not evaluating)."""
    from viny_probe import __version__
    from viny_probe.analysis.embeddings import model_blocks
    from viny_probe.analysis.evaluation_data import load_probe_data, resolve_evaluation
    from viny_probe.analysis.sources.base import load_with, with_heads
    from viny_probe.checks import check_positive_int

    out = Path(out)
    if (out / "index.json").exists() and not opts.force:
        raise VinyError(f"{out} already holds extracted tokens (index.json); choose another -o, or --force")
    if opts.dtype not in DTYPES:
        raise VinyError(f"--dtype must be one of {', '.join(DTYPES)}, got {opts.dtype!r}")
    shard_images = check_positive_int(opts.shard_images, "--shard-images")
    loaded = source if isinstance(source, TokenModel) else load_with(with_heads(source, model.heads), model)
    blocks = model_blocks(loaded, opts.blocks)
    where = resolve_evaluation(
        [(loaded.name, loaded.meta)], data.dataset, data.split_seed, data.test_size, data.resize
    )
    pool, test, info = load_probe_data(
        where["dataset"],
        loaded.image_size,
        data.data_root,
        where["split_seed"],
        where["test_size"],
        data.pool_images(loaded.num_patches),
        data.test_images,
        where["resize"],
    )
    options = {"device": model.device, "batch_size": model.batch_size, "progress": progress}
    splits = {
        name: extract_split(loaded, images, out, name, blocks, opts.dtype, shard_images, options)
        for name, images in (("test", test), ("pool", pool))
    }
    index = {
        "format": FORMAT,
        "viny_version": __version__,
        "model": model_record(loaded),
        "dataset": where["dataset"],
        "split_seed": where["split_seed"],
        "test_size": where["test_size"],
        "image_size": loaded.image_size,
        "resize": where["resize"],
        "splits": splits,
        "notes": where["notes"],
    }
    write_index(out, index)  # last: a folder without index.json is an extraction that did not finish
    images = sum(s["images"] for s in splits.values())
    seconds = sum(s["seconds"] for s in splits.values())
    return {
        "out": str(out),
        "model": loaded.source,
        "images": images,
        "blocks": blocks,
        "dtype": opts.dtype,
        "bytes": sum(f.stat().st_size for f in out.rglob("*.npy")),
        "seconds": seconds,
        "images_per_second": images / seconds if seconds > 0 else None,
        "peak_shard_bytes": shard_images * loaded.num_patches * loaded.dim * 4 * len(blocks),
    }
