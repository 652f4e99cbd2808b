"""Batched augmentations on uint8 tensors, drawn fresh every step from one seeded generator.

torchvision's v2 transforms draw one set of parameters per call, i.e. per batch; the study augments
per image, so the per-image versions of the same operations are written here as a handful of batched
tensor ops (affine_grid + grid_sample for RandomResizedCrop). They run on whatever device the batch
is on, so with data resident on a GPU no image ever goes back to the host.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _uniform(n: int, low: float, high: float, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=gen) * (high - low) + low).to(device)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> float32 in [0, 1]."""
    return images.float().div_(255.0)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of float [0, 1] images (the same in every stage; see reference-notes)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def random_hflip(gen: torch.Generator, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Flip each sample left-right with p = 0.5, jointly across ``tensors`` (images and their masks)."""
    n = tensors[0].shape[0]
    flip = (torch.rand(n, generator=gen) < 0.5).to(tensors[0].device)
    out = []
    for t in tensors:
        shape = (n,) + (1,) * (t.ndim - 1)
        out.append(torch.where(flip.view(shape), t.flip(-1), t))
    return tuple(out)


def random_resized_crop(
    images: torch.Tensor,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.67, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Per-image RandomResizedCrop back to the input size: (B, C, H, W) float -> same shape.

    Area fraction ~ U(scale), log aspect ratio ~ U(log ratio); the crop is clipped to the image and
    placed uniformly, as torchvision does (without its retry loop: the clip keeps every crop valid).
    """
    b, device = images.shape[0], images.device
    area = _uniform(b, *scale, gen, torch.device("cpu"))
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), gen, torch.device("cpu"))
    aspect = torch.exp(log_r)
    w = torch.sqrt(area * aspect).clamp(max=1.0)
    h = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * (1 - w) + w / 2) * 2 - 1
    cy = (torch.rand(b, generator=gen) * (1 - h) + h / 2) * 2 - 1
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    grid = F.affine_grid(theta.to(device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop_boxes(
    extents: torch.Tensor,
    gen: torch.Generator,
    scale: tuple[float, float] = (0.67, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Per-image RandomResizedCrop boxes in each image's own pixels: extents (B, 2) (h, w) -> (B, 4)
    int64 (top, left, height, width).

    Area ~ U(scale) of h * w, log aspect (width / height, in pixels of the image as it is) ~ U(log
    ratio), both sides rounded and clipped to the image, the box placed uniformly: torchvision's box
    (without its retry loop), drawn from ``gen`` in the same order as ``random_resized_crop``.
    """
    b = extents.shape[0]
    cpu = torch.device("cpu")
    area = _uniform(b, *scale, gen, cpu).double()
    aspect = torch.exp(_uniform(b, math.log(ratio[0]), math.log(ratio[1]), gen, cpu).double())
    u_x, u_y = torch.rand(b, generator=gen).double(), torch.rand(b, generator=gen).double()
    h, w = extents.to(cpu, torch.float64).unbind(1)
    target = area * h * w
    width = torch.minimum(torch.sqrt(target * aspect).round().clamp(min=1), w)
    height = torch.minimum(torch.sqrt(target / aspect).round().clamp(min=1), h)
    left = (u_x * (w - width + 1)).floor().clamp(max=w - width)
    top = (u_y * (h - height + 1)).floor().clamp(max=h - height)
    return torch.stack([top, left, height, width], dim=1).long()


def resized_crops(
    images: torch.Tensor, boxes: torch.Tensor, size: int, resize: str = "bilinear"
) -> torch.Tensor:
    """Each image's box (top, left, height, width) resized to ``size`` x ``size``: (B, C, H, W) uint8 or
    float -> (B, C, size, size) float in the input's scale (uint8 input -> float [0, 1]).

    ``bilinear`` is antialiased (torch's approximation of Pillow's filter, as torchvision's resize of a
    tensor with ``antialias=True``); ``nearest`` is ``nearest-exact``, the pixel Pillow's NEAREST picks.
    """
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    out = torch.empty(images.shape[0], images.shape[1], size, size, device=images.device)
    mode = {"bilinear": "bilinear", "nearest": "nearest-exact"}[resize]
    options = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
    for i, (top, left, height, width) in enumerate(boxes.tolist()):
        crop = images[i : i + 1, :, top : top + height, left : left + width].float()
        out[i] = F.interpolate(crop, size=(size, size), mode=mode, **options)[0]
    return out.div_(scale).clamp_(0, 1) if scale != 1.0 else out


def contrast_jitter(images: torch.Tensor, strength: float, gen: torch.Generator) -> torch.Tensor:
    """Per-image contrast factor ~ U(1 - s, 1 + s), blended with the image's grey mean, as
    torchvision's adjust_contrast: (B, 3, H, W) float in [0, 1] -> same."""
    b = images.shape[0]
    factor = _uniform(b, 1 - strength, 1 + strength, gen, images.device).view(b, 1, 1, 1)
    grey = (0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]).mean(dim=(1, 2))
    return (factor * images + (1 - factor) * grey.view(b, 1, 1, 1)).clamp_(0, 1)


def mixup(
    images: torch.Tensor, targets: torch.Tensor, alpha: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp with one Beta(alpha, alpha) weight per batch (the authors' CLS-Intel recipe).

    images (B, C, H, W) float, targets (B, K) one-hot/probabilities -> mixed images and soft targets.
    """
    # torch's Beta sampler takes no generator: draw lam from ``gen`` through the inverse CDF instead.
    lam = _beta_from_generator(alpha, gen) if alpha > 0 else 1.0
    perm = torch.randperm(images.shape[0], generator=gen).to(images.device)
    return lam * images + (1 - lam) * images[perm], lam * targets + (1 - lam) * targets[perm]


def _beta_from_generator(alpha: float, gen: torch.Generator) -> float:
    from scipy.stats import beta

    u = float(torch.rand(1, generator=gen))
    return float(beta.ppf(u, alpha, alpha))
