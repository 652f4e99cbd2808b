"""The library behind ``viny diagnose``: several checkpoints side by side, written into one folder.

This module only orchestrates: the images come from ``evaluation_data`` (the training protocol's split,
defaults from the lineage, the overlap guard), the tokens from ``embeddings.extract_patch_tokens`` (once
per checkpoint and image set, cached on disk), every per-layer number from the diagnostics registry
(``registry.measure_layer`` / ``measure_block``), the figures from ``plots`` and the tables and
summary.md from ``render``. See docs/diagnostics.md for the formulas.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from viny_probe.analysis.cka import cka_matrix
from viny_probe.analysis.diagnostics import PROBE_SEED
from viny_probe.analysis.distance import similarity_vs_distance_by_class
from viny_probe.analysis.embeddings import extract_patch_tokens, load_encoder
from viny_probe.analysis.evaluation_data import (
    DEFAULT_PROBE_IMAGES,
    DEFAULT_TEST_IMAGES,
    load_probe_data,
    patch_labels,
    resolve_evaluation,
)
from viny_probe.analysis.lineage import guard_evaluation
from viny_probe.analysis.plots import (
    plot_cka_panels,
    plot_depth_curves,
    plot_reference_grid,
    plot_reference_grid_stretched,
    plot_similarity_by_class,
    plot_similarity_vs_distance,
)
from viny_probe.analysis.reference import choose_reference_patches, similarity_map
from viny_probe.analysis.registry import (
    LayerTokens,
    measure_block,
    measure_layer,
    registered,
    settings,
    switched_off,
)
from viny_probe.analysis.render import summary_markdown, table2_json, table2_markdown, table2_rows
from viny_probe.analysis.stamp import stamp_warnings
from viny_probe.checkpoint import jsonable, write_json
from viny_probe.checks import check_positive_int
from viny_probe.data.base import ImageSet
from viny_probe.errors import VinyError
from viny_probe.model import ViNy

# The per-block probe is fitted on fewer pool images; CKA uses the first test images only.
DEPTH_PROBE_IMAGES = 250
CKA_IMAGES = 250
FIG6_IMAGES = 2


def default_names(ckpts: Sequence[str | Path]) -> list[str]:
    """``runs/sim/final.pt`` -> ``sim``; a clash falls back to the longer path, then a number."""
    names = []
    for c in ckpts:
        p = Path(c)
        name = p.parent.name if p.stem in ("final", "last", "best") or p.stem.startswith("epoch") else p.stem
        name = name or p.stem
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _fig6_images(labels: torch.Tensor, count: int) -> list[int]:
    """Test images that show all three classes, the most balanced first (the smallest class's patch
    count, then the image with the lowest index)."""
    counts = torch.stack([(labels == c).sum(dim=1) for c in range(3)], dim=1)  # (N, 3)
    present = (counts > 0).sum(dim=1)
    score = present * 1000 + counts.min(dim=1).values
    order = sorted(range(len(labels)), key=lambda i: (-int(score[i]), i))
    return order[:count]


def _cka_pairs(n: int) -> list[tuple[int, int]]:
    if n == 1:
        return [(0, 0)]
    pairs = [(0, j) for j in range(1, n)]
    pairs += [(j - 1, j) for j in range(2, n)]
    return pairs


@dataclass
class _Options:
    probe_images: int
    test_images: int
    depth_probe_images: int
    cka_images: int
    fig6_images: int
    off: tuple[str, ...]
    background: str
    extract: dict


@dataclass
class _Collected:
    """What diagnose gathers checkpoint by checkpoint, before it writes anything."""

    data: dict[int, tuple[ImageSet, ImageSet, dict]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    finals: dict[str, dict] = field(default_factory=dict)
    curves: dict[str, dict] = field(default_factory=dict)
    per_block: dict[str, dict[str, list]] = field(default_factory=dict)
    cka_feats: list[list[torch.Tensor]] = field(default_factory=list)
    fig6_info: list[dict] = field(default_factory=list)
    fig6_refs: dict[str, tuple[int, int]] = field(default_factory=dict)
    fig6_pictures: dict[str, torch.Tensor] = field(default_factory=dict)
    fig6_maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _check_names(ckpts: Sequence, names: Sequence[str] | None) -> list[str]:
    if not ckpts:
        raise VinyError("give at least one checkpoint")
    names = list(names) if names else default_names(ckpts)
    if len(names) != len(ckpts):
        raise VinyError(
            f"--names gives {len(names)} names for {len(ckpts)} checkpoints; give one name per checkpoint"
        )
    if len(set(names)) != len(names):
        raise VinyError(f"--names must be distinct, got {names}")
    return names


def _choose_fig6(got: _Collected, test_set: ImageSet, test_labels: torch.Tensor, opts: _Options, patch_size):
    """Fig 6's images and reference patches: the same for every checkpoint (the first one's trimaps)."""
    for index in _fig6_images(test_labels, min(opts.fig6_images, len(test_set))):
        refs = choose_reference_patches(test_set.masks[index], patch_size, background=opts.background)
        got.fig6_info.append(
            {"test_index": index, "id": test_set.ids[index], "refs": {k: list(v) for k, v in refs.items()}}
        )
        for ref, rc in refs.items():
            row = f"#{index} {ref.replace('_', ' ')}"
            got.fig6_refs[row] = rc
            got.fig6_pictures[row] = test_set.images[index]


def _fig6_maps(got: _Collected, final: torch.Tensor) -> dict[str, np.ndarray]:
    return {
        f"#{entry['test_index']} {ref.replace('_', ' ')}": similarity_map(
            final[entry["test_index"]], tuple(rc)
        )
        for entry in got.fig6_info
        for ref, rc in entry["refs"].items()
    }


def _per_block(encoder: ViNy, train_set, train_labels, test_all, test_labels, final, opts, tag) -> dict:
    """Every per-block diagnostic at every block (``values[0]`` is None): label-free ones on the test
    tokens; those that fit a classifier on the first ``depth_probe_images`` pool images."""
    n_depth = min(opts.depth_probe_images, len(train_set))
    train_blocks = None
    if any(d.needs_labels for d in registered() if d.per_block):
        subset = train_set.subset(list(range(n_depth)))
        train_blocks = extract_patch_tokens(encoder, subset, "all", split=f"pool-{tag}", **opts.extract)
    curves: dict[str, list] = {d.curve: [None] for d in registered() if d.per_block}
    for b in range(1, encoder.cfg.depth + 1):
        train = None if train_blocks is None else train_blocks[b]
        layer = LayerTokens(test_all[b], test_labels, train, train_labels[:n_depth], PROBE_SEED, final=final)
        for curve, value in measure_block(layer, opts.off).items():
            curves[curve].append(value)
    return curves


def _measure_checkpoint(got: _Collected, encoder: ViNy, meta: dict, name: str, path, where: dict, opts):
    """One checkpoint: its test images embedded once at every block, its pool images at the final one;
    every registered diagnostic at the final block, the per-block ones at every block, Fig 5 and 6."""
    cfg = encoder.cfg
    train_set, test_set, info = got.data[cfg.image_size]
    train_labels, test_labels = (
        patch_labels(train_set, cfg.patch_size),
        patch_labels(test_set, cfg.patch_size),
    )
    info["probe_patches"], info["test_patches"] = train_labels.numel(), test_labels.numel()
    got.checkpoints.append(
        {
            "name": name,
            "path": str(path),
            "regime": meta.get("regime"),
            "model_config": cfg.to_dict(),
            "lineage": meta.get("lineage", []),
        }
    )
    tag = f"seed{where['split_seed']}-t{where['test_size']}"
    test_all = extract_patch_tokens(encoder, test_set, "all", split=f"test-{tag}", **opts.extract)
    final = test_all[cfg.depth]
    train_final = extract_patch_tokens(encoder, train_set, "final", split=f"pool-{tag}", **opts.extract)
    layer = LayerTokens(final, test_labels, train_final["final"], train_labels, PROBE_SEED)
    got.finals[name] = measure_layer(layer, opts.off)
    del train_final, layer
    got.curves[name] = similarity_vs_distance_by_class(final, test_labels)
    if not got.fig6_info:
        _choose_fig6(got, test_set, test_labels, opts, cfg.patch_size)
    got.fig6_maps[name] = _fig6_maps(got, final)
    got.per_block[name] = _per_block(
        encoder, train_set, train_labels, test_all, test_labels, got.finals[name], opts, tag
    )
    got.cka_feats.append([test_all[b][: opts.cka_images].clone() for b in range(1, cfg.depth + 1)])


def _cka(got: _Collected, names: list[str]) -> list[dict]:
    matrices = []
    for a, b in _cka_pairs(len(names)):
        if got.cka_feats[a][0].shape[:2] != got.cka_feats[b][0].shape[:2]:
            continue  # different patch grids: no row-aligned features to compare
        m = cka_matrix(got.cka_feats[a], got.cka_feats[b])
        matrices.append(
            {
                "names": [names[a], names[b]],
                "row_labels": [str(k) for k in range(1, len(got.cka_feats[a]) + 1)],
                "col_labels": [str(k) for k in range(1, len(got.cka_feats[b]) + 1)],
                "matrix": m,
                "diagonal": np.diag(m).tolist() if m.shape[0] == m.shape[1] else None,
            }
        )
    return matrices


def _write_figures(got: _Collected, matrices: list[dict], out: Path, opts: _Options) -> dict[str, str]:
    files = {"table2": "table2.md"}
    plot_similarity_vs_distance(
        {n: c["all"] for n, c in got.curves.items()},
        out / "fig5_similarity_vs_distance.png",
        title="Fig 5: patch similarity vs Manhattan distance (all pairs)",
    )
    files["fig5"] = "fig5_similarity_vs_distance.png"
    plot_similarity_by_class(got.curves, out / "fig5_by_class.png")
    files["fig5_by_class"] = "fig5_by_class.png"
    plot_reference_grid(
        got.fig6_pictures,
        got.fig6_maps,
        got.fig6_refs,
        out / "fig6_reference_patches.png",
        title="Fig 6: cosine similarity to the reference patch (red), colour range -0.5..1",
    )
    files["fig6"] = "fig6_reference_patches.png"
    low = min(float(np.min(m)) for maps in got.fig6_maps.values() for m in maps.values())
    plot_reference_grid_stretched(
        got.fig6_pictures, got.fig6_maps, got.fig6_refs, out / "fig6_stretched.png", low
    )
    files["fig6_stretched"] = "fig6_stretched.png"
    depth_images = min(opts.depth_probe_images, opts.probe_images)
    plot_depth_curves(
        got.per_block,
        out / "depth_curves.png",
        title=f"Diagnostics per block, test images (probe per block fitted on {depth_images} pool images)",
    )
    files["depth_curves"] = "depth_curves.png"
    if matrices:
        plot_cka_panels(matrices, out / "cka.png")
        files["cka"] = "cka.png"
    return files


def _summary(got: _Collected, matrices: list[dict], files: dict, opts: _Options, started: float) -> dict:
    return {
        "checkpoints": got.checkpoints,
        "data": {size: info for size, (_, _, info) in got.data.items()},
        "settings": {
            **settings(opts.off),
            "depth_probe_images": min(opts.depth_probe_images, opts.probe_images),
            "cka_images": min(opts.cka_images, opts.test_images),
            "fig6_images": got.fig6_info,
        },
        "table2": table2_rows(got.finals),
        "final_layer": got.finals,
        "similarity_vs_distance": {n: {k: c.to_dict() for k, c in v.items()} for n, v in got.curves.items()},
        "per_block": got.per_block,
        "cka": [{k: v for k, v in m.items() if k != "matrix"} | {"matrix": m["matrix"]} for m in matrices],
        "files": files,
        "warnings": got.warnings,
        "seconds": time.perf_counter() - started,
    }


def diagnose(
    ckpts: Sequence[str | Path],
    names: Sequence[str] | None = None,
    out_dir: str | Path = "viny-diagnose",
    dataset: str | None = None,
    data_root: str | Path | None = None,
    split_seed: int | None = None,
    test_size: int | None = None,
    probe_images: int = DEFAULT_PROBE_IMAGES,
    test_images: int = DEFAULT_TEST_IMAGES,
    depth_probe_images: int = DEPTH_PROBE_IMAGES,
    cka_images: int = CKA_IMAGES,
    fig6_images: int = FIG6_IMAGES,
    knn: bool = True,
    progress: bool = True,
    use_cache: bool = True,
    allow_overlap: bool = False,
    background: str = "study",
) -> dict:
    """Several checkpoints side by side; writes into ``out_dir``:

    table2.md/.json, fig5_similarity_vs_distance.png/.json (all pairs), fig5_by_class.png/.json
    (same-/different-class pairs), fig6_reference_patches.png/.json, fig6_stretched.png/.json,
    depth_curves.png/.json, cka.png/.json, summary.md, summary.json. Returns the summary dict.

    ``dataset``, ``split_seed`` and ``test_size`` default to the first checkpoint's lineage (see
    ``probe_checkpoint``); an evaluation set any checkpoint's lineage trained on is refused unless
    ``allow_overlap``, which writes the warning into every output file.

    Each checkpoint's test images are embedded once at every block (``layers="all"``; the last block is
    the final-LayerNorm output) and reused for everything; the pool images are embedded once at the final
    block (probe + kNN) and ``depth_probe_images`` of them at every block (the cheaper per-block probe).
    Every registered diagnostic is measured at the final block, and each per-block one at every block.
    """
    names = _check_names(ckpts, names)
    for value, what in (
        (depth_probe_images, "depth_probe_images"),
        (cka_images, "cka_images"),
        (fig6_images, "fig6_images"),
    ):
        check_positive_int(value, what)
    opts = _Options(
        probe_images,
        test_images,
        depth_probe_images,
        cka_images,
        fig6_images,
        switched_off(knn=knn),
        background,
        dict(progress=progress, use_cache=use_cache),
    )
    out = Path(out_dir)
    started = time.perf_counter()
    encoders: list[tuple[ViNy, dict]] = [load_encoder(c) for c in ckpts]  # every file checked before any work
    metas = [(name, meta) for name, (_, meta) in zip(names, encoders, strict=True)]
    where = resolve_evaluation(metas, dataset, split_seed, test_size)
    got = _Collected()
    for (encoder, meta), name, path in zip(encoders, names, ckpts, strict=True):
        size = encoder.cfg.image_size
        if size not in got.data:
            got.data[size] = load_probe_data(
                where["dataset"],
                size,
                data_root,
                where["split_seed"],
                where["test_size"],
                probe_images,
                test_images,
            )
            got.data[size][2]["chosen"] = where["notes"]
            got.warnings += guard_evaluation(metas, where["dataset"], got.data[size][1].ids, allow_overlap)
        _measure_checkpoint(got, encoder, meta, name, path, where, opts)

    out.mkdir(parents=True, exist_ok=True)
    matrices = _cka(got, names)
    files = _write_figures(got, matrices, out, opts)
    summary = _summary(got, matrices, files, opts, started)
    (out / "table2.md").write_text(table2_markdown(summary["table2"]))
    write_json(out / "table2.json", jsonable(table2_json(summary["table2"])))
    write_json(out / "summary.json", jsonable(summary))
    (out / "summary.md").write_text(summary_markdown(summary))
    written = [out / "summary.json", out / "summary.md", out / "table2.json"]
    for name in files.values():
        written += [out / name, (out / name).with_suffix(".json")]
    stamp_warnings(written, got.warnings)
    summary["out_dir"] = str(out)
    return summary
