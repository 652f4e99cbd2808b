"""Patch embeddings of a frozen encoder: ``(N, P, D)`` float32 tokens, at any block, cached on disk.

``load_encoder`` reads a viny checkpoint or the study authors' state_dict (converted in memory, see
``authors.py``). ``extract_patch_tokens`` runs an encoder (or a checkpoint file) over a set of images
in eval mode, batched, without gradients or augmentation, and returns its patch tokens (CLS dropped).

Layers are named as ``ViNy.patch_tokens_per_block`` names them: blocks ``1..depth``. Block ``depth``
(and ``"final"``, the default) is taken after the final LayerNorm, i.e. what ``forward`` returns;
earlier blocks are the raw residual stream.

Preprocessing is the evaluation path of every stage: uint8 images -> float [0, 1] -> ImageNet
normalisation. A float tensor is taken as already preprocessed. Images whose resolution differs from
the model's ``image_size`` are resized with bilinear interpolation with antialiasing
(``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``); that is linear and
preserves constants, so resizing before or after the normalisation gives the same result.

Cache: one ``.pt`` file per (encoder, images, layer), holding ``{"key": json, "tokens": tensor}``
and read back with ``torch.load(weights_only=True)``; written atomically (temp file + rename). The
key is the sha256 of the encoder's weights and its model config (so a checkpoint file, the same
weights imported from the authors' file, or the encoder object itself share entries), the dataset
name, a digest of the image ids, a digest of the image bytes, their shape and dtype, ``split``, the
block and ``cache_key_extra``. The folder is ``cache_dir``, else ``$VINY_CACHE_DIR/embeddings``, else
``~/.cache/viny/embeddings``. Delete files there freely: a missing or unreadable entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from viny_probe.analysis.authors import (
    authors_checkpoint_payload,
    authors_to_viny_state,
    describe_foreign,
    is_authors_state_dict,
)
from viny_probe.checkpoint import FORMAT_VERSION, atomic_write_bytes, encoder_from_checkpoint, file_digest
from viny_probe.data.augment import normalize, to_float
from viny_probe.data.base import ImageSet
from viny_probe.errors import VinyError
from viny_probe.model import ViNy
from viny_probe.progress import track

#: Bump when the extraction itself changes (preprocessing, token selection): old entries stop matching.
CACHE_VERSION = 1

LayerSpec = str | int | Sequence[int]


def load_encoder(path: str | Path, heads: int | None = None) -> tuple[ViNy, dict]:
    """Load an encoder, in eval mode on the CPU, from a viny checkpoint or the authors' state_dict.

    Returns ``(encoder, checkpoint_dict)``. For the authors' file the dict is the viny checkpoint that
    ``import_authors_checkpoint`` would write (regime "imported", lineage naming the file and its
    digest); ``heads`` overrides the head count assumed for it (default 8, the study's). Anything else
    raises VinyError: a file torch cannot read, a dict of neither format, or an encoder whose tensors do
    not match the architecture (the message names the missing/unexpected keys).
    """
    path = Path(path)
    if not path.is_file():
        raise VinyError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign/corrupt files
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise VinyError(
            f"{path} is not a loadable checkpoint ({type(e).__name__}: {first}); expected a viny checkpoint "
            "or the study authors' ViT state_dict"
        ) from None
    if isinstance(obj, dict) and "encoder" in obj and "format_version" in obj:
        if obj["format_version"] > FORMAT_VERSION:
            raise VinyError(
                f"{path} has checkpoint format {obj['format_version']}; this viny reads up to {FORMAT_VERSION}"
            )
        if "model_config" not in obj or not isinstance(obj["encoder"], dict):
            raise VinyError(f"{path} is a damaged viny checkpoint: no 'model_config' or no encoder state")
        ckpt = obj
    elif is_authors_state_dict(obj):
        cfg, state = authors_to_viny_state(obj, heads)
        ckpt = authors_checkpoint_payload(cfg, state, path, file_digest(path))
    else:
        raise VinyError(describe_foreign(path, obj))
    encoder = encoder_from_checkpoint(ckpt, path)
    return encoder.eval(), ckpt


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The embedding cache folder: ``cache_dir``, else ``$VINY_CACHE_DIR/embeddings``, else
    ``~/.cache/viny/embeddings`` (``$VINY_CACHE_DIR`` is the root of all viny caches)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    root = os.environ.get("VINY_CACHE_DIR") or Path.home() / ".cache" / "viny"
    return Path(root).expanduser() / "embeddings"


def encoder_digest(encoder: nn.Module) -> str:
    """sha256 of an encoder's weights (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(encoder.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _tensor_digest(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous()
    return hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy()).hexdigest()


