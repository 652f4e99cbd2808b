"""The library behind ``viny probe``: Table 2 for one checkpoint, at one or several blocks."""

from __future__ import annotations

from pathlib import Path

from viny_probe.analysis.diagnostics import PROBE_SEED
from viny_probe.analysis.embeddings import (
    LayerSpec,
    extract_patch_tokens,
    layer_label,
    load_encoder,
    parse_layers,
)
from viny_probe.analysis.evaluation_data import (
    DEFAULT_PROBE_IMAGES,
    DEFAULT_TEST_IMAGES,
    load_probe_data,
    patch_labels,
    resolve_evaluation,
)
from viny_probe.analysis.lineage import guard_evaluation
from viny_probe.analysis.registry import LayerTokens, measure_layer, settings, switched_off


def probe_checkpoint(
    ckpt: str | Path,
    dataset: str | None = None,
    data_root: str | Path | None = None,
    layer: LayerSpec = "final",
    split_seed: int | None = None,
    test_size: int | None = None,
    probe_images: int = DEFAULT_PROBE_IMAGES,
    test_images: int = DEFAULT_TEST_IMAGES,
    knn: bool = True,
    progress: bool = True,
    use_cache: bool = True,
    allow_overlap: bool = False,
) -> dict:
    """Table 2 for one checkpoint, at one or several blocks.

    ``dataset``, ``split_seed`` and ``test_size`` default to the checkpoint's lineage (its own trimap
    stage's split, so it is scored on that stage's held-out test set); an evaluation set that shares
    images with any stage's training images is refused unless ``allow_overlap`` (then ``warnings``
    says so).

    Returns ``{"checkpoint", "regime", "model_config", "data": {...}, "layers": {name: metrics},
    "warnings": [...]}`` where the layer names are ``"final"`` or ``"block B"`` and ``metrics`` holds
    every registered diagnostic's result (``registry.measure_layer``). Raises VinyError for an
    unreadable / foreign checkpoint, a layer out of range or a dataset without trimaps (all checked
    before the data is loaded, except a ``folder`` that turns out to have none).
    """
    encoder, meta = load_encoder(ckpt)
    layers = parse_layers(layer, encoder.cfg.depth)
    where = resolve_evaluation([(str(ckpt), meta)], dataset, split_seed, test_size)
    cfg = encoder.cfg
    train_set, test_set, info = load_probe_data(
        where["dataset"],
        cfg.image_size,
        data_root,
        where["split_seed"],
        where["test_size"],
        probe_images,
        test_images,
    )
    info["chosen"] = where["notes"]
    warnings = guard_evaluation([(str(ckpt), meta)], where["dataset"], test_set.ids, allow_overlap)
    extract = dict(progress=progress, use_cache=use_cache)
    tag = f"seed{where['split_seed']}-t{where['test_size']}"
    train_tokens = extract_patch_tokens(encoder, train_set, layers, split=f"pool-{tag}", **extract)
    test_tokens = extract_patch_tokens(encoder, test_set, layers, split=f"test-{tag}", **extract)
    train_labels, test_labels = (
        patch_labels(train_set, cfg.patch_size),
        patch_labels(test_set, cfg.patch_size),
    )
    info["probe_patches"], info["test_patches"] = train_labels.numel(), test_labels.numel()
    off = switched_off(knn=knn)
    results = {
        layer_label(label): measure_layer(
            LayerTokens(test_tokens[label], test_labels, train_tokens[label], train_labels, PROBE_SEED), off
        )
        for label in train_tokens
    }
    return {
        "checkpoint": str(ckpt),
        "regime": meta.get("regime"),
        "model_config": cfg.to_dict(),
        "data": info,
        "knn_settings": settings(off).get("knn"),
        "layers": results,
        "warnings": warnings,
    }
