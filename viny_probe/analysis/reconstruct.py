"""SimMIM reconstructions, the study's Fig 2: input | masked input | reconstruction.

The masks are ``fixed_half_masks(N, P, seed)`` (viny_probe.trainers.simmim), the same the held-out
reconstruction loss uses, so a figure is reproducible and every checkpoint is shown the same masks.
The reconstruction is the decoder's pixels at the masked patches pasted into the visible ones of the
input, un-normalised back to RGB and clipped to [0, 1]; the L1 numbers are the training loss's, on
ImageNet-normalised pixels of the masked patches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from viny_probe.analysis.embeddings import load_encoder
from viny_probe.analysis.images import load_images_for
from viny_probe.analysis.options import EvalSet
from viny_probe.analysis.stamp import stamp_warnings
from viny_probe.checkpoint import load_state_strict
from viny_probe.data.augment import IMAGENET_MEAN, IMAGENET_STD, normalize, to_float
from viny_probe.errors import VinyError
from viny_probe.heads import SimMIMHead
from viny_probe.model import ViNy, patchify, unpatchify
from viny_probe.trainers.simmim import fixed_half_masks

MASK_BLACK = 0.0  # RGB value of a masked patch in the masked-input panel: black, as the study's Fig 2
MASK_GREY = 0.5  # viny's earlier grey, still one argument away (``mask_fill``)
DEFAULT_IMAGES = tuple(f"toy-pets:{i}" for i in range(4))


@dataclass
class Reconstruction:
    """Pictures as (N, 3, S, S) float RGB in [0, 1]; ``masks`` (N, P) bool, True = masked;
    ``masked_l1`` (N,) each image's mean |prediction - target| over its masked patches' normalised pixels."""

    inputs: torch.Tensor
    masked_inputs: torch.Tensor
    reconstructions: torch.Tensor
    masks: torch.Tensor
    masked_l1: torch.Tensor


def load_simmim(path: str | Path) -> tuple[ViNy, SimMIMHead, dict]:
    """Encoder and SimMIM head (eval mode, CPU) of a `viny train simmim` checkpoint; any other
    checkpoint raises VinyError naming its regime."""
    encoder, ckpt = load_encoder(path)
    if ckpt.get("head_type") != "SimMIMHead" or "head" not in ckpt:
        regime = ckpt.get("regime", "unknown")
        has = f"a {ckpt['head_type']}" if ckpt.get("head_type") else "no head"
        raise VinyError(
            f"{path} is a '{regime}' checkpoint with {has}, not a SimMIM one: reconstruct needs the decoder "
            "of a `viny train simmim` checkpoint (its final.pt, e.g. a sweep's pre-training stage)"
        )
    head = SimMIMHead(encoder.cfg)
    load_state_strict(head, ckpt["head"], f"SimMIM head in {path}")
    return encoder, head.eval(), ckpt


def pixel_mask(masks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(N, P) patch mask on a square grid -> (N, 1, S, S) pixel mask."""
    n, p = masks.shape
    g = int(round(p**0.5))
    grid = masks.reshape(n, 1, g, g)
    return grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Inverse of ImageNet normalisation: (N, 3, H, W) -> float RGB (not clipped)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return images * std + mean


