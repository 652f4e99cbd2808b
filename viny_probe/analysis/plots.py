"""Figures for the diagnostics. Each function writes a PNG, writes the data it drew as JSON beside it
(``same_name.json``) and returns that data. Figures are built with ``matplotlib.figure.Figure`` and saved
through the Agg canvas, so pyplot's global state (and a notebook's backend) is never touched."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import seaborn as sns
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from viny_probe.analysis.distance import SimilarityCurve
from viny_probe.checkpoint import jsonable, write_json
from viny_probe.errors import VinyError

DPI = 120


@dataclass(frozen=True)
class MapScale:
    """The colour scale of cosine-similarity maps, shared by every map of one figure (one colourbar):
    ``vmin``..``vmax`` in matplotlib colour map ``cmap``; by default Fig 6's fixed -0.5..1 in viridis,
    as the study draws them. ``plot_reference_grid``, ``plot_reference_panel`` and
    ``plot_similarity_overlay`` take one."""

    vmin: float = -0.5
    vmax: float = 1.0
    cmap: str = "viridis"


def _save(fig: Figure, path: str | Path, data: dict) -> dict:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise VinyError(f"path must end in .png, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    data = jsonable(data)
    write_json(path.with_suffix(".json"), data)
    return data


def _as_map(value, name: str) -> np.ndarray:
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float)
    if array.ndim != 2 or array.shape[0] != array.shape[1]:
        raise VinyError(f"{name} must be a square (g, g) similarity map, got shape {array.shape}")
    return array


def _as_image(value, name: str) -> np.ndarray:
    """``(3, H, W)`` uint8 tensor/array -> ``(H, W, 3)`` for imshow."""
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    if array.ndim != 3 or array.shape[0] != 3 or array.dtype != np.uint8:
        raise VinyError(
            f"{name} must be a (3, H, W) uint8 image, got shape {array.shape} dtype {array.dtype}"
        )
    return array.transpose(1, 2, 0)


def _mark_patch(ax, row: int, col: int, size: float) -> Rectangle:
    """Red square around patch (row, col); ``size`` is a patch's side in the axes' data units
    (pixels for an image, 1 for a (g, g) map). imshow puts cell edges at -0.5, hence the offset."""
    return ax.add_patch(
        Rectangle(
            (col * size - 0.5, row * size - 0.5),
            size,
            size,
            fill=False,
            edgecolor="red",
            linewidth=2,
            clip_on=False,
        )
    )


def _from_zero(curve: SimilarityCurve, from_zero: bool, max_distance: int | None) -> dict:
    """The points Fig 5 draws: distance 0 (a patch with itself: cosine 1, no band needed) first when
    ``from_zero``, then the measured distances up to ``max_distance`` (default: all)."""
    keep = np.ones(len(curve.distances), bool) if max_distance is None else curve.distances <= max_distance
    arrays = {k: np.asarray(getattr(curve, k), float)[keep] for k in ("distances", "mean", "low", "high")}
    if from_zero:
        arrays = {k: np.concatenate([[0.0 if k == "distances" else 1.0], v]) for k, v in arrays.items()}
    arrays["distances"] = arrays["distances"].astype(int)
    return arrays


def plot_similarity_vs_distance(
    curves: Mapping[str, SimilarityCurve],
    path: str | Path,
    title: str = "Patch similarity vs spatial distance",
    from_zero: bool = True,
    max_distance: int | None = None,
) -> dict:
    """Fig 5: one line per checkpoint (mean cosine at each Manhattan distance) with its confidence band.

    As the study draws it, the x axis starts at distance 0, where every curve is 1 (a patch's cosine with
    itself), and runs to the grid's largest distance 2 (g - 1) (``max_distance`` cuts it shorter;
    ``from_zero=False`` starts at the first measured distance, 1).
    curves: ``{checkpoint name: SimilarityCurve}``. Returns/writes
    ``{"title", "from_zero", "curves": {name: {"distances", "mean", "low", "high", "pairs", "confidence"}}}``
    with the points drawn (distance 0 included when drawn).
    """
    if not curves:
        raise VinyError("curves must hold at least one {name: SimilarityCurve}")
    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    drawn = {name: _from_zero(curve, from_zero, max_distance) for name, curve in curves.items()}
    for name, d in drawn.items():
        (line,) = ax.plot(d["distances"], d["mean"], marker="o", markersize=3, label=name)
        ax.fill_between(d["distances"], d["low"], d["high"], color=line.get_color(), alpha=0.2, linewidth=0)
    confidence = next(iter(curves.values())).confidence
    ax.set(
        title=title,
        xlabel="Manhattan distance on the patch grid",
        ylabel=f"mean cosine similarity (band: {confidence:.0%} CI over images)",
    )
    ax.set_xticks(next(iter(drawn.values()))["distances"])
    ax.grid(alpha=0.3)
    ax.legend(title="checkpoint")
    data = {
        "title": title,
        "from_zero": from_zero,
        "curves": {
            name: {**drawn[name], "pairs": c.pairs, "confidence": c.confidence} for name, c in curves.items()
        },
    }
    return _save(fig, path, data)


def plot_reference_grid(
    images,
    maps: Mapping[str, Mapping[str, np.ndarray]],
    refs: Mapping[str, tuple[int, int]],
    path: str | Path,
    title: str = "Cosine similarity to the reference patch (red)",
    scale: MapScale = MapScale(),
    map_refs: Mapping[str, Mapping[str, tuple[int, int]]] | None = None,
) -> dict:
    """Fig 6: rows = reference patches, columns = the input image then one similarity map per checkpoint.

    images: one ``(3, H, W)`` uint8 image for every row, or ``{ref name: (3, H, W)}`` (one per row).
    maps:   ``{checkpoint name: {ref name: (g, g) cosine map}}``; checkpoints may differ in g.
    refs:   ``{ref name: (row, col)}``, the reference patch of each row, marked with a red square (on
            the input, on the grid of the first checkpoint's maps).
    map_refs: ``{checkpoint name: {ref name: (row, col)}}``, where a checkpoint on another grid has its
            reference (default: ``refs``).
    Maps share one colour range (``scale``: the study's fixed -0.5..1 unless it says otherwise) and one
    colourbar.
    """
    if not refs or not maps:
        raise VinyError("refs and maps must be non-empty")
    ref_names, ckpt_names = list(refs), list(maps)
    row_images = {
        r: _as_image(images[r] if isinstance(images, Mapping) else images, f"images[{r!r}]")
        for r in ref_names
    }
    grids = {}
    for ckpt in ckpt_names:
        for r in ref_names:
            if r not in maps[ckpt]:
                raise VinyError(f"maps[{ckpt!r}] has no map for reference {r!r}; it has {sorted(maps[ckpt])}")
            grids[ckpt, r] = _as_map(maps[ckpt][r], f"maps[{ckpt!r}][{r!r}]")
    g = grids[ckpt_names[0], ref_names[0]].shape[0]

    cols = 1 + len(ckpt_names)
    fig = Figure(figsize=(2.3 * cols + 0.8, 2.3 * len(ref_names) + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(len(ref_names), cols, squeeze=False))
    image = None
    for i, r in enumerate(ref_names):
        row, col = refs[r]
        picture = row_images[r]
        axes[i, 0].imshow(picture)
        _mark_patch(axes[i, 0], row, col, picture.shape[0] / g)
        axes[i, 0].set_ylabel(f"{r}\n({row}, {col})")
        for j, ckpt in enumerate(ckpt_names, start=1):
            image = axes[i, j].imshow(grids[ckpt, r], vmin=scale.vmin, vmax=scale.vmax, cmap=scale.cmap)
            _mark_patch(axes[i, j], *_map_ref(map_refs, refs, ckpt, r), 1.0)
            if i == 0:
                axes[i, j].set_title(ckpt)
        if i == 0:
            axes[i, 0].set_title("input")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[:, 1:].ravel().tolist(), shrink=0.8, label="cosine similarity")
    fig.suptitle(title)
    data = {
        "title": title,
        "vmin": scale.vmin,
        "vmax": scale.vmax,
        "refs": {r: list(refs[r]) for r in ref_names},
        "maps": {ckpt: {r: grids[ckpt, r] for r in ref_names} for ckpt in ckpt_names},
        **_map_refs_data(map_refs, refs, ckpt_names, ref_names),
    }
    return _save(fig, path, data)


PAPER_FIG6_ORDER = ("spatial", "cls-intel", "pretrained")  # the study's Fig 6 columns, left to right


def paper_fig6_order(names: Sequence[str]) -> list[str]:
    """Encoder names in the study's Fig 6 order: Spatial, Classification (CLS-Intel), Pretrained; any
    other encoder (e.g. CLS-Pets, which the study's Fig 6 does not show) after them, in the given order."""

    def rank(name: str) -> int:
        key = name.lower()
        for k, word in enumerate(PAPER_FIG6_ORDER):
            if key.startswith(word) or (word == "cls-intel" and key in ("classification", "cls")):
                return k
        return len(PAPER_FIG6_ORDER)

    return sorted(names, key=lambda n: (rank(n), list(names).index(n)))


def plot_reference_panel(
    image,
    target,
    maps: Mapping[str, Mapping[str, np.ndarray]],
    refs: Mapping[str, tuple[int, int]],
    path: str | Path,
    title: str = "Cosine similarity to the reference patch (red)",
    order: Sequence[str] | None = None,
    scale: MapScale = MapScale(),
    map_refs: Mapping[str, Mapping[str, tuple[int, int]]] | None = None,
) -> dict:
    """Fig 6 as the study lays it out: one image and its target mask on the left, then a grid with one
    row per reference patch and one column per encoder, in the study's order (``paper_fig6_order``:
    Spatial, Classification, Pretrained) unless ``order`` says otherwise. ``plot_reference_grid`` keeps
    viny's several-images layout.

    image: ``(3, H, W)`` uint8; target: ``(H, W)`` class map (0 pet, 1 background, 2 boundary), drawn in
    the Fig A1 colours; maps/refs/scale/map_refs as in ``plot_reference_grid``. The JSON beside the PNG also
    holds ``panels``: each drawn panel's grid position (row, col), what it shows and, where a red square
    is drawn, the (row, col) patch it marks, read back from the square itself.
    """
    from viny_probe.viz import TRIMAP_CMAP

    if not refs or not maps:
        raise VinyError("refs and maps must be non-empty")
    picture = _as_image(image, "image")
    truth = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target)
    if truth.shape != picture.shape[:2]:
        raise VinyError(f"target must be a {picture.shape[:2]} class map, got shape {truth.shape}")
    ref_names = list(refs)
    ckpt_names = list(order) if order is not None else paper_fig6_order(list(maps))
    grids = {}
    for ckpt in ckpt_names:
        for r in ref_names:
            if r not in maps.get(ckpt, {}):
                raise VinyError(f"maps[{ckpt!r}] has no map for reference {r!r}")
            grids[ckpt, r] = _as_map(maps[ckpt][r], f"maps[{ckpt!r}][{r!r}]")
    g = grids[ckpt_names[0], ref_names[0]].shape[0]
    nrows, ncols = max(2, len(ref_names)), 1 + len(ckpt_names)
    fig = Figure(figsize=(2.3 * ncols + 0.8, 2.3 * nrows + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False))
    panels = []

    def marked(square: Rectangle, size: float) -> list[int]:
        x, y = square.get_xy()
        return [round((y + 0.5) / size), round((x + 0.5) / size)]

    axes[0, 0].imshow(picture)
    axes[0, 0].set_title("input")
    squares = [
        marked(_mark_patch(axes[0, 0], *refs[r], picture.shape[0] / g), picture.shape[0] / g)
        for r in ref_names
    ]
    panels.append({"row": 0, "col": 0, "shows": "input", "marks": squares})
    axes[1, 0].imshow(truth, cmap=TRIMAP_CMAP, vmin=0, vmax=2, interpolation="nearest")
    axes[1, 0].set_title("target mask")
    panels.append({"row": 1, "col": 0, "shows": "target"})
    for ax in axes[2:, 0]:
        ax.set_visible(False)
    image_handle = None
    for i, r in enumerate(ref_names):
        axes[i, 1].set_ylabel(r, fontsize=8)
        for j, ckpt in enumerate(ckpt_names, start=1):
            image_handle = axes[i, j].imshow(
                grids[ckpt, r], vmin=scale.vmin, vmax=scale.vmax, cmap=scale.cmap
            )
            square = _mark_patch(axes[i, j], *_map_ref(map_refs, refs, ckpt, r), 1.0)
            panels.append(
                {
                    "row": i,
                    "col": j,
                    "shows": "map",
                    "encoder": ckpt,
                    "ref": r,
                    "marks": [marked(square, 1.0)],
                }
            )
            if i == 0:
                axes[i, j].set_title(ckpt)
    for ax in axes[len(ref_names) :, 1:].flat:
        ax.set_visible(False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(
        image_handle, ax=axes[: len(ref_names), 1:].ravel().tolist(), shrink=0.8, label="cosine similarity"
    )
    fig.suptitle(title)
    data = {
        "title": title,
        "vmin": scale.vmin,
        "vmax": scale.vmax,
        "encoders": ckpt_names,
        "refs": {r: list(refs[r]) for r in ref_names},
        "target": truth,
        "maps": {ckpt: {r: grids[ckpt, r] for r in ref_names} for ckpt in ckpt_names},
        "panels": panels,
        **_map_refs_data(map_refs, refs, ckpt_names, ref_names),
    }
    return _save(fig, path, data)


def _map_ref(map_refs, refs, ckpt: str, r: str) -> tuple[int, int]:
    own = (map_refs or {}).get(ckpt, {})
    return tuple(own.get(r, refs[r]))


def _map_refs_data(map_refs, refs, ckpt_names, ref_names) -> dict:
    """``{"map_refs": ...}`` when some checkpoint's references differ from ``refs`` (another grid)."""
    per = {c: {r: list(_map_ref(map_refs, refs, c, r)) for r in ref_names} for c in ckpt_names}
    differs = any(per[c][r] != list(refs[r]) for c in ckpt_names for r in ref_names)
    return {"map_refs": per} if differs else {}


def plot_similarity_overlay(
    image,
    similarity: np.ndarray,
    ref: tuple[int, int],
    path: str | Path,
    title: str | None = None,
    alpha: float = 0.55,
    ref_name: str = "patch",
    scale: MapScale = MapScale(),
) -> dict:
    """Three panels: the input with the reference patch marked, the (g, g) map, and the map upsampled
    (nearest, one block per patch) and overlaid on the input, in the colours of ``scale``. image:
    ``(3, H, W)`` uint8. The JSON has
    the shape of every similarity-map JSON, whatever the number of references: ``refs`` ({ref_name:
    [row, col]}) and ``maps`` ({ref_name: the (g, g) map})."""
    picture = _as_image(image, "image")
    grid = _as_map(similarity, "similarity")
    g, size = grid.shape[0], picture.shape[0] / grid.shape[0]
    row, col = ref
    if not (0 <= row < g and 0 <= col < g):
        raise VinyError(
            f"ref = {tuple(ref)} is outside the {g}x{g} grid: row and column must be in 0..{g - 1}"
        )
    title = title or f"Cosine similarity to patch ({row}, {col})"
    extent = (-0.5, picture.shape[1] - 0.5, picture.shape[0] - 0.5, -0.5)

    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    axes[0].imshow(picture)
    _mark_patch(axes[0], row, col, size)
    axes[0].set_title("input, reference in red")
    colours = {"vmin": scale.vmin, "vmax": scale.vmax, "cmap": scale.cmap}
    mapped = axes[1].imshow(grid, **colours)
    _mark_patch(axes[1], row, col, 1.0)
    axes[1].set_title(f"{g}x{g} similarity map")
    axes[2].imshow(picture)
    axes[2].imshow(grid, **colours, alpha=alpha, interpolation="nearest", extent=extent)
    _mark_patch(axes[2], row, col, size)
    axes[2].set_title("overlay")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(mapped, ax=list(axes), shrink=0.8, label="cosine similarity")
    fig.suptitle(title)
    data = {
        "title": title,
        "refs": {ref_name: [int(row), int(col)]},
        "vmin": scale.vmin,
        "vmax": scale.vmax,
        "maps": {ref_name: grid},
        "image_shape": list(picture.shape),
    }
    return _save(fig, path, data)


def plot_depth_curves(
    per_block: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | Path,
    title: str = "Diagnostics through the encoder",
) -> dict:
    """One panel per diagnostic, its value against block index, one line per checkpoint.

    per_block: ``{checkpoint name: {metric name: [value at block 0, 1, ...]}}``.
    """
    if not per_block:
        raise VinyError("per_block must hold at least one {checkpoint: {metric: values}}")
    metrics = list(dict.fromkeys(m for values in per_block.values() for m in values))
    if not metrics:
        raise VinyError("per_block holds no metrics")
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(4.6 * ncols, 3.4 * nrows + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, metric in zip(axes[: len(metrics)], metrics, strict=True):
        for name, values in per_block.items():
            if metric in values:
                ys = np.asarray(values[metric], dtype=float)
                ax.plot(np.arange(len(ys)), ys, marker="o", markersize=3, label=name)
        ax.set(title=metric, xlabel="block index", ylabel=metric)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), title="checkpoint")
    fig.suptitle(title)
    data = {
        "title": title,
        "per_block": {name: {m: list(v) for m, v in values.items()} for name, values in per_block.items()},
    }
    return _save(fig, path, data)


def _cka_axes(ax, grid, rows, cols, names, annotate_up_to: int, annot_size: int, cbar: dict | None) -> None:
    """One CKA heatmap on ``ax``: rows the blocks of ``names[0]``, columns those of ``names[1]``, a
    0..1 colour scale, the values written in when the grid has at most ``annotate_up_to`` rows/columns;
    a colourbar with ``cbar`` keywords, none when ``cbar`` is None."""
    sns.heatmap(
        grid,
        ax=ax,
        vmin=0.0,
        vmax=1.0,
        cmap="magma",
        square=True,
        annot=max(grid.shape) <= annotate_up_to,
        fmt=".2f",
        annot_kws={"size": annot_size},
        xticklabels=cols,
        yticklabels=rows,
        cbar=cbar is not None,
        cbar_kws=cbar or {},
    )
    ax.set(xlabel=f"{names[1]}: block", ylabel=f"{names[0]}: block")


def plot_cka_panels(matrices: list[dict], path: Path) -> dict:
    """One heatmap per checkpoint pair, side by side, shared 0..1 colour scale; JSON beside it."""
    cols = min(3, len(matrices))
    rows = math.ceil(len(matrices) / cols)
    side = max(3.6, 0.32 * max(np.asarray(m["matrix"]).shape[0] for m in matrices) + 1.6)
    fig = Figure(figsize=(side * cols + 1.0, side * rows + 0.6), layout="constrained")
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k, (ax, m) in enumerate(zip(axes, matrices, strict=False)):
        grid = np.asarray(m["matrix"], dtype=float)
        cbar = {"label": "linear CKA", "shrink": 0.8} if k == len(matrices) - 1 else None
        _cka_axes(ax, grid, m["row_labels"], m["col_labels"], m["names"], 8, 6, cbar)
        ax.set_title(f"{m['names'][0]} vs {m['names'][1]}", fontsize=10)
        ax.xaxis.label.set_size(9)
        ax.yaxis.label.set_size(9)
        ax.tick_params(labelsize=7)
    for ax in axes[len(matrices) :]:
        ax.set_visible(False)
    fig.suptitle("Linear CKA between blocks (patch tokens of the same test images)")
    return _save(fig, path, {"pairs": matrices})


def plot_similarity_by_class(curves: dict[str, dict], path: Path) -> dict:
    """Fig 5 split by pair class: one colour per checkpoint, solid = same-class pairs, dashed = different."""
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    colours = [f"C{k % 10}" for k in range(len(curves))]
    for colour, c in zip(colours, curves.values(), strict=True):
        for kind, style in (("same", "-"), ("different", "--")):
            curve = c[kind]
            ax.plot(curve.distances, curve.mean, style, color=colour, marker="o", markersize=3)
            ax.fill_between(curve.distances, curve.low, curve.high, color=colour, alpha=0.15, linewidth=0)
    confidence = next(iter(curves.values()))["same"].confidence
    ax.set(
        title="Fig 5 split: same-class (solid) vs different-class (dashed) patch pairs",
        xlabel="Manhattan distance on the patch grid",
        ylabel=f"mean cosine similarity (band: {confidence:.0%} CI over images)",
    )
    ax.set_xticks(next(iter(curves.values()))["same"].distances)
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colour, marker="o", markersize=3) for colour in colours]
    handles += [Line2D([], [], color="grey", linestyle="-"), Line2D([], [], color="grey", linestyle="--")]
    fig.legend(
        handles,
        [*curves, "same class", "different class"],
        loc="outside right center",
        title="checkpoint / pairs",
    )
    data = {
        "title": "similarity vs distance by pair class",
        "curves": {
            name: {kind: c[kind].to_dict() for kind in ("same", "different")} for name, c in curves.items()
        },
    }
    return _save(fig, path, data)


