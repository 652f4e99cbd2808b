"""The plain eager fp32 baseline `viny bench` compares against: the straightforward way to write, feed and
step ViNy.

- ``PlainViT``: the same parameters under the same names as ``ViNy`` (so ``load_state_dict`` of a ViNy
  state dict gives the same function), but attention written out as ``softmax(q @ k^T * scale) @ v``
  with q, k, v sliced from the qkv output, and no autocast, no compile, default (for-loop) AdamW.
- ``JpegFolder`` + ``plain_loader``: per-sample PIL decoding of JPEG files and torchvision transforms
  (RandomResizedCrop, RandomHorizontalFlip, ToTensor, Normalize) in a ``torch.utils.data.DataLoader``,
  so every epoch decodes every file again.
- ``write_jpegs``: the temporary folder of JPEGs that loader reads (written from the cached images).
- ``baseline_measures``: its training step written out the plain way (loss, ``item()`` every step,
  ``zero_grad``, ``backward``, ``step``, no micro-batches) and its evaluation, as timed closures.

Nothing here is used for training; it exists so that every figure of the benchmark is a ratio
measured in one run against the same model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..data.augment import IMAGENET_MEAN, IMAGENET_STD, normalize, to_float
from ..data.base import ImageSet
from ..errors import VinyError
from ..model import ViTConfig, model_config, patchify
from ..trainers.simmim import masked_l1, random_half_mask
from .harness import TrainerSetup, fixed_batch, make_trainer

# The regimes the plain baseline implements (image-only inputs).
BASELINE_REGIMES = ("simmim", "classify")


class PlainAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.proj = nn.Linear(heads * dim_head, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, self.dim_head).transpose(1, 2) for z in (q, k, v))
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, t, self.heads * self.dim_head)
        return self.proj(out)


class PlainMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


class PlainBlock(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.attn = PlainAttention(cfg.dim, cfg.heads, cfg.dim_head)
        self.mlp = PlainMLP(cfg.dim, cfg.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class PlainPatchEmbed(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.norm_in = nn.LayerNorm(cfg.patch_dim)
        self.proj = nn.Linear(cfg.patch_dim, cfg.dim)
        self.norm_out = nn.LayerNorm(cfg.dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.norm_out(self.proj(self.norm_in(patchify(images, self.patch_size))))


class PlainViT(nn.Module):
    """ViNy written the plain way; state-dict compatible with ``viny_probe.model.ViNy``."""

    def __init__(self, cfg: ViTConfig | str = "viny") -> None:
        super().__init__()
        cfg = model_config(cfg)
        self.cfg = cfg
        self.patch_embed = PlainPatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.randn(1, cfg.num_patches + 1, cfg.dim))
        self.blocks = nn.ModuleList(PlainBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(
        self,
        images: torch.Tensor,
        mask: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
        cls: bool = False,
    ) -> torch.Tensor:
        x = self.patch_embed(images)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), mask_token.expand_as(x), x)
        x = x + self.pos_embed[:, 1:]
        if cls:
            x = torch.cat([(self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def write_jpegs(images: torch.Tensor, folder: str | Path, quality: int = 95) -> list[Path]:
    """Write (N, 3, S, S) uint8 images as ``folder/000000.jpg`` ... and return the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(img.permute(1, 2, 0).contiguous().numpy()).save(path, quality=quality)
        paths.append(path)
    return paths


class JpegFolder(torch.utils.data.Dataset):
    """Decode one JPEG per item with PIL and apply torchvision transforms (the usual ImageFolder way)."""

    def __init__(self, paths: list[Path], labels: torch.Tensor | None, size: int) -> None:
        from torchvision import transforms

        self.paths, self.labels = list(paths), labels
        self.transform = transforms.Compose(
            [
                transforms.RandomResizedCrop(size, scale=(0.67, 1.0)),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as im:
            x = self.transform(im.convert("RGB"))
        label = int(self.labels[i]) if self.labels is not None else 0
        return x, label


def plain_loader(
    paths: list[Path], labels: torch.Tensor | None, size: int, batch_size: int, workers: int = 0
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        JpegFolder(paths, labels, size),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=False,
    )


def baseline_loss(regime: str, encoder: nn.Module, head: nn.Module, x: torch.Tensor, labels, gen):
    """The baseline's loss on already-augmented float images (its DataLoader did the augmentation)."""
    if regime == "simmim":
        cfg = encoder.cfg
        mask = random_half_mask(x.shape[0], cfg.num_patches, gen, x.device)
        pred = head(encoder(x, mask=mask, mask_token=head.mask_token))
        return masked_l1(pred, patchify(x, cfg.patch_size), mask)
    return F.cross_entropy(head(encoder(x, cls=True)), labels)


def baseline_measures(
    regime: str,
    cfg: ViTConfig,
    data: ImageSet,
    device: torch.device,
    batch: int,
    steps: int,
    jpeg_dir: str | None = None,
    workers: int = 0,
) -> dict[str, Callable[[], object]]:
    """The plain eager fp32 baseline (``PlainViT``, the same initial weights as ViNy, torch's default
    AdamW, no autocast) as timed closures: "train" (``steps`` steps on a resident, pre-normalised
    batch), "eval" (``steps`` no-grad forwards), and with ``jpeg_dir`` "dataloader" (one pass of the
    per-sample JPEG DataLoader alone) and "epoch" (one epoch, data included)."""
    if regime not in BASELINE_REGIMES:
        raise VinyError("the plain baseline runs the image-only regimes: simmim or classify")
    tr = make_trainer(regime, cfg, data, device, TrainerSetup(optimizer="default", encoder_cls=PlainViT))
    gen = torch.Generator().manual_seed(0)
    fixed = fixed_batch(data, batch, device)
    x = normalize(to_float(fixed["images"]))
    labels = fixed["labels"]

    def step(x=x, labels=labels):
        loss = baseline_loss(regime, tr.encoder, tr.head, x, labels, gen)
        if not math.isfinite(loss.item()):
            raise VinyError("non-finite loss in the baseline")
        tr.optimizer.zero_grad()
        loss.backward()
        tr.optimizer.step()

    @torch.no_grad()
    def evaluate():
        tr.encoder.eval()
        for _ in range(steps):
            tr.head(tr.encoder(x, cls=regime == "classify"))
        tr.encoder.train()

    out = {"train": lambda: [step() for _ in range(steps)], "eval": evaluate}
    if jpeg_dir is not None:
        paths = write_jpegs(data.images.cpu(), jpeg_dir)
        lab = data.labels.cpu() if data.labels is not None else None
        loader = plain_loader(paths, lab, cfg.image_size, batch, workers)

        def load_only():
            for _ in loader:
                pass

        def epoch():
            for xb, yb in loader:  # decode every file again, transfer, step
                step(xb.to(device), yb.to(device))

        out["dataloader"], out["epoch"] = load_only, epoch
    return out
