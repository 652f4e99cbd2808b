"""Pictures shared by the trainers and the CLI (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

# pet, background, boundary
TRIMAP_CMAP = ListedColormap(["#e4572e", "#2e4057", "#f3d34a"])


def save_prediction_grid(images: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor, path: Path) -> Path:
    """Rows of input | ground truth | prediction. images (N, 3, S, S) uint8, truth/pred (N, S, S)."""
    n = images.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(6, 2 * n), squeeze=False)
    for i in range(n):
        panels = [images[i].permute(1, 2, 0).cpu().numpy(), truth[i].cpu().numpy(), pred[i].cpu().numpy()]
        for j, (ax, panel) in enumerate(zip(axes[i], panels, strict=True)):
            if j == 0:
                ax.imshow(panel)
            else:
                ax.imshow(np.asarray(panel), cmap=TRIMAP_CMAP, vmin=0, vmax=2, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ["input", "ground truth", "prediction"], strict=True):
        ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=TRIMAP_CMAP(k)) for k in range(3)]
    fig.legend(handles, ["pet", "background", "boundary"], loc="lower center", ncol=3, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