@torch.no_grad()
def reconstruct(
    encoder: nn.Module,
    head: SimMIMHead,
    images: torch.Tensor,
    masks: torch.Tensor,
    mask_fill: float = MASK_BLACK,
) -> Reconstruction:
    """Reconstruct (N, 3, S, S) uint8 ``images`` with (N, P) bool ``masks`` (True = masked); the masked
    input shows masked patches filled with ``mask_fill`` (black by default, as the study draws them)."""
    cfg = encoder.cfg
    if (
        images.ndim != 4
        or images.dtype != torch.uint8
        or tuple(images.shape[1:]) != (3, cfg.image_size, cfg.image_size)
    ):
        raise VinyError(
            f"images must be (N, 3, {cfg.image_size}, {cfg.image_size}) uint8, got {images.dtype} {tuple(images.shape)}"
        )
    if masks.shape != (images.shape[0], cfg.num_patches) or masks.dtype != torch.bool:
        raise VinyError(
            f"masks must be ({images.shape[0]}, {cfg.num_patches}) bool, got {masks.dtype} {tuple(masks.shape)}"
        )
    device = next(encoder.parameters()).device
    inputs = to_float(images.to(device))
    x = normalize(inputs)
    m = masks.to(device)
    pred = head(encoder(x, mask=m, mask_token=head.mask_token)).float()
    per_patch = (pred - patchify(x, cfg.patch_size)).abs().mean(dim=-1)
    masked_l1 = (per_patch * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
    decoded = denormalize(unpatchify(pred, cfg.patch_size, cfg.channels)).clamp(0, 1)
    where = pixel_mask(m, cfg.patch_size)
    return Reconstruction(
        inputs=inputs.cpu(),
        masked_inputs=torch.where(where, torch.full_like(inputs, mask_fill), inputs).cpu(),
        reconstructions=torch.where(where, decoded, inputs).cpu(),
        masks=masks.cpu(),
        masked_l1=masked_l1.cpu(),
    )


def reconstruction_data(
    sources: Sequence[str], grid: int, seed: int, results: Mapping[str, Reconstruction]
) -> dict:
    """What a reconstruction figure shows, for its JSON: per image its source, its mask (g strings of
    g digits, 1 = masked) and each checkpoint's masked L1."""
    first = next(iter(results.values()))
    return {
        "mask_seed": seed,
        "mask": "per image, one string per row of the patch grid, 1 = masked patch",
        "images": [
            {
                "image": source,
                "mask": ["".join(str(int(v)) for v in row) for row in first.masks[i].reshape(grid, grid)],
                "masked_l1": {name: float(r.masked_l1[i]) for name, r in results.items()},
            }
            for i, source in enumerate(sources)
        ],
        "mean_masked_l1": {name: float(r.masked_l1.mean()) for name, r in results.items()},
    }


def reconstruct_images(
    ckpt: str | Path,
    images: Sequence[str | Path] | None = None,
    out: str | Path = "reconstruct.png",
    seed: int = 0,
    *,
    data: EvalSet = EvalSet(),
    device: str = "cpu",
) -> dict:
    """Fig 2 for one SimMIM checkpoint: one row per image (input | masked input | reconstruction),
    written to ``out`` (.png) with a JSON beside it (images, masks, per-image masked L1).

    images: image files or ``DATASET:INDEX`` (see ``load_named_image``; ``data.split_seed`` /
    ``data.test_size`` pick the test split, by default the checkpoint's, from its lineage; an embedded
    image the lineage trained on is refused unless ``data.allow_overlap``; the other ``EvalSet`` fields
    are not read); default the first 4 toy-pets test images.
    ``seed`` draws the masks (`--mask-seed`); ``device``: where the model runs (auto | cpu | cuda[:N]).
    """
    from viny_probe.analysis.plots import plot_reconstructions

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise VinyError(f"-o must name a .png file, got {str(out)!r}")
    from viny_probe.trainers.loop import resolve_device

    encoder, head, meta = load_simmim(ckpt)
    where = resolve_device(device)
    encoder, head = encoder.to(where), head.to(where)
    cfg = encoder.cfg
    named, warnings = load_images_for(
        str(ckpt),
        meta,
        images or DEFAULT_IMAGES,
        cfg.image_size,
        data.split_seed,
        data.test_size,
        data.allow_overlap,
    )
    pixels = torch.stack([n.pixels for n in named])
    masks = fixed_half_masks(len(named), cfg.num_patches, seed)
    result = reconstruct(encoder, head, pixels, masks)
    sources = [n.source for n in named]
    data = reconstruction_data(sources, cfg.grid, seed, {"reconstruction": result})
    data["checkpoint"] = str(ckpt)
    plot_reconstructions(
        result.inputs,
        result.masked_inputs,
        {"reconstruction": result.reconstructions},
        {"reconstruction": result.masked_l1},
        out,
        row_labels=[n.stem for n in named],
        title=f"SimMIM reconstructions: {Path(ckpt).parent.name or Path(ckpt).name} (mask seed {seed})",
        data=data,
    )
    files = [out, out.with_suffix(".json")]
    stamp_warnings(files, warnings)
    return {**data, "files": [str(f) for f in files], "warnings": warnings}
