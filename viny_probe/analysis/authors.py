"""Import the study authors' published encoder (a plain ``state_dict`` of their ViT) into viny's format.

Their file (``encoder_vit_4M_pretrain_200K.pth``) holds 142 tensors named after their modules (see
reference-notes.md, "Reference checkpoints"). ViNy's layout is the same network, so the import is a
pure renaming: no tensor is reshaped, transposed or re-chunked.

=========================================  ==========================
authors' name                              viny's name
=========================================  ==========================
``cls_token``                              ``cls_token``
``pos_embedding``                          ``pos_embed``
``to_patch_embedding.1`` (LayerNorm p*p*3) ``patch_embed.norm_in``
``to_patch_embedding.2`` (Linear)          ``patch_embed.proj``
``to_patch_embedding.3`` (LayerNorm dim)   ``patch_embed.norm_out``
``transformer.layers.{i}.0.layernorm``     ``blocks.{i}.attn.norm``
``transformer.layers.{i}.0.to_qkv``        ``blocks.{i}.attn.qkv``
``transformer.layers.{i}.0.fc_out.0``      ``blocks.{i}.attn.proj``
``transformer.layers.{i}.1.network.0``     ``blocks.{i}.mlp.norm``
``transformer.layers.{i}.1.network.1``     ``blocks.{i}.mlp.fc1``
``transformer.layers.{i}.1.network.4``     ``blocks.{i}.mlp.fc2``
``transformer.norm``                       ``norm``
=========================================  ==========================

Why the renaming is exact: their patch rearrange ``b c (h p1) (w p2) -> b (h w) (p1 p2 c)`` is viny's
``patchify`` order; their qkv is chunked q, k, v with heads contiguous inside each
(``b n (h d) -> b h n d``), as viny's ``Attention`` reads it; both scale by ``dim_head ** -0.5``; both
blocks are ``x = attn(LN(x)) + x; x = mlp(LN(x)) + x`` with exact GELU and a final LayerNorm.

The model config is read off the shapes: ``dim`` from the CLS token, ``depth`` from the layer
indices, ``mlp_dim`` from ``network.1``, the patch size from ``p*p*3`` (3 colour channels), the
image size from the number of positions (1 + grid**2). The head count is not in any shape: it
defaults to the study's 8 (so dim_head = inner width / 8 = 64 for ViNy) and can be given.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from viny_probe.checkpoint import (
    check_finite_state,
    file_digest,
    load_state_strict,
    save_checkpoint,
    torch_load_safely,
)
from viny_probe.errors import VinyError
from viny_probe.model import ViNy, ViTConfig
from viny_probe.runlock import hold_run_folder, is_run_folder, refuse_to_overwrite

#: Tensors of the authors' ViNy (depth 12): 10 outside the blocks + 11 per block.
AUTHORS_TENSOR_COUNT = 142
#: The study's head count (reference-notes.md: 8 heads of dim_head 64).
AUTHORS_HEADS = 8
#: The study's width per head (the published files: 8 x 64 = 512).
AUTHORS_DIM_HEAD = 64
CHANNELS = 3

_TOP = {
    "cls_token": "cls_token",
    "pos_embedding": "pos_embed",
    "to_patch_embedding.1.weight": "patch_embed.norm_in.weight",
    "to_patch_embedding.1.bias": "patch_embed.norm_in.bias",
    "to_patch_embedding.2.weight": "patch_embed.proj.weight",
    "to_patch_embedding.2.bias": "patch_embed.proj.bias",
    "to_patch_embedding.3.weight": "patch_embed.norm_out.weight",
    "to_patch_embedding.3.bias": "patch_embed.norm_out.bias",
    "transformer.norm.weight": "norm.weight",
    "transformer.norm.bias": "norm.bias",
}
_PER_BLOCK = {
    "0.layernorm.weight": "attn.norm.weight",
    "0.layernorm.bias": "attn.norm.bias",
    "0.to_qkv.weight": "attn.qkv.weight",
    "0.fc_out.0.weight": "attn.proj.weight",
    "0.fc_out.0.bias": "attn.proj.bias",
    "1.network.0.weight": "mlp.norm.weight",
    "1.network.0.bias": "mlp.norm.bias",
    "1.network.1.weight": "mlp.fc1.weight",
    "1.network.1.bias": "mlp.fc1.bias",
    "1.network.4.weight": "mlp.fc2.weight",
    "1.network.4.bias": "mlp.fc2.bias",
}
# Keys that, all present, identify a file as the authors' state_dict (before the full check).
_SIGNATURE = ("pos_embedding", "cls_token", "to_patch_embedding.2.weight", "transformer.norm.weight")
_LAYER_RE = re.compile(r"^transformer\.layers\.(\d+)\.")


def authors_name_map(depth: int) -> dict[str, str]:
    """The authors' tensor name -> viny's, for an encoder of ``depth`` blocks (12 for ViNy: 142 names)."""
    names = dict(_TOP)
    for i in range(depth):
        for theirs, ours in _PER_BLOCK.items():
            names[f"transformer.layers.{i}.{theirs}"] = f"blocks.{i}.{ours}"
    return names


def is_authors_state_dict(obj: Any) -> bool:
    """True if ``obj`` looks like the authors' ViT state_dict: a dict of tensors with their top-level
    names (``pos_embedding``, ``cls_token``, ``to_patch_embedding.*``, ``transformer.norm``).
    A dict that passes may still be incomplete; ``authors_to_viny_state`` checks every name."""
    return (
        isinstance(obj, dict)
        and all(isinstance(k, str) for k in obj)
        and all(isinstance(obj.get(k), torch.Tensor) for k in _SIGNATURE)
    )


def _shape(state: dict, key: str, ndim: int) -> tuple[int, ...]:
    t = state[key]
    if t.ndim != ndim:
        raise VinyError(f"authors' state_dict: {key} has shape {tuple(t.shape)}, expected {ndim} dimensions")
    return tuple(t.shape)


def infer_authors_config(state: dict, heads: int | None = None) -> ViTConfig:
    """The ViTConfig an authors' state_dict was built with, read off its tensor shapes.

    ``heads`` is in no tensor's shape: without it, the study's 8 is taken only for the study's attention
    width (8 heads x 64 = 512, the published files); any other width is refused, naming --heads, rather
    than guessed (a 4-head export read as 8 heads gives other tokens). dim_head = inner width / heads.
    """
    if not is_authors_state_dict(state):
        raise VinyError(
            "not the study authors' state_dict: expected tensors named "
            + ", ".join(_SIGNATURE)
            + " (and transformer.layers.{i}.*)"
        )
    dim = _shape(state, "cls_token", 3)[-1]
    positions = _shape(state, "pos_embedding", 3)[1]
    patch_dim = _shape(state, "to_patch_embedding.2.weight", 2)[1]
    grid = math.isqrt(positions - 1)
    if positions < 2 or grid * grid != positions - 1:
        raise VinyError(
            f"authors' state_dict: pos_embedding has {positions} positions; expected 1 + a square (65 for 8x8)"
        )
    patch = math.isqrt(patch_dim // CHANNELS)
    if patch * patch * CHANNELS != patch_dim:
        raise VinyError(
            f"authors' state_dict: patch dimension {patch_dim} is not 3 * p * p (768 for 16x16 patches)"
        )
    layers = {int(m.group(1)) for k in state if (m := _LAYER_RE.match(k))}
    depth = max(layers) + 1 if layers else 0
    if depth == 0:
        raise VinyError("authors' state_dict has no transformer.layers.{i}.* tensors")
    qkv, fc1 = "transformer.layers.0.0.to_qkv.weight", "transformer.layers.0.1.network.1.weight"
    for key in (qkv, fc1):
        if key not in state:
            raise VinyError(f"authors' state_dict: missing keys ['{key}']")
    inner = _shape(state, qkv, 2)[0] // 3
    mlp_dim = _shape(state, fc1, 2)[0]
    if heads is None and inner != AUTHORS_HEADS * AUTHORS_DIM_HEAD:
        raise VinyError(
            f"authors' state_dict: its head count is in no tensor, and its attention width {inner} is not "
            f"the study's {AUTHORS_HEADS} x {AUTHORS_DIM_HEAD}, so it cannot be taken as {AUTHORS_HEADS}: give "
            "--heads N (the count the model was built with), or keep the config.json `viny export` wrote beside it"
        )
    heads = AUTHORS_HEADS if heads is None else int(heads)
    if heads < 1 or inner % heads:
        raise VinyError(
            f"authors' state_dict: attention inner width {inner} is not divisible by heads={heads}"
        )
    return ViTConfig(
        image_size=grid * patch,
        patch_size=patch,
        dim=dim,
        depth=depth,
        heads=heads,
        dim_head=inner // heads,
        mlp_dim=mlp_dim,
        channels=CHANNELS,
    )


def authors_to_viny_state(
    state: dict, heads: int | None = None, source: str | Path = "the authors' state_dict"
) -> tuple[ViTConfig, dict[str, torch.Tensor]]:
    """Convert the authors' state_dict to (ViTConfig, viny encoder state_dict), in memory.

    Every name is checked: a missing or unexpected key (or a tensor count other than 10 + 11 * depth,
    i.e. 142 for ViNy) raises VinyError naming the keys; shapes are checked by loading strictly; a
    tensor holding NaN or infinity is named as the file ``source`` names it.
    """
    cfg = infer_authors_config(state, heads)
    names = authors_name_map(cfg.depth)
    missing = sorted(set(names) - set(state))
    unexpected = sorted(set(state) - set(names))
    if missing or unexpected:
        parts = [f"{len(state)} tensors where a depth-{cfg.depth} encoder has {len(names)}"]
        if missing:
            parts.append(f"missing keys {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise VinyError("authors' state_dict does not match their ViT: " + "; ".join(parts))
    check_finite_state({theirs: state[theirs] for theirs in names}, f"authors' state_dict {source}")
    converted = {
        ours: state[theirs].detach().to("cpu", torch.float32).contiguous() for theirs, ours in names.items()
    }
    load_state_strict(ViNy(cfg), converted, "converted authors' state_dict")  # shape check, clear message
    return cfg, converted


def load_authors_state_dict(src: str | Path) -> dict:
    """Read ``src`` with ``torch.load(weights_only=True)``; VinyError unless it is the authors' state_dict."""
    src = Path(src)
    if not src.is_file():
        raise VinyError(f"checkpoint not found: {src}")
    obj = torch_load_safely(src, "the study authors' state_dict (e.g. encoder_vit_4M_pretrain_200K.pth)")
    if not is_authors_state_dict(obj):
        raise VinyError(describe_foreign(src, obj))
    return obj


