"""Patch embeddings of a frozen model: ``(N, P, D)`` tokens, at any block, cached on disk.

The model is a ``sources.TokenModel``: a viny checkpoint (or the study authors' state_dict), a timm
model, a Hugging Face folder or your own callable, named by one string (``sources.load_model``).
``extract_patch_tokens`` runs it over a set of images in eval mode, batched, without gradients or
augmentation, and returns its patch tokens (prefix tokens such as CLS dropped by the source).

Layers are numbered as blocks ``1..depth``. Block ``depth`` (and ``"final"``, the default) is the
model's output after its final norm (ViNy: what ``forward`` returns); earlier blocks are the raw
residual stream.

Preprocessing is the evaluation path of every stage: uint8 images -> float [0, 1] -> the model's mean /
std (ImageNet's for ViNy). A float tensor is taken as already preprocessed. Images whose resolution
differs from the model's ``image_size`` are resized with bilinear interpolation with antialiasing
(``F.interpolate(mode="bilinear", antialias=True, align_corners=False)``); that is linear and
preserves constants, so resizing before or after the normalisation gives the same result.

Storage dtype: tokens are kept in float32 (default), bfloat16 or float16 (``dtype``,
``ModelOptions.token_dtype``), each batch converted as it leaves the model, so a half-precision
extraction never holds a float32 copy of the set (ViT-B/16, 1,000 images: 602 MB of float32 final
tokens, 301 MB of bfloat16). The diagnostics read them upcast chunk by chunk (docs/diagnostics.md).

Cache: one ``.pt`` file per (model, images, layer, patch subsample), holding ``{"key": json, "tokens":
tensor}`` and read back with ``torch.load(weights_only=True)``; written atomically (temp file +
rename). The key holds everything that changes the tokens:

* the model (``TokenModel.identity``): its source string, the sha256 of its weights, its description
  (``config``: a viny ViTConfig, timm's arguments, an hf model's type and sizes) and its fingerprint:
  the sha256 of a ``py:`` source's file, of an ``hf:`` folder's config.json and
  preprocessor_config.json, timm's pretrained_cfg, viny's model.py, and the version of the library
  that builds it (transformers, timm);
* the viny version and the preprocessing: input size, mean/std, the resize (``RESIZE``);
* the images: the dataset name, a digest of the image ids, a digest of the image bytes, their shape
  and dtype, ``split``;
* the block, the patch subsample, ``TokenKey.extra`` and the storage dtype when it is not float32
  (so the float32 entries written before the dtype existed still match).

So a checkpoint file, the same weights imported from the authors' file, or the encoder object itself
share entries, and an edited model never reads another's. What the key cannot see: code that a ``py:``
file imports from your other files, or a library edited in place without a new version; pass
``use_cache=False`` (``--no-cache``) then. The folder is ``cache_dir``, else
``$VINY_CACHE_DIR/embeddings``, else ``~/.cache/viny/embeddings``; ``cache_info`` / ``clear_cache``
(``viny cache info|clear``) show and empty it. Delete files there freely: a missing or unreadable entry
is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from viny_probe import __version__
from viny_probe.analysis.options import TOKEN_DTYPES, ModelOptions
from viny_probe.analysis.sources.base import TokenModel, load_model, module_digest
from viny_probe.analysis.sources.viny import load_encoder
from viny_probe.checkpoint import atomic_write_bytes
from viny_probe.checks import all_finite
from viny_probe.data.augment import to_float
from viny_probe.data.base import ImageSet
from viny_probe.data.cache import CACHE_DIR_FIX, cache_root
from viny_probe.errors import VinyError
from viny_probe.progress import track
from viny_probe.trainers.loop import resolve_device

#: Bump when the extraction itself changes (preprocessing, token selection): old entries stop matching.
CACHE_VERSION = 3
#: How ``_prepare`` resizes images whose side is not the model's input size (part of the key).
RESIZE = "bilinear, antialias, align_corners=False"

LayerSpec = str | int | Sequence[int]
ModelLike = str | Path | nn.Module | TokenModel

__all__ = [
    "cache_info",
    "clear_cache",
    "encoder_digest",
    "extract_patch_tokens",
    "layer_label",
    "load_encoder",
    "parse_layers",
]

#: sha256 of a module's weights (kept under its old name).
encoder_digest = module_digest


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The embedding cache folder: ``cache_dir``, else ``$VINY_CACHE_DIR/embeddings``, else
    ``~/.cache/viny/embeddings`` (``$VINY_CACHE_DIR`` is the root of all viny caches)."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return cache_root() / "embeddings"


def _entries(root: Path) -> list[Path]:
    """The cache's entries, and the temp files of writes cut short."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and (p.suffix == ".pt" or p.name.endswith(".tmp")))