def _resolve_layers(layers: LayerSpec, depth: int) -> list[tuple[str | int, int]]:
    """(name to return it under, block number) pairs; out-of-range blocks raise VinyError."""
    valid = f"'final', 'all', a block number 1..{depth} or a list of block numbers"
    if isinstance(layers, str):
        if layers == "final":
            return [("final", depth)]
        if layers == "all":
            return [(b, b) for b in range(1, depth + 1)]
        raise VinyError(f"layers must be {valid}, got {layers!r}")
    items = [layers] if isinstance(layers, int) else list(layers) if isinstance(layers, Sequence) else None
    if not items or any(isinstance(b, bool) or not isinstance(b, int) for b in items):
        raise VinyError(f"layers must be {valid}, got {layers!r}")
    for b in items:
        if not 1 <= b <= depth:  # the same message ViNy.patch_tokens_per_block raises
            raise VinyError(f"layer {b} is out of range: this encoder has blocks 1..{depth}")
    return [(b, b) for b in dict.fromkeys(items)]


def parse_layers(layer: LayerSpec, depth: int) -> str | list[int]:
    """A ``--layer`` argument -> what ``extract_patch_tokens`` takes: ``"final"`` | ``"all"`` | a block
    number | ``"3,6,12"`` | a list of ints. Checked against ``depth`` here, before any data is loaded."""
    valid = f"'final', 'all', a block number 1..{depth} or a comma-separated list of them"
    if isinstance(layer, str):
        text = layer.strip().lower()
        if text in ("final", "all"):
            return text
        try:
            blocks = [int(part) for part in text.replace(" ", "").split(",") if part]
        except ValueError:
            raise VinyError(f"--layer must be {valid}, got {layer!r}") from None
    elif isinstance(layer, int) and not isinstance(layer, bool):
        blocks = [layer]
    elif isinstance(layer, Sequence):
        blocks = list(layer)
    else:
        raise VinyError(f"--layer must be {valid}, got {layer!r}")
    if not blocks or any(isinstance(b, bool) or not isinstance(b, int) for b in blocks):
        raise VinyError(f"--layer must be {valid}, got {layer!r}")
    for b in blocks:
        if not 1 <= b <= depth:
            raise VinyError(
                f"layer {b} is out of range: this encoder has blocks 1..{depth} (or use 'final' / 'all')"
            )
    return list(dict.fromkeys(blocks))


def layer_label(label: str | int) -> str:
    """How results name a layer: ``"final"`` or ``"block B"``."""
    return "final" if label == "final" else f"block {label}"


def _as_images(images: ImageSet | torch.Tensor, channels: int) -> tuple[torch.Tensor, str, list[str] | None]:
    if isinstance(images, ImageSet):
        tensor, name, ids = images.images, images.name, list(images.ids)
    elif isinstance(images, torch.Tensor):
        tensor, name, ids = images, "tensor", None
    else:
        raise VinyError(f"images must be an ImageSet or a (N, 3, H, W) tensor, got {type(images).__name__}")
    if tensor.ndim != 4 or tensor.shape[1] != channels:
        raise VinyError(f"images must be (N, {channels}, H, W), got {tuple(tensor.shape)}")
    if tensor.shape[0] == 0:
        raise VinyError(f"no images to embed in {name!r}")
    if tensor.dtype != torch.uint8 and not tensor.is_floating_point():
        raise VinyError(f"images must be uint8 (0..255) or float (already normalised), got {tensor.dtype}")
    return tensor, name, ids


def _prepare(batch: torch.Tensor, image_size: int, device: torch.device) -> torch.Tensor:
    """uint8 -> [0, 1] -> ImageNet-normalised (float: as is), resized to the model's resolution."""
    x = batch.to(device, non_blocking=True)
    x = normalize(to_float(x)) if x.dtype == torch.uint8 else x.float()
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    return x


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "images"


