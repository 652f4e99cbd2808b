"""Task heads, each a small module on top of the encoder's tokens: the patch heads read (B, P, D) patch
tokens; the classification head reads the CLS token of (B, 1 + P, D) (the encoder called with ``cls=True``).

Each also has a ``stacked_forward(p, tokens)``: the same head for K members at once, on (K, B, ...)
tokens with the members' parameters stacked (``model.StackedParams``), as a fleet runs it."""

from __future__ import annotations

import torch
from torch import nn

from .model import StackedParams, ViTConfig, stacked_linear


class SimMIMHead(nn.Module):
    """Learned mask token and a one-layer decoder: patch token -> raw pixels of its patch.

    The mask token starts normal with std ``mask_token_std``: 0.02 by default (viny), 1 in the study's
    code (``--preset authors``)."""

    def __init__(self, cfg: ViTConfig, mask_token_std: float = 0.02) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(cfg.dim))
        nn.init.normal_(self.mask_token, std=mask_token_std)
        self.decoder = nn.Linear(cfg.dim, cfg.patch_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> (B, P, patch*patch*C) in patchify's (ph, pw, c) order."""
        return self.decoder(tokens)

    def stacked_forward(self, p: StackedParams, tokens: torch.Tensor) -> torch.Tensor:
        """(K, B, P, D) -> (K, B, P, patch*patch*C)."""
        return stacked_linear(tokens, p["decoder.weight"], p["decoder.bias"])


class ClassificationHead(nn.Module):
    """Linear classifier on the CLS token (position 0 of the encoder's ``cls=True`` output)."""

    def __init__(self, cfg: ViTConfig, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 1 + P, D) -> (B, classes)."""
        return self.fc(tokens[:, 0])

    def stacked_forward(self, p: StackedParams, tokens: torch.Tensor) -> torch.Tensor:
        """(K, B, 1 + P, D) -> (K, B, classes)."""
        return stacked_linear(tokens[:, :, 0], p["fc.weight"], p["fc.bias"])


class SpatialHead(nn.Module):
    """Linear classifier on every patch token (patch-aligned supervision)."""

    def __init__(self, cfg: ViTConfig, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> (B, P, classes)."""
        return self.fc(tokens)

    def stacked_forward(self, p: StackedParams, tokens: torch.Tensor) -> torch.Tensor:
        """(K, B, P, D) -> (K, B, P, classes)."""
        return stacked_linear(tokens, p["fc.weight"], p["fc.bias"])


class SegmentationHead(nn.Module):
    """Each patch token -> classes x patch x patch logits (the study's 128 -> 3*256 head)."""

    def __init__(self, cfg: ViTConfig, num_classes: int = 3) -> None:
        super().__init__()
        self.num_classes, self.patch_size, self.grid = num_classes, cfg.patch_size, cfg.grid
        self.fc = nn.Linear(cfg.dim, num_classes * cfg.patch_size**2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P, D) -> (B, classes, H, W); each patch's output read as (class, ph, pw)."""
        return self._pixels(self.fc(tokens))

    def stacked_forward(self, p: StackedParams, tokens: torch.Tensor) -> torch.Tensor:
        """(K, B, P, D) -> (K, B, classes, H, W)."""
        members, b = tokens.shape[:2]
        logits = self._pixels(stacked_linear(tokens, p["fc.weight"], p["fc.bias"]).flatten(0, 1))
        return logits.view(members, b, *logits.shape[1:])

    def _pixels(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, P, classes*patch*patch) -> (B, classes, H, W), each patch's logits read as (class, ph, pw)."""
        b = logits.shape[0]
        g, p, c = self.grid, self.patch_size, self.num_classes
        x = logits.view(b, g, g, c, p, p)
        return x.permute(0, 3, 1, 4, 2, 5).reshape(b, c, g * p, g * p)


def class_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(1)`` for (B, C, H, W) logits with few classes, ties to the lower class as argmax.

    Same result, one elementwise pass per class over contiguous (B, H, W) slices: torch's reduction
    over the strided class axis is an order of magnitude slower on CPU (docs/performance.md, "Why the
    code is as it is")."""
    best = logits[:, 0]
    index = torch.zeros(best.shape, dtype=torch.long, device=logits.device)
    for c in range(1, logits.shape[1]):
        x = logits[:, c]
        index = torch.where(x > best, c, index)
        best = torch.maximum(best, x)
    return index
