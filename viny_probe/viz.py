"""Pictures shared by the trainers, the CLI and the report (matplotlib ``Figure`` on the Agg canvas:
no display needed and pyplot's global state untouched)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

# pet, background, boundary: black / grey / white as the study's Fig A1 draws the trimaps (the trimap
# values in grey scale); viny's earlier colours stay available as ``colours="viny"``.
TRIMAP_COLOURS = {
    "paper": ListedColormap(["#000000", "#808080", "#ffffff"]),
    "viny": ListedColormap(["#e4572e", "#2e4057", "#f3d34a"]),
}
TRIMAP_CMAP = TRIMAP_COLOURS["paper"]


def save_prediction_grid(images: torch.Tensor, truth: torch.Tensor, pred: torch.Tensor, path: Path) -> Path:
    """Rows of input | ground truth | prediction. images (N, 3, S, S) uint8, truth/pred (N, S, S)."""
    return save_prediction_comparison(images, truth, {"prediction": pred}, path)


def save_prediction_comparison(
    images: torch.Tensor,
    truth: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    path: Path,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    show_accuracy: bool = False,
    colours: str = "paper",
) -> Path:
    """Fig A1 for several models: rows = images, columns input | ground truth | one prediction per model.

    images (N, 3, S, S) uint8; truth and each of ``predictions`` (``{column title: ...}``) (N, S, S)
    class maps (0 pet, 1 background, 2 boundary). ``show_accuracy`` writes each prediction's pixel
    accuracy on that image under it. ``colours``: a key of TRIMAP_COLOURS (the study's grey scale by
    default). A JSON beside the PNG names the colour of each class."""
    cmap = TRIMAP_COLOURS[colours]
    n, cols = images.shape[0], 2 + len(predictions)
    height = 2.0 * n + (0.5 if title else 0.0) + 0.4 + (0.25 * n if show_accuracy else 0.0)
    fig = Figure(figsize=(2.0 * cols, height), layout="constrained")
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    truth = truth.cpu()
    for i in range(n):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).cpu().numpy())
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        maps = [truth[i], *(p[i].cpu() for p in predictions.values())]
        for j, panel in enumerate(maps, start=1):
            ax = axes[i, j]
            ax.imshow(panel.numpy(), cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
            if show_accuracy and j >= 2:
                accuracy = float((panel == truth[i]).float().mean())
                ax.set_xlabel(f"pixel acc. {100 * accuracy:.0f}%", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, name in zip(axes[0], ["input", "ground truth", *predictions], strict=True):
        ax.set_title(name.replace(" + ", "\n+ "), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    handles = [Rectangle((0, 0), 1, 1, facecolor=cmap(k), edgecolor="black", linewidth=0.5) for k in range(3)]
    fig.legend(handles, ["pet", "background", "boundary"], loc="outside lower center", ncol=3, frameon=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    names = ["pet", "background", "boundary"]
    path.with_suffix(".json").write_text(
        json.dumps({"colours": colours, "classes": {n: to_hex(cmap(k)) for k, n in enumerate(names)}})
    )
    return path