def cache_info(cache_dir: str | Path | None = None) -> dict:
    """``{"folder", "entries", "bytes"}`` of the token cache."""
    root = resolve_cache_dir(cache_dir)
    entries = _entries(root)
    return {"folder": str(root), "entries": len(entries), "bytes": sum(p.stat().st_size for p in entries)}


def clear_cache(cache_dir: str | Path | None = None) -> dict:
    """Delete every entry of the token cache (the folder stays); ``cache_info`` of what was removed."""
    removed = cache_info(cache_dir)
    for path in _entries(Path(removed["folder"])):
        path.unlink(missing_ok=True)
    return removed


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


def model_blocks(model: TokenModel, blocks: str) -> list[int]:
    """The block numbers of ``model`` a ``--layer``-style argument names (``final`` = its last)."""
    chosen = parse_layers(blocks, model.depth)
    if chosen == "all":
        return list(range(1, model.depth + 1))
    if chosen == "final":
        return [model.depth]
    return sorted(chosen)


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


def _prepare(batch: torch.Tensor, model: TokenModel, device: torch.device) -> torch.Tensor:
    """uint8 -> [0, 1] -> the model's mean / std (float: as is), resized to the model's resolution."""
    x = batch.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(model.std, device=device).view(1, 3, 1, 1)
        x = (to_float(x) - mean) / std
    else:
        x = x.float()
    size = model.image_size
    if tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )  # RESIZE
    return x


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:60] or "images"


