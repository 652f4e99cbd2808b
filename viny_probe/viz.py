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


# Fig A2: wrong pixels in red on white (a colour none of the grey-scale classes uses)
ERROR_COLOURS = ListedColormap(["#ffffff", "#d62728"])


def error_map(truth: torch.Tensor, pred: torch.Tensor, ignore: int = 255) -> torch.Tensor:
    """``(..., S, S)`` bool: True exactly where ``pred`` differs from ``truth`` (pixels whose truth is
    ``ignore``, no class, count as right)."""
    if truth.shape != pred.shape:
        raise ValueError(f"truth {tuple(truth.shape)} and prediction {tuple(pred.shape)} differ in shape")
    truth, pred = truth.cpu().long(), pred.cpu().long()
    return (pred != truth) & (truth != ignore)


def save_error_maps(
    images: torch.Tensor,
    truth: torch.Tensor,
    predictions: Mapping[str, torch.Tensor],
    path: Path,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    colours: str = "paper",
    data: dict | None = None,
) -> Path:
    """Fig A2 for one or several models: rows = images, columns input | ground truth | then, per model,
    its prediction (the Fig A1 class colours) and its error map (wrong pixels red, right ones white),
    the share of wrong pixels under it. images (N, 3, S, S) uint8; truth and each prediction (N, S, S)
    class maps. The JSON beside the PNG names the colours and every image's error share per model
    (with ``data`` merged in)."""
    cmap = TRIMAP_COLOURS[colours]
    n, cols = images.shape[0], 2 + 2 * len(predictions)
    fig = Figure(figsize=(1.9 * cols, 2.15 * n + (0.5 if title else 0.0) + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    truth = truth.cpu()
    shares: dict[str, list[float]] = {name: [] for name in predictions}
    for i in range(n):
        axes[i, 0].imshow(images[i].permute(1, 2, 0).cpu().numpy())
        if row_labels is not None:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
        axes[i, 1].imshow(truth[i].numpy(), cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
        for k, (name, pred) in enumerate(predictions.items()):
            wrong = error_map(truth[i], pred[i])
            share = float(wrong.float().mean())
            shares[name].append(share)
            axes[i, 2 + 2 * k].imshow(
                pred[i].cpu().numpy(), cmap=cmap, vmin=0, vmax=2, interpolation="nearest"
            )
            ax = axes[i, 3 + 2 * k]
            ax.imshow(
                wrong.numpy().astype(np.uint8), cmap=ERROR_COLOURS, vmin=0, vmax=1, interpolation="nearest"
            )
            ax.set_xlabel(f"{100 * share:.0f}% wrong", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_linewidth(0.5)
    heads = ["input", "ground truth"]
    for name in predictions:
        label = name.replace(" + ", "\n+ ")
        heads += [f"{label}\nprediction", f"{label}\nerrors"]
    for ax, head in zip(axes[0], heads, strict=True):
        ax.set_title(head, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    handles = [Rectangle((0, 0), 1, 1, facecolor=cmap(k), edgecolor="black", linewidth=0.5) for k in range(3)]
    handles.append(Rectangle((0, 0), 1, 1, facecolor=ERROR_COLOURS(1), edgecolor="black", linewidth=0.5))
    fig.legend(
        handles,
        ["pet", "background", "boundary", "wrong pixel"],
        loc="outside lower center",
        ncol=4,
        frameon=False,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    names = ["pet", "background", "boundary"]
    record = {
        "colours": colours,
        "classes": {c: to_hex(cmap(k)) for k, c in enumerate(names)},
        "wrong_pixel": to_hex(ERROR_COLOURS(1)),
        "wrong_share": shares,
        **(data or {}),
    }
    path.with_suffix(".json").write_text(json.dumps(record))
    return path