def _load_cached(path: Path, key_json: str, shape: tuple[int, ...]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file is just a miss; it is rewritten below
        return None
    if not isinstance(obj, dict) or obj.get("key") != key_json:
        return None
    tokens = obj.get("tokens")
    if not isinstance(tokens, torch.Tensor) or tuple(tokens.shape) != shape or tokens.dtype != torch.float32:
        return None
    return tokens


def extract_patch_tokens(
    checkpoint_or_encoder: str | Path | nn.Module,
    images: ImageSet | torch.Tensor,
    layers: LayerSpec = "final",
    batch_size: int = 64,  # on this 2-core CPU 64 ran at 130 img/s (ViNy), 256 at 84: activations outgrow the cache
    cache_dir: str | Path | None = None,
    cache_key_extra: Any = None,
    *,
    split: str = "",
    device: str | torch.device | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> dict[str | int, torch.Tensor]:
    """Patch tokens ``(N, P, D)`` float32 (CPU) of ``images`` at the requested layers.

    checkpoint_or_encoder: a ViNy (used as is, put in eval mode for the call and restored after) or a
        path that ``load_encoder`` accepts (viny checkpoint or the authors' state_dict).
    images: an ImageSet, or a ``(N, 3, H, W)`` tensor: uint8 is preprocessed like every stage's
        evaluation (to [0, 1], ImageNet normalisation), float is taken as already preprocessed. Any
        H = W other than the model's ``image_size`` is resized (bilinear, antialiased).
    layers: ``"final"`` (default: the last block after the final LayerNorm) -> ``{"final": T}``;
        a block number ``b`` in ``1..depth`` -> ``{b: T}``; a list of them -> one entry each;
        ``"all"`` -> ``{1: T, ..., depth: T}``. Out of range -> VinyError naming ``1..depth``.
    cache_dir / use_cache: where entries live (see the module docstring) / whether to use them at all.
    cache_key_extra: anything JSON-serialisable, added to the key (e.g. a preprocessing variant).
    split: the split's name ("train", "test", ...), part of the key and of the file name.
    device: where the model runs; default the encoder's device, or CUDA if available for a path.
    progress: show a progress bar while extracting.

    Only the layers missing from the cache are computed, in one pass that stops at the deepest one.
    """
    if isinstance(checkpoint_or_encoder, nn.Module):
        encoder = checkpoint_or_encoder
        if not hasattr(encoder, "patch_tokens_per_block") or not hasattr(encoder, "cfg"):
            raise VinyError(f"expected a ViNy encoder, got {type(encoder).__name__}")
        default_device = next(encoder.parameters()).device
    elif isinstance(checkpoint_or_encoder, (str, Path)):
        encoder, _ = load_encoder(checkpoint_or_encoder)
        default_device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        raise VinyError(
            f"expected a checkpoint path or a ViNy encoder, got {type(checkpoint_or_encoder).__name__}"
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise VinyError(f"batch_size must be a positive integer, got {batch_size!r}")
    cfg = encoder.cfg
    wanted = _resolve_layers(layers, cfg.depth)
    tensor, name, ids = _as_images(images, cfg.channels)
    n = tensor.shape[0]
    shape = (n, cfg.num_patches, cfg.dim)

    found: dict[int, torch.Tensor] = {}
    files: dict[int, tuple[Path, str]] = {}
    if use_cache:
        root = resolve_cache_dir(cache_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VinyError(
                f"cannot create the embedding cache folder {root} ({e}); pass another cache_dir, set "
                "VINY_CACHE_DIR, or use_cache=False"
            ) from None
        base = {
            "version": CACHE_VERSION,
            "encoder": encoder_digest(encoder),
            "model_config": cfg.to_dict(),
            "dataset": name,
            "ids": None if ids is None else hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            "images": _tensor_digest(tensor),
            "images_shape": list(tensor.shape),
            "images_dtype": str(tensor.dtype),
            "split": split,
            "extra": cache_key_extra,
        }
        stem = _slug(f"{name}-{split}" if split else name)
        for _, block in wanted:
            key_json = json.dumps({**base, "block": block}, sort_keys=True, default=str)
            digest = hashlib.sha256(key_json.encode()).hexdigest()[:24]
            path = root / f"{stem}-L{block}-n{n}-{digest}.pt"
            files[block] = (path, key_json)
            cached = _load_cached(path, key_json, shape)
            if cached is not None:
                found[block] = cached

    missing = [block for _, block in wanted if block not in found]
    if missing:
        computed = _run(
            encoder,
            tensor,
            missing,
            batch_size,
            torch.device(device or default_device),
            shape,
            progress,
            name,
        )
        for block, tokens in computed.items():
            if use_cache:
                path, key_json = files[block]
                payload = {"key": key_json, "tokens": tokens}
                atomic_write_bytes(path, lambda f, p=payload: torch.save(p, f))
            found[block] = tokens
    return {label: found[block] for label, block in wanted}


def _run(
    encoder: nn.Module,
    images: torch.Tensor,
    blocks: list[int],
    batch_size: int,
    device: torch.device,
    shape: tuple[int, int, int],
    progress: bool,
    name: str,
) -> dict[int, torch.Tensor]:
    """One pass over ``images`` in eval mode; the encoder's mode and device are restored afterwards."""
    n = shape[0]
    out = {b: torch.empty(shape, dtype=torch.float32) for b in blocks}
    was_training = encoder.training
    home = next(encoder.parameters()).device
    encoder.eval()
    encoder.to(device)
    try:
        starts = range(0, n, batch_size)
        for start in track(starts, total=len(starts), description=f"embedding {name}", enabled=progress):
            stop = min(start + batch_size, n)
            with torch.inference_mode():
                x = _prepare(images[start:stop], encoder.cfg.image_size, device)
                tokens = encoder.patch_tokens_per_block(x, blocks)
            for b in blocks:  # outside inference mode: the results stay ordinary (autograd-usable) tensors
                out[b][start:stop].copy_(tokens[b].float())
    finally:
        encoder.to(home)
        encoder.train(was_training)
    return out