def _load_cached(
    path: Path, key_json: str, shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a truncated or foreign file is just a miss; it is rewritten below
        return None
    if not isinstance(obj, dict) or obj.get("key") != key_json:
        return None
    tokens = obj.get("tokens")
    if not isinstance(tokens, torch.Tensor) or tuple(tokens.shape) != shape or tokens.dtype != dtype:
        return None
    return tokens


def _token_model(model: ModelLike) -> tuple[TokenModel, torch.device]:
    """The TokenModel and the device it runs on by default: a module's or TokenModel's own device;
    CUDA if available for a model loaded from a string."""
    if isinstance(model, TokenModel | nn.Module):
        loaded = load_model(model)
        default = next((p.device for p in loaded.module.parameters()), torch.device("cpu"))
        return loaded, default
    if isinstance(model, str | Path):
        return load_model(model), torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise VinyError(
        f"expected a checkpoint path, a model string (timm:NAME, hf:FOLDER, py:MODULE:FUNCTION), a ViNy "
        f"encoder or a TokenModel, got {type(model).__name__}"
    )


def _check_patches(patches: torch.Tensor | None, n: int, num_patches: int) -> torch.Tensor | None:
    if patches is None:
        return None
    if (
        not isinstance(patches, torch.Tensor)
        or patches.ndim != 2
        or patches.shape[0] != n
        or patches.dtype != torch.long
        or (patches.numel() and (int(patches.min()) < 0 or int(patches.max()) >= num_patches))
    ):
        raise VinyError(
            f"patches must be an (N, k) int64 tensor of patch indices in 0..{num_patches - 1} with N = {n} "
            f"images, got {tuple(patches.shape) if isinstance(patches, torch.Tensor) else type(patches).__name__}"
        )
    return patches


def token_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A storage dtype (``options.TOKEN_DTYPES``, by name or as a torch.dtype) as a torch.dtype."""
    name = str(dtype).removeprefix("torch.")
    if name not in TOKEN_DTYPES:
        raise VinyError(f"the token dtype must be one of {', '.join(TOKEN_DTYPES)}, got {dtype!r}")
    return getattr(torch, name)


def check_device(device: str | torch.device | None) -> None:
    """A ``--device`` that cannot run here (cuda without CUDA) is a VinyError now, not after loading."""
    _device(device, torch.device("cpu"))


def _device(device: str | torch.device | None, default: torch.device) -> torch.device:
    if device is None:
        return default
    return resolve_device(device) if isinstance(device, str) else torch.device(device)


@dataclass(frozen=True)
class TokenKey:
    """Which tokens of a model's pass over a set of images, as the cache names them beside the model and
    the images (``extract_patch_tokens``).

    split: the split's name ("train", "test", "pool-...", ...), part of the key and of the file name.
    patches: ``(N, k)`` int64 patch indices: only those patches of each image are kept, ``(N, k, D)``
        (a per-image subsample that bounds the memory of a probe; its digest is part of the key).
    extra: anything JSON-serialisable, added to the key (e.g. a preprocessing variant).
    """

    split: str = ""
    patches: torch.Tensor | None = None
    extra: Any = None


def extract_patch_tokens(
    model: ModelLike,
    images: ImageSet | torch.Tensor,
    layers: LayerSpec = "final",
    batch_size: int = ModelOptions.batch_size,
    cache_dir: str | Path | None = None,
    key: TokenKey = TokenKey(),
    *,
    device: str | torch.device | None = None,
    use_cache: bool = True,
    progress: bool = True,
    dtype: str | torch.dtype = ModelOptions.token_dtype,
) -> dict[str | int, torch.Tensor]:
    """Patch tokens ``(N, P, D)`` (CPU, in ``dtype``) of ``images`` at the requested layers.

    model: a ``TokenModel``, a ViNy (used as is, put in eval mode for the call and restored after) or a
        string ``sources.load_model`` accepts (viny checkpoint path, ``timm:NAME``, ``hf:FOLDER``,
        ``py:MODULE:FUNCTION``).
    images: an ImageSet, or a ``(N, 3, H, W)`` tensor: uint8 is preprocessed like every stage's
        evaluation (to [0, 1], the model's mean/std), float is taken as already preprocessed. Any
        H = W other than the model's ``image_size`` is resized (bilinear, antialiased).
    layers: ``"final"`` (default: the last block after the final norm) -> ``{"final": T}``;
        a block number ``b`` in ``1..depth`` -> ``{b: T}``; a list of them -> one entry each;
        ``"all"`` -> ``{1: T, ..., depth: T}``. Out of range -> VinyError naming ``1..depth``.
    cache_dir / use_cache: where entries live (see the module docstring) / whether to use them at all.
    key: a ``TokenKey``: the split's name, the per-image patch subsample and any extra key.
    device: where the model runs (``"cpu"``, ``"cuda"``, ``"auto"`` or a torch.device); default the
        module's device, or CUDA if available for a model loaded from a string.
    progress: show a progress bar while extracting.
    dtype: the tokens' storage dtype, ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``: each
        batch is converted as it is copied out, and cache entries are keyed and stored in it.
    ``device``, ``batch_size``, ``use_cache``, ``progress`` and ``dtype`` are what
    ``ModelOptions.extraction()`` gives.

    Only the layers missing from the cache are computed, in one pass that stops at the deepest one.
    """
    split, patches = key.split, key.patches
    dtype = token_dtype(dtype)
    token_model, default_device = _token_model(model)
    run_on = _device(device, default_device)  # checked even when every layer is cached
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise VinyError(f"batch_size must be a positive integer, got {batch_size!r}")
    wanted = _resolve_layers(layers, token_model.depth)
    tensor, name, ids = _as_images(images, 3)
    n = tensor.shape[0]
    patches = _check_patches(patches, n, token_model.num_patches)
    if token_model.stored is not None:
        return _stored_tokens(token_model, ids, wanted, patches, dtype)
    kept = token_model.num_patches if patches is None else patches.shape[1]
    shape = (n, kept, token_model.dim)

    found: dict[int, torch.Tensor] = {}
    files: dict[int, tuple[Path, str]] = {}
    if use_cache:
        root = resolve_cache_dir(cache_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise VinyError(
                f"cannot create the embedding cache folder {root} ({e.strerror or e}); {CACHE_DIR_FIX}"
            ) from None
        base = {
            "version": CACHE_VERSION,
            "viny": __version__,
            "resize": RESIZE,
            "model": token_model.identity(),
            "dataset": name,
            "ids": None if ids is None else hashlib.sha256("\n".join(ids).encode()).hexdigest(),
            "images": _tensor_digest(tensor),
            "images_shape": list(tensor.shape),
            "images_dtype": str(tensor.dtype),
            "split": split,
            "patches": None if patches is None else _tensor_digest(patches),
            "extra": key.extra,
        }
        if dtype != torch.float32:
            base["dtype"] = str(dtype).removeprefix("torch.")
        stem = _slug(f"{name}-{split}" if split else name)
        for _, block in wanted:
            key_json = json.dumps({**base, "block": block}, sort_keys=True, default=str)
            digest = hashlib.sha256(key_json.encode()).hexdigest()[:24]
            path = root / f"{stem}-L{block}-n{n}-{digest}.pt"
            files[block] = (path, key_json)
            cached = _load_cached(path, key_json, shape, dtype)
            if cached is not None:
                found[block] = cached

    missing = [block for _, block in wanted if block not in found]
    if missing:
        computed = _run(
            token_model, tensor, missing, (batch_size, run_on, dtype), shape, progress, name, patches
        )
        for block, tokens in computed.items():
            if use_cache:
                path, key_json = files[block]
                payload = {"key": key_json, "tokens": tokens}
                try:
                    atomic_write_bytes(path, lambda f, p=payload: torch.save(p, f))
                except OSError as e:  # a full disk is DiskFullError (a VinyError), not caught here
                    raise VinyError(
                        f"cannot write the embedding cache file {path} ({e.strerror or e}); {CACHE_DIR_FIX}"
                    ) from None
            found[block] = tokens
    return {label: found[block] for label, block in wanted}


def _stored_tokens(
    model: TokenModel, ids: list[str] | None, wanted: list, patches, dtype: torch.dtype
) -> dict:
    """Tokens of a token folder (``tokens:DIR``), read by image id and converted to ``dtype``: no forward
    pass, no cache."""
    if ids is None:
        raise VinyError(f"{model.source}: a token folder serves images by id; pass an ImageSet, not a tensor")
    out = {}
    for label, block in wanted:
        t = model.stored.read(block, ids)
        t = t if patches is None else t.gather(1, patches[:, :, None].expand(-1, -1, t.shape[-1]))
        out[label] = t.to(dtype)
    return out


def _batch_tokens(model: TokenModel, x: torch.Tensor, blocks: list[int], keep: torch.Tensor | None) -> dict:
    """One batch through ``model.tokens``, checked against ``(B, P, D)``, optionally subsampled."""
    tokens = model.tokens(x, blocks)
    want = (x.shape[0], model.num_patches, model.dim)
    out = {}
    for b in blocks:
        t = tokens.get(b) if isinstance(tokens, dict) else None
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != want:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise VinyError(f"{model.source}: tokens() gave {shape} at block {b}; expected {want}")
        out[b] = t if keep is None else t.gather(1, keep[:, :, None].expand(-1, -1, t.shape[-1]))
    return out


def _run(
    model: TokenModel,
    images: torch.Tensor,
    blocks: list[int],
    run: tuple[int, torch.device, torch.dtype],
    shape: tuple[int, int, int],
    progress: bool,
    name: str,
    patches: torch.Tensor | None,
) -> dict[int, torch.Tensor]:
    """One pass over ``images`` in eval mode, ``run`` = (batch size, device, storage dtype); the module's
    mode and device are restored afterwards. Each batch is converted to the storage dtype as it is copied
    into the output, so no float32 copy of the whole set is made."""
    batch_size, device, dtype = run
    n = shape[0]
    out = {b: torch.empty(shape, dtype=dtype) for b in blocks}
    module = model.module
    was_training = module.training
    home = next((p.device for p in module.parameters()), torch.device("cpu"))
    module.eval()
    module.to(device)
    try:
        starts = range(0, n, batch_size)
        for start in track(starts, total=len(starts), description=f"embedding {name}", enabled=progress):
            stop = min(start + batch_size, n)
            keep = None if patches is None else patches[start:stop].to(device)
            with torch.inference_mode():
                x = _prepare(images[start:stop], model, device)
                tokens = _batch_tokens(model, x, blocks, keep)
            for b in blocks:  # outside inference mode: the results stay ordinary (autograd-usable) tensors
                out[b][start:stop].copy_(tokens[b])  # converted to the storage dtype here, batch by batch
    finally:
        module.to(home)
        module.train(was_training)
    for b in blocks:  # before the cache and the diagnostics, whose messages could not name the model
        if not all_finite(out[b]):
            half = (
                " or passes float16's range (65,504: try --token-dtype bfloat16)"
                if dtype == torch.float16
                else ""
            )
            raise VinyError(
                f"{model.where()}: its block-{b} tokens of {name} hold NaN or infinite values (its forward "
                f"pass overflows or divides by zero{half}); check the model's weights, input size and "
                "--mean/--std"
            )
    return out