def plot_reference_grid_stretched(pictures, maps, refs, path: Path, low: float, map_refs=None) -> dict:
    """Fig 6 with the colour range low..1 (low = the smallest cosine in any map), one shared colourbar:
    the study's fixed range hides everything when all cosines sit in a narrow band (e.g. 0.9..1).
    ``map_refs`` as in ``plot_reference_grid``."""
    low = min(low, 0.999)
    title = f"Fig 6, colour range stretched to {low:.3f}..1 (the study's fixed -0.5..1: fig6_reference_patches.png)"
    return plot_reference_grid(pictures, maps, refs, path, title, MapScale(low, 1.0, "viridis"), map_refs)


def plot_cka_heatmap(
    matrix,
    names: tuple[str, str],
    path: str | Path,
    title: str = "Linear CKA between blocks",
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
) -> dict:
    """Seaborn heatmap of a ``(La, Lb)`` CKA matrix (e.g. ``cka_matrix``): rows are the blocks of
    checkpoint ``names[0]``, columns those of ``names[1]``; tick labels default to block indices."""
    grid = np.asarray(matrix.detach().cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=float)
    if grid.ndim != 2 or grid.size == 0:
        raise VinyError(f"matrix must be a non-empty (La, Lb) array, got shape {grid.shape}")
    if len(names) != 2:
        raise VinyError(f"names must be (row checkpoint, column checkpoint), got {names!r}")
    rows = list(row_labels) if row_labels is not None else [str(i) for i in range(grid.shape[0])]
    cols = list(col_labels) if col_labels is not None else [str(j) for j in range(grid.shape[1])]
    if len(rows) != grid.shape[0] or len(cols) != grid.shape[1]:
        raise VinyError(
            f"row_labels/col_labels must have {grid.shape[0]}/{grid.shape[1]} entries, "
            f"got {len(rows)}/{len(cols)}"
        )
    side = max(4.0, 0.45 * max(grid.shape) + 2)
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    _cka_axes(ax, grid, rows, cols, names, 13, 7, {"label": "linear CKA"})
    ax.set_title(title)
    data = {"title": title, "names": list(names), "row_labels": rows, "col_labels": cols, "matrix": grid}
    return _save(fig, path, data)


