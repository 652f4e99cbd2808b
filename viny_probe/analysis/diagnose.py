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
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from viny_probe.analysis.checkpoint_probe import model_summary, outside_note
from viny_probe.analysis.cka import cka_matrix
from viny_probe.analysis.diagnostics import PROBE_SEED
from viny_probe.analysis.distance import similarity_vs_distance_by_class
from viny_probe.analysis.embeddings import TokenKey, check_device, extract_patch_tokens
from viny_probe.analysis.eval_protocol import AUTHORS_LABEL, evaluation_sets, protocol_knn, protocol_model
from viny_probe.analysis.evaluation_data import (
    patch_labels,
    patch_subsample,
    resolve_evaluation,
    subsample_note,
)
from viny_probe.analysis.explore import explorer_size, model_entry, page_data, write_page
from viny_probe.analysis.options import DiagnoseOptions, EvalSet, ModelOptions, ProbeOptions
from viny_probe.analysis.pca import pca_rgb
from viny_probe.analysis.plots import (
    plot_cka_panels,
    plot_depth_curves,
    plot_pca_rgb,
    plot_reference_grid,
    plot_reference_grid_stretched,
    plot_reference_panel,
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
from viny_probe.analysis.sources import TokenModel, load_with, parse_model_spec, with_heads
from viny_probe.analysis.stamp import stamp_footer, stamp_warnings
from viny_probe.checkpoint import jsonable, write_json
from viny_probe.checks import check_positive_int
from viny_probe.data.base import ImageSet
from viny_probe.errors import VinyError

# The per-block probe is fitted on fewer pool images; CKA uses the first test images only (the
# defaults' one home: analysis.options.DiagnoseOptions).
DEPTH_PROBE_IMAGES = DiagnoseOptions.depth_probe_images
PCA_IMAGES = 4  # test images in pca_rgb.png (the components are fitted over all test images)
EXPLORER_IMAGES = 8  # test images in explorer.html (every block of every model)
EXPLORER_MAX_BYTES = 32_000_000  # a larger page is left out, with a note naming `viny explore`
CKA_IMAGES = DiagnoseOptions.cka_images
FIG6_IMAGES = DiagnoseOptions.fig6_images
# Memory bounds of the per-block pass, each what ViNy needs at the defaults (so ViNy is never cut):
# the test tokens of every block (1,000 images x 64 patches x 128 channels x 12 blocks = 98M values,
# 393 MB float32; a bigger model measures its per-block curves on fewer test images), the per-block
# probe's pool tokens (250 x 64 x 128 per block; a seeded patch subsample beyond) and the CKA features
# kept per model (250 x 64 x 128 x 12; a seeded patch subsample beyond, the same for every model of a grid).
DEPTH_MAX_VALUES = 1000 * 64 * 128 * 12
DEPTH_PROBE_MAX_VALUES = 250 * 64 * 128
CKA_MAX_VALUES = 250 * 64 * 128 * 12


def default_names(ckpts: Sequence[str | Path]) -> list[str]:
    """``runs/sim/final.pt`` -> ``sim``; ``timm:vit_small_patch16_224`` -> ``vit_small_patch16_224``;
    ``hf:models/dino`` -> ``dino``; a clash gets a number."""
    from viny_probe.analysis.sources.base import default_name

    names = []
    for c in ckpts:
        name = (c.name if isinstance(c, TokenModel) else default_name(str(c))) or str(c)
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _fig6_images(labels: torch.Tensor, count: int, num_classes: int = 3) -> list[int]:
    """Test images that show the most classes (trimaps: all three), the most balanced first (the
    smallest class's patch count, then the image with the lowest index)."""
    counts = torch.stack([(labels == c).sum(dim=1) for c in range(num_classes)], dim=1)  # (N, K)
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
    probe_backend: str
    cka_keep: dict = field(default_factory=dict)  # patches -> (CKA test images, patch subsample or None)


@dataclass
class _Collected:
    """What diagnose gathers checkpoint by checkpoint, before it writes anything."""

    data: dict[int, tuple[ImageSet, ImageSet, dict]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    finals: dict[str, dict] = field(default_factory=dict)
    curves: dict[str, dict] = field(default_factory=dict)
    per_block: dict[str, dict[str, list]] = field(default_factory=dict)
    memory: dict[str, dict] = field(default_factory=dict)
    cka_feats: list[list[torch.Tensor]] = field(default_factory=list)
    fig6_info: list[dict] = field(default_factory=list)
    fig6_refs: dict[str, tuple[int, int]] = field(default_factory=dict)
    fig6_map_refs: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    fig6_pictures: dict[str, torch.Tensor] = field(default_factory=dict)
    fig6_targets: dict[int, torch.Tensor] = field(default_factory=dict)  # test index -> (H, W) trimap
    fig6_maps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    pca: dict[str, tuple[torch.Tensor, torch.Tensor, dict]] = field(default_factory=dict)
    explorer: list[dict] = field(default_factory=list)
    explorer_pictures: torch.Tensor | None = None


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


def _row(index: int, ref: str) -> str:
    return f"#{index} {ref.replace('_', ' ')}"


def _choose_fig6(got: _Collected, test_set: ImageSet, test_labels: torch.Tensor, opts: _Options, patch_size):
    """Fig 6's images and reference patches, chosen on the first model's trimaps and grid."""
    classes = test_set.mask_classes
    for index in _fig6_images(test_labels, min(opts.fig6_images, len(test_set)), classes.num_classes):
        refs = choose_reference_patches(
            test_set.masks[index], patch_size, background=opts.background, classes=classes
        )
        got.fig6_info.append(
            {"test_index": index, "id": test_set.ids[index], "refs": {k: list(v) for k, v in refs.items()}}
        )
        got.fig6_targets[index] = test_set.masks[index]
        for ref, rc in refs.items():
            got.fig6_refs[_row(index, ref)] = rc
            got.fig6_pictures[_row(index, ref)] = test_set.images[index]


def _fig6_maps(got: _Collected, name: str, final: torch.Tensor, test_set: ImageSet, model: TokenModel, opts):
    """Each model's maps of the Fig 6 references. A model on another grid gets the study's references
    chosen again on its own grid (from the same image's trimap at its input size)."""
    maps, refs = {}, {}
    for entry in got.fig6_info:
        index = entry["test_index"]
        chosen = {k: tuple(v) for k, v in entry["refs"].items()}
        if final.shape[1] != entry["patches"]:
            chosen = choose_reference_patches(
                test_set.masks[index],
                model.patch_size,
                background=opts.background,
                classes=test_set.mask_classes,
            )
        for ref, rc in chosen.items():
            maps[_row(index, ref)] = similarity_map(final[index], rc)
            refs[_row(index, ref)] = rc
    got.fig6_maps[name], got.fig6_map_refs[name] = maps, refs


def _depth_pool(model: TokenModel, train_set, n_depth: int, tag: str, opts) -> tuple:
    """The per-block probe's pool tokens at every block (a seeded patch subsample on big models)."""
    keep = patch_subsample(n_depth, model.num_patches, model.dim, DEPTH_PROBE_MAX_VALUES)
    subset = train_set.subset(list(range(n_depth)))
    tokens = extract_patch_tokens(model, subset, "all", key=TokenKey(f"pool-{tag}", keep), **opts.extract)
    return tokens, patch_labels(subset, model.patch_size, keep), keep


def _per_block(model: TokenModel, train_set, test_all, test_labels, final, opts, tag) -> tuple[dict, dict]:
    """Every per-block diagnostic at every block (``values[0]`` is None): label-free ones on the test
    tokens; those that fit a classifier on the first ``depth_probe_images`` pool images."""
    n_depth = min(opts.depth_probe_images, len(train_set))
    names = train_set.mask_classes.names
    train_blocks, train_labels, keep = None, None, None
    if any(d.needs_labels for d in registered() if d.per_block):
        train_blocks, train_labels, keep = _depth_pool(model, train_set, n_depth, tag, opts)
    curves: dict[str, list] = {d.curve: [None] for d in registered() if d.per_block}
    for b in range(1, model.depth + 1):
        train = None if train_blocks is None else train_blocks[b]
        layer = LayerTokens(
            test_all[b],
            test_labels,
            train,
            train_labels,
            PROBE_SEED,
            final=final,
            class_names=names,
            probe_backend=opts.probe_backend,
        )
        for curve, value in measure_block(layer, opts.off).items():
            curves[curve].append(value)
    return curves, {"depth_probe_subsample": subsample_note(keep, model.num_patches, DEPTH_PROBE_MAX_VALUES)}


def depth_image_count(model: TokenModel, test_images: int) -> int:
    """Test images the per-block pass measures: all of them, unless their tokens at every block would
    exceed ``DEPTH_MAX_VALUES`` (at least 2)."""
    return min(test_images, max(2, DEPTH_MAX_VALUES // (model.num_patches * model.dim * model.depth)))


def _plan_cka(models: Sequence[TokenModel], opts: _Options) -> None:
    """The CKA rows of each grid, the same for every model on it: the first n test images (n at most
    every such model's per-block image count) and, beyond ``CKA_MAX_VALUES``, a seeded patch subsample
    sized for the widest of them."""
    for patches in {m.num_patches for m in models}:
        same = [m for m in models if m.num_patches == patches]
        n = min([opts.cka_images] + [depth_image_count(m, opts.test_images) for m in same])
        widest = max(m.dim * m.depth for m in same)
        opts.cka_keep[patches] = (n, patch_subsample(n, patches, widest, CKA_MAX_VALUES))


def _test_tokens(model: TokenModel, test_set: ImageSet, tag: str, opts) -> tuple[dict, torch.Tensor, int]:
    """The test tokens at every block (of the first ``depth_images`` test images, all of them unless
    that exceeds ``DEPTH_MAX_VALUES``) and the final block of every test image."""
    n = len(test_set)
    depth_images = depth_image_count(model, n)
    split = TokenKey(f"test-{tag}")
    if depth_images == n:
        test_all = extract_patch_tokens(model, test_set, "all", key=split, **opts.extract)
        return test_all, test_all[model.depth], n
    final = extract_patch_tokens(model, test_set, "final", key=split, **opts.extract)["final"]
    subset = test_set.subset(list(range(depth_images)))
    return extract_patch_tokens(model, subset, "all", key=split, **opts.extract), final, depth_images


def _cka_features(test_all: dict, model: TokenModel, opts) -> list[torch.Tensor]:
    """Every block's tokens of the first ``cka_images`` test images, at the CKA patch subsample of
    this grid (the same rows for every model of the grid, so their features align)."""
    planned, keep = opts.cka_keep[model.num_patches]
    n = min(planned, len(test_all[1]))
    keep = None if keep is None else keep[:n]
    feats = []
    for b in range(1, model.depth + 1):
        x = test_all[b][:n]
        feats.append(x.clone() if keep is None else x.gather(1, keep[:, :, None].expand(-1, -1, x.shape[-1])))
    return feats


def _measure_checkpoint(got: _Collected, model: TokenModel, name: str, path: str, where: dict, opts):
    """One model: its test images embedded once at every block, its pool images at the final one;
    every registered diagnostic at the final block, the per-block ones at every block, Fig 5 and 6."""
    train_set, test_set, info = got.data[model.image_size]
    keep = patch_subsample(len(train_set), model.num_patches, model.dim)
    train_labels = patch_labels(train_set, model.patch_size, keep)
    test_labels = patch_labels(test_set, model.patch_size)
    info["probe_patches"], info["test_patches"] = train_labels.numel(), test_labels.numel()
    got.checkpoints.append(
        {
            "name": name,
            "path": path,
            "regime": model.meta.get("regime"),
            "model_config": model.config,
            "model": model_summary(model),
            "lineage": model.meta.get("lineage", []),
        }
    )
    tag = f"seed{where['split_seed']}-t{where['test_size']}"
    test_all, final, depth_images = _test_tokens(model, test_set, tag, opts)
    train_final = extract_patch_tokens(
        model, train_set, "final", key=TokenKey(f"pool-{tag}", keep), **opts.extract
    )
    layer = LayerTokens(
        final,
        test_labels,
        train_final["final"],
        train_labels,
        PROBE_SEED,
        class_names=test_set.mask_classes.names,
        probe_backend=opts.probe_backend,
    )
    got.finals[name] = measure_layer(layer, opts.off)
    del train_final, layer
    got.curves[name] = similarity_vs_distance_by_class(final, test_labels)
    if not got.fig6_info:
        _choose_fig6(got, test_set, test_labels, opts, model.patch_size)
        for entry in got.fig6_info:
            entry["patches"] = model.num_patches
    _fig6_maps(got, name, final, test_set, model, opts)
    got.per_block[name], memory = _per_block(
        model, train_set, test_all, test_labels[:depth_images], got.finals[name], opts, tag
    )
    got.cka_feats.append(_cka_features(test_all, model, opts))
    _pca_and_explorer(got, model, name, test_all, final, test_set, opts, tag)
    got.memory[name] = {
        "probe_subsample": subsample_note(keep, model.num_patches),
        **memory,
        "test_images": len(test_set),
        "depth_test_images": depth_images,
        "cka_patches_per_image": got.cka_feats[-1][0].shape[1],
        "cka_subsampled": got.cka_feats[-1][0].shape[1] < model.num_patches,
    }


def _pca_and_explorer(got: _Collected, model, name, test_all, final, test_set, opts, tag) -> None:
    """PCA-RGB colours of the final block (fitted over every test image) and this model's part of
    explorer.html (the first ``EXPLORER_IMAGES`` test images at every block, from the tokens at hand)."""
    colours, info = pca_rgb(final)
    shown = min(PCA_IMAGES, len(test_set))
    got.pca[name] = (test_set.images[:shown], colours[:shown], info)
    n = min(EXPLORER_IMAGES, len(test_set))
    if got.explorer is None or explorer_size([model], n, "all") > EXPLORER_MAX_BYTES:
        if got.explorer is not None:
            got.notes.append(
                f"explorer.html left out: {name}'s tokens at every block would pass "
                f"{EXPLORER_MAX_BYTES / 1e6:.0f} MB; `viny explore` with --layer makes a smaller page"
            )
        got.explorer = None
        return
    if len(test_all[1]) >= n:
        tokens = {b: test_all[b][:n] for b in range(1, model.depth + 1)}
    else:
        subset = test_set.subset(list(range(n)))
        tokens = extract_patch_tokens(model, subset, "all", key=TokenKey(f"test-{tag}"), **opts.extract)
    got.explorer.append(model_entry(model, tokens, test_set.masks[:n], name))
    if got.explorer_pictures is None:
        got.explorer_pictures = test_set.images[:n]


def _cka(got: _Collected, names: list[str]) -> list[dict]:
    matrices = []
    for a, b in _cka_pairs(len(names)):
        fa, fb = got.cka_feats[a][0], got.cka_feats[b][0]
        if fa.shape[:2] != fb.shape[:2]:
            got.notes.append(
                f"CKA {names[a]} vs {names[b]} skipped: their tokens do not describe the same patches "
                f"({_grid_text(got, a)} vs {_grid_text(got, b)}); CKA compares models on one grid"
            )
            continue
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


def _grid_text(got: _Collected, index: int) -> str:
    g = got.checkpoints[index]["model"]["grid"]
    return f"{g[0]} x {g[1]} grid, {len(got.cka_feats[index][0])} images"


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
    first = got.fig6_info[0]["test_index"]
    rows = [r for r in got.fig6_refs if r.startswith(f"#{first} ")]
    short = {r: r.split(" ", 1)[1] for r in rows}
    plot_reference_panel(
        got.fig6_pictures[rows[0]],
        got.fig6_targets[first],
        {c: {short[r]: m[r] for r in rows} for c, m in got.fig6_maps.items()},
        {short[r]: got.fig6_refs[r] for r in rows},
        out / "fig6_reference_patches.png",
        title=f"Fig 6: cosine similarity to the reference patch (red), test image {first}, colour range -0.5..1",
        map_refs={c: {short[r]: m[r] for r in rows} for c, m in got.fig6_map_refs.items()},
    )
    files["fig6"] = "fig6_reference_patches.png"
    plot_reference_grid(
        got.fig6_pictures,
        got.fig6_maps,
        got.fig6_refs,
        out / "fig6_images.png",
        title="Fig 6 over several images: cosine similarity to the reference patch (red), colour range -0.5..1",
        map_refs=got.fig6_map_refs,
    )
    files["fig6_images"] = "fig6_images.png"
    low = min(float(np.min(m)) for maps in got.fig6_maps.values() for m in maps.values())
    plot_reference_grid_stretched(
        got.fig6_pictures, got.fig6_maps, got.fig6_refs, out / "fig6_stretched.png", low, got.fig6_map_refs
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
    first = next(iter(got.pca.values()))
    plot_pca_rgb(
        first[0],
        {n: c for n, (_, c, _) in got.pca.items()},
        out / "pca_rgb.png",
        {n: i for n, (_, _, i) in got.pca.items()},
        title="PCA of the final block's patch tokens (fitted over all test images) as RGB",
    )
    files["pca_rgb"] = "pca_rgb.png"
    if got.explorer:
        n = len(got.explorer_pictures)
        where = f"the first {n} test images, as diagnosed"
        names = [f"test {i}" for i in range(n)]
        data = page_data(got.explorer, got.explorer_pictures, names, where, got.warnings)
        write_page(data, out / "explorer.html")
        files["explorer"] = "explorer.html"
    return files


def memory_notes(memory: dict[str, dict]) -> list[str]:
    """One line per model whose tokens were subsampled to bound memory (none for ViNy at the defaults)."""
    lines = []
    for name, m in memory.items():
        parts = []
        for key, what in (("probe_subsample", "probe and kNN"), ("depth_probe_subsample", "per-block probe")):
            if m.get(key):
                parts.append(
                    f"{what} fitted on {m[key]['patches_per_image']} of {m[key]['of_patches']} patches per pool image"
                )
        if m.get("depth_test_images") is not None and m.get("depth_test_images") < m.get("test_images", 0):
            parts.append(f"per-block curves on the first {m['depth_test_images']} test images")
        if m.get("cka_subsampled"):
            parts.append(f"CKA on {m['cka_patches_per_image']} patches per image")
        if parts:
            lines.append(f"{name} (memory bound, seeded): " + "; ".join(parts))
    return lines


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
        "memory": got.memory,
        "notes": got.notes + memory_notes(got.memory),
        "files": files,
        "warnings": got.warnings,
        "seconds": time.perf_counter() - started,
    }


def load_models(ckpts: Sequence, model: ModelOptions = ModelOptions()) -> list[TokenModel]:
    """Every model of ``ckpts`` loaded (``sources.load_with``; ``model.heads`` already applied):
    ``model.weights`` goes to the one timm: model, ``img_size`` to every model not from viny,
    ``mean`` / ``std`` to all."""
    specs = [None if isinstance(c, TokenModel) else parse_model_spec(c) for c in ckpts]
    timm = [i for i, spec in enumerate(specs) if spec is not None and spec.prefix == "timm"]
    if model.weights is not None and len(timm) != 1:
        raise VinyError(
            f"--weights names the weights of one timm: model, but {len(timm)} are given; put weights=FILE "
            "inside each timm: string instead (timm:NAME,weights=FILE)"
        )
    models = []
    for i, (c, spec) in enumerate(zip(ckpts, specs, strict=True)):
        own_size = spec is None or spec.prefix == "viny"
        options = model if i in timm else replace(model, weights=None)
        models.append(load_with(c, options, own_size))
    return models


def diagnose(
    ckpts: Sequence[str | Path | TokenModel],
    names: Sequence[str] | None = None,
    out_dir: str | Path = "viny-diagnose",
    model: ModelOptions = ModelOptions(),
    data: EvalSet = EvalSet(),
    probe: ProbeOptions = ProbeOptions(),
    figures: DiagnoseOptions = DiagnoseOptions(),
    progress: bool = True,
) -> dict:
    """Several models side by side; writes into ``out_dir``:

    table2.md/.json, fig5_similarity_vs_distance.png/.json (all pairs), fig5_by_class.png/.json
    (same-/different-class pairs), fig6_reference_patches.png/.json (the study's layout: one image, its target mask, references x
    encoders in its order), fig6_images.png/.json (several images), fig6_stretched.png/.json,
    depth_curves.png/.json, cka.png/.json, summary.md, summary.json. Returns the summary dict.

    ``data`` (``EvalSet``): ``dataset``, ``split_seed`` and ``test_size`` default to a split read off
    all the checkpoints' lineages that none of them trained on, whatever their order
    (``resolve_evaluation``); an evaluation set any checkpoint's lineage trained on is refused unless
    ``allow_overlap``, which writes the warning into every output file. ``probe`` (``ProbeOptions``):
    the linear probe's backend and whether kNN runs; ``figures`` (``DiagnoseOptions``): the per-block
    probe's pool images, CKA's and Fig 6's test images and Fig 6's background reference.

    ``ckpts``: viny checkpoints, ``timm:NAME``, ``hf:FOLDER``, ``py:MODULE:FUNCTION`` strings or
    TokenModels, each on its own grid and depth, loaded and run with ``model`` (``ModelOptions``):
    ``weights`` is the weights file of the one ``timm:`` model (several: ``weights=FILE`` inside each
    string), ``img_size`` the input size of every model not from viny (a viny checkpoint's is fixed),
    ``mean`` / ``std`` replace every model's own, ``heads`` applies to every model string; ``device``
    (cpu | cuda | auto), ``batch_size`` and ``use_cache`` for the extraction. Models on different grids
    get their own images (loaded at each input size), labels and reference patches; CKA compares only
    models on one grid and says which pairs it skipped (``notes``).

    Each model's test images are embedded once at every block (``layers="all"``; the last block is
    the final-norm output) and reused for everything; the pool images are embedded once at the final
    block (probe + kNN) and ``depth_probe_images`` of them at every block (the cheaper per-block probe).
    Every registered diagnostic is measured at the final block, and each per-block one at every block.
    On big models memory stays bounded by seeded subsamples (``DEPTH_MAX_VALUES`` and the others
    above), listed in ``memory`` and ``notes``.

    ``data.protocol="authors"`` measures everything on the study's code's images instead
    (``eval_protocol``: the first 2,048 images the models trained on, raw and augmented; "pool" and
    "test" images are then the same images) and writes ``eval_protocol.AUTHORS_LABEL`` into every output.
    """
    ckpts = [with_heads(c, model.heads) for c in ckpts]
    names = _check_names(ckpts, names)
    for value, what in (
        (figures.depth_probe_images, "depth_probe_images"),
        (figures.cka_images, "cka_images"),
        (figures.fig6_images, "fig6_images"),
    ):
        check_positive_int(value, what)
    opts = _Options(
        data.probe_images,
        data.test_images,
        figures.depth_probe_images,
        figures.cka_images,
        figures.fig6_images,
        switched_off(knn=protocol_knn(data.protocol, probe.knn)),
        figures.background,
        model.extraction(progress),
        probe.backend,
    )
    out = Path(out_dir)
    started = time.perf_counter()
    check_device(model.device)  # before any model or data is loaded
    model = protocol_model(data.protocol, model)
    models = load_models(ckpts, model)  # every model checked before any work
    metas = [(name, m.meta) for name, m in zip(names, models, strict=True)]
    opts.probe_images = data.pool_images(max(m.num_patches for m in models))  # the smallest pool
    where = resolve_evaluation(metas, data.dataset, data.split_seed, data.test_size, data.resize)
    _plan_cka(models, opts)
    got = _Collected()
    for loaded, name, given in zip(models, names, ckpts, strict=True):
        size = loaded.image_size
        if size not in got.data:
            *sets, warnings = evaluation_sets(data.for_grid(loaded.num_patches), metas, where, size)
            got.data[size] = tuple(sets)
            got.data[size][2]["token_dtype"] = model.token_dtype
            got.data[size][2]["chosen"] = where["notes"] + [
                line for name_, m in zip(names, models, strict=True) for line in outside_note(name_, m)
            ]
            got.warnings += [w for w in warnings if w not in got.warnings]
        path = given.source if isinstance(given, TokenModel) else str(given)
        _measure_checkpoint(got, loaded, name, path, where, opts)

    out.mkdir(parents=True, exist_ok=True)
    matrices = _cka(got, names)
    files = _write_figures(got, matrices, out, opts)
    summary = _summary(got, matrices, files, opts, started)
    summary["eval_protocol"] = data.protocol
    (out / "table2.md").write_text(table2_markdown(summary["table2"], model.token_dtype))
    write_json(out / "table2.json", jsonable(table2_json(summary["table2"], model.token_dtype)))
    write_json(out / "summary.json", jsonable(summary))
    (out / "summary.md").write_text(summary_markdown(summary))
    written = [out / "summary.json", out / "summary.md", out / "table2.json"]
    for name in files.values():
        written += [out / name, (out / name).with_suffix(".json")]
    stamp_warnings(written, got.warnings)
    protocol = [AUTHORS_LABEL] if data.protocol == "authors" else []
    stamp_footer(written, [f"{c['name']}: {c['model']['weights']}" for c in got.checkpoints] + protocol)
    summary["out_dir"] = str(out)
    return summary
