"""The library behind ``viny probe``: Table 2 for one model, at one or several blocks.

The model is anything ``sources.load_model`` reads: a viny checkpoint (or the authors' state_dict),
``timm:NAME``, ``hf:FOLDER`` or ``py:MODULE:FUNCTION``; its patch grid, depth and width are its own.
Memory stays bounded on big grids and wide tokens: the probe's pool tokens are a fixed seeded per-image
patch subsample when all of them would exceed ``PROBE_MAX_VALUES`` (``evaluation_data``), and several
layers whose test tokens together would exceed ``LAYERS_MAX_VALUES`` are extracted and measured one
at a time (the same numbers, more passes). Both are written into the result.
"""

from __future__ import annotations

from pathlib import Path

from viny_probe.analysis.diagnostics import PROBE_SEED
from viny_probe.analysis.embeddings import (
    LayerSpec,
    check_device,
    extract_patch_tokens,
    layer_label,
    parse_layers,
)
from viny_probe.analysis.eval_protocol import evaluation_sets, protocol_inputs, protocol_knn
from viny_probe.analysis.evaluation_data import (
    DEFAULT_PROBE_IMAGES,
    DEFAULT_TEST_IMAGES,
    patch_labels,
    patch_subsample,
    resolve_evaluation,
    subsample_note,
)
from viny_probe.analysis.registry import LayerTokens, measure_layer, settings, switched_off
from viny_probe.analysis.sources import TokenModel, load_model

# Test tokens of several layers held at once: at most ViNy's `--layer all` at the defaults
# (1,000 images x 64 patches x 128 channels x 12 blocks = 98M values, 393 MB float32).
LAYERS_MAX_VALUES = 1000 * 64 * 128 * 12


def model_summary(model: TokenModel) -> dict:
    """What the outputs say about a model: where it came from, its grid, and where its settings came from."""
    return {
        "source": model.source,
        "name": model.name,
        "weights": model.weights(),
        "image_size": model.image_size,
        "patch_size": model.patch_size,
        "grid": [model.grid, model.grid],
        "depth": model.depth,
        "dim": model.dim,
        "prefix_tokens": model.prefix_tokens,
        "mean": list(model.mean),
        "std": list(model.std),
        "notes": list(model.notes),
    }


def outside_note(name: str, model: TokenModel) -> list[str]:
    """A model from outside viny records no training images: say that overlap is not checked."""
    if model.meta:
        return []
    return [
        f"{name}: a model from outside viny records no training images; overlap with the evaluation set is not checked"
    ]


def layer_groups(layers: str | list[int], depth: int, test_values: int) -> list[str | list[int]]:
    """``layers`` as one group, or one group per layer when their test tokens together would exceed
    ``LAYERS_MAX_VALUES`` (``test_values``: the values of one layer's test tokens)."""
    blocks = list(range(1, depth + 1)) if layers == "all" else layers
    if isinstance(blocks, str) or len(blocks) * test_values <= LAYERS_MAX_VALUES:
        return [layers]
    return [[b] for b in blocks]


def probe_checkpoint(
    ckpt: str | Path | TokenModel,
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
    *,
    weights: str | Path | None = None,
    img_size: int | None = None,
    mean=None,
    std=None,
    device: str | None = None,
    batch_size: int = 64,
    eval_protocol: str = "viny",
) -> dict:
    """Table 2 for one model, at one or several blocks.

    ``ckpt``: a viny checkpoint, ``timm:NAME``, ``hf:FOLDER``, ``py:MODULE:FUNCTION`` or a TokenModel;
    ``weights`` / ``img_size`` / ``mean`` / ``std`` as in ``sources.load_model``; ``device``
    (cpu | cuda | auto) and ``batch_size`` for the extraction. Images and trimaps are loaded at the
    model's input size and labelled on its patch grid.

    ``dataset``, ``split_seed`` and ``test_size`` default to the checkpoint's lineage (its own trimap
    stage's split, so it is scored on that stage's held-out test set; a model from elsewhere: toy-pets,
    split seed 0); an evaluation set that shares images with any stage's training images is refused
    unless ``allow_overlap`` (then ``warnings`` says so).

    ``eval_protocol``: ``viny`` (the above) or ``authors``, the study's code's protocol
    (``eval_protocol``: its first 2,048 training images, raw and augmented, probe scored on the images
    it was fitted on; labelled in ``warnings``).

    Returns ``{"checkpoint", "regime", "model", "model_config", "data": {...}, "layers": {name:
    metrics}, "warnings": [...]}`` where the layer names are ``"final"`` or ``"block B"`` and
    ``metrics`` holds every registered diagnostic's result (``registry.measure_layer``); ``data``
    says whether the pool patches were subsampled (``probe_subsample``) and how many layers were held
    at once. Raises VinyError for an unreadable / foreign model, a layer out of range or a dataset
    without trimaps (all checked before the data is loaded, except a ``folder`` that turns out to have
    none).
    """
    check_device(device)  # before any model or data is loaded
    mean, std = protocol_inputs(eval_protocol, mean, std)
    model = load_model(ckpt, weights=weights, image_size=img_size, mean=mean, std=std)
    name = model.source if isinstance(ckpt, TokenModel) else str(ckpt)
    layers = parse_layers(layer, model.depth)
    where = resolve_evaluation([(name, model.meta)], dataset, split_seed, test_size)
    train_set, test_set, info, warnings = evaluation_sets(
        eval_protocol,
        [(name, model.meta)],
        where,
        model.image_size,
        data_root,
        probe_images,
        test_images,
        allow_overlap,
    )
    info["chosen"] = where["notes"] + outside_note(name, model)
    names = test_set.mask_classes.names
    info["classes"] = list(names)
    keep = patch_subsample(len(train_set), model.num_patches, model.dim)
    train_labels = patch_labels(train_set, model.patch_size, keep)
    test_labels = patch_labels(test_set, model.patch_size)
    info["probe_patches"], info["test_patches"] = train_labels.numel(), test_labels.numel()
    info["probe_subsample"] = subsample_note(keep, model.num_patches)
    groups = layer_groups(layers, model.depth, test_labels.numel() * model.dim)
    info["layers_at_once"] = "all" if len(groups) == 1 else 1
    extract = dict(progress=progress, use_cache=use_cache, device=device, batch_size=batch_size)
    tag = f"seed{where['split_seed']}-t{where['test_size']}" + ("" if eval_protocol == "viny" else "-authors")
    off = switched_off(knn=protocol_knn(eval_protocol, knn))
    results = {}
    for i, group in enumerate(groups):
        train_tokens = extract_patch_tokens(
            model, train_set, group, split=f"pool-{tag}", patches=keep, **extract
        )
        test_tokens = extract_patch_tokens(model, test_set, group, split=f"test-{tag}", **extract)
        if i == len(groups) - 1:  # the pixels are done with: free them before the diagnostics' copies
            train_set = test_set = None
        for label in train_tokens:
            tokens = LayerTokens(
                test_tokens[label],
                test_labels,
                train_tokens[label],
                train_labels,
                PROBE_SEED,
                class_names=names,
            )
            results[layer_label(label)] = measure_layer(tokens, off)
        del train_tokens, test_tokens
    return {
        "checkpoint": name,
        "regime": model.meta.get("regime"),
        "model": model_summary(model),
        "model_config": model.config,
        "data": info,
        "knn_settings": settings(off).get("knn"),
        "layers": results,
        "warnings": warnings,
    }