def describe_foreign(path: str | Path, obj: Any) -> str:
    """The message for a file that is neither a viny checkpoint nor the authors' state_dict."""
    if isinstance(obj, dict):
        keys = [str(k) for k in list(obj)[:6]]
        found = f"a dict with {len(obj)} entries, e.g. {keys}"
    else:
        found = f"a {type(obj).__name__}"
    return (
        f"{path} holds {found}; expected either a viny checkpoint (entries 'format_version', 'encoder', "
        "'model_config', written by `viny train`) or the study authors' ViT state_dict (142 tensors named "
        "'pos_embedding', 'cls_token', 'to_patch_embedding.*', 'transformer.layers.{i}.*', 'transformer.norm.*')"
    )


def authors_checkpoint_payload(cfg: ViTConfig, state: dict, src: str | Path, digest: str) -> dict:
    """The viny checkpoint dict for an imported encoder (what ``import_authors_checkpoint`` saves)."""
    return {
        "regime": "imported",
        "config": {"regime": "imported", "source": str(src)},
        "model_config": cfg.to_dict(),
        "encoder": state,
        "head": {},
        "head_type": None,
        "lineage": [{"regime": "authors-import", "checkpoint": str(src), "digest": digest}],
        "epoch": 0,
        "history": [],
    }


def import_authors_checkpoint(
    src: str | Path, out: str | Path, heads: int | None = None, force: bool = False
) -> Path:
    """Convert the authors' state_dict file ``src`` into a viny checkpoint at ``out`` (atomic write).

    The checkpoint has regime "imported", an empty head, and lineage
    ``[{"regime": "authors-import", "checkpoint": src, "digest": sha256 of src}]``. Returns ``out``.
    ``out`` in a run folder or over an existing file needs ``force`` (else a one-line VinyError); with
    it, the run folder's lock is held while writing.
    """
    src, out = Path(src), Path(out)
    refuse_to_overwrite([out], force)
    state = load_authors_state_dict(src)
    cfg, converted = authors_to_viny_state(state, heads, src)
    payload = authors_checkpoint_payload(cfg, converted, src, file_digest(src))
    lock = hold_run_folder(out.parent, advice="choose another -o") if is_run_folder(out.parent) else None
    try:
        save_checkpoint(out, payload)
    finally:
        if lock is not None:
            lock.release()
    return out