def _as_rgb(value, name: str) -> np.ndarray:
    """``(N, 3, H, W)`` float RGB in [0, 1] -> ``(N, H, W, 3)`` for imshow."""
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float)
    if array.ndim != 4 or array.shape[1] != 3:
        raise VinyError(f"{name} must be (N, 3, H, W) float RGB, got shape {array.shape}")
    return np.clip(array, 0.0, 1.0).transpose(0, 2, 3, 1)


def plot_reconstructions(
    inputs,
    masked_inputs,
    reconstructions: Mapping[str, object],
    masked_l1: Mapping[str, Sequence[float]],
    path: str | Path,
    row_labels: Sequence[str] | None = None,
    title: str = "SimMIM reconstructions",
    data: dict | None = None,
) -> dict:
    """Fig 2: one row per image, columns input | masked input | one reconstruction per checkpoint.

    inputs, masked_inputs and each of ``reconstructions`` (``{column title: ...}``): (N, 3, H, W) float
    RGB in [0, 1]; ``masked_l1``: ``{column title: N values}``, written under each reconstruction.
    ``data`` (default: the titles and L1 values) is what the JSON beside the PNG holds.
    """
    pictures = _as_rgb(inputs, "inputs")
    masked = _as_rgb(masked_inputs, "masked_inputs")
    if masked.shape != pictures.shape:
        raise VinyError(f"masked_inputs has shape {masked.shape}, inputs {pictures.shape}: they must match")
    if not reconstructions:
        raise VinyError("reconstructions must hold at least one (N, 3, H, W) set")
    recons = {name: _as_rgb(r, f"reconstructions[{name!r}]") for name, r in reconstructions.items()}
    for name, r in recons.items():
        if r.shape != pictures.shape:
            raise VinyError(
                f"reconstructions[{name!r}] has shape {r.shape}, inputs {pictures.shape}: they must match"
            )
    n = pictures.shape[0]
    labels = list(row_labels) if row_labels is not None else [f"image {i}" for i in range(n)]
    cols = 2 + len(recons)
    fig = Figure(figsize=(2.1 * cols, 2.1 * n + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    for i in range(n):
        axes[i, 0].imshow(pictures[i], interpolation="nearest")
        axes[i, 0].set_ylabel(labels[i], fontsize=8)
        axes[i, 1].imshow(masked[i], interpolation="nearest")
        for j, (name, r) in enumerate(recons.items(), start=2):
            axes[i, j].imshow(r[i], interpolation="nearest")
            if name in masked_l1:
                axes[i, j].set_xlabel(f"masked L1 {float(masked_l1[name][i]):.3f}", fontsize=8)
    for j, name in enumerate(["input", "masked input (50%)", *recons]):
        axes[0, j].set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    if data is None:
        data = {"title": title, "rows": labels, "masked_l1": {k: list(v) for k, v in masked_l1.items()}}
    return _save(fig, path, data)


def plot_pca_rgb(
    pictures,
    colours: Mapping[str, torch.Tensor],
    path: str | Path,
    info: Mapping[str, dict] | None = None,
    title: str = "First three principal components of the patch tokens as RGB",
) -> dict:
    """The DINO-style PCA picture: columns = images; the first row the inputs, then one row per model
    with each patch coloured by its first three principal components (``analysis.pca.pca_rgb``).

    pictures: ``(n, 3, H, W)`` uint8 inputs. colours: ``{model: (n, P, 3)}`` colours in [0, 1], P = g * g
    (models may differ in g). info: ``{model: pca_rgb's info}``, its explained variance in the row label.
    """
    if not colours:
        raise VinyError("colours must name at least one model")
    shown = [_as_image(p, f"pictures[{i}]") for i, p in enumerate(pictures)]
    n = len(shown)
    grids = {}
    for name, c in colours.items():
        c = torch.as_tensor(c, dtype=torch.float32)
        g = math.isqrt(c.shape[1]) if c.ndim == 3 else 0
        if c.ndim != 3 or c.shape[0] < n or c.shape[2] != 3 or g * g != c.shape[1]:
            raise VinyError(f"colours[{name!r}] must be (n >= {n}, g * g, 3), got {tuple(c.shape)}")
        grids[name] = c[:n].reshape(n, g, g, 3).clamp(0, 1).numpy()
    fig = Figure(figsize=(1.9 * n + 1.2, 1.9 * (1 + len(grids)) + 0.5), layout="constrained")
    axes = np.asarray(fig.subplots(1 + len(grids), n, squeeze=False))
    for j, picture in enumerate(shown):
        axes[0, j].imshow(picture)
    axes[0, 0].set_ylabel("input")
    for i, (name, grid) in enumerate(grids.items(), start=1):
        for j in range(n):
            axes[i, j].imshow(grid[j], interpolation="nearest")
        ratios = (info or {}).get(name, {}).get("explained_variance_ratio")
        label = name if not ratios else f"{name}\n({100 * sum(ratios):.0f}% of variance)"
        axes[i, 0].set_ylabel(label)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title)
    return _save(fig, path, {"title": title, "colours": grids, "info": dict(info or {})})
