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
    TokenKey,
    check_device,
    extract_patch_tokens,
    layer_label,
    parse_layers,
)
from viny_probe.analysis.eval_protocol import evaluation_sets, protocol_knn, protocol_model
from viny_probe.analysis.evaluation_data import (
    patch_labels,
    patch_subsample,
    resolve_evaluation,
    subsample_note,
)
from viny_probe.analysis.options import EvalSet, ModelOptions, ProbeOptions
from viny_probe.analysis.registry import LayerTokens, measure_layer, settings, switched_off
from viny_probe.analysis.sources import TokenModel, load_with, with_heads

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
    model: ModelOptions = ModelOptions(),
    data: EvalSet = EvalSet(),
    probe: ProbeOptions = ProbeOptions(),
    layer: LayerSpec = "final",
    progress: bool = True,
) -> dict:
    """Table 2 for one model, at one or several blocks.

    ``ckpt``: a viny checkpoint, ``timm:NAME``, ``hf:FOLDER``, ``py:MODULE:FUNCTION`` or a TokenModel,
    loaded and run with ``model`` (``ModelOptions``: weights, input size, normalisation, heads, device,
    batch size, token cache). Images and trimaps are loaded at the model's input size and labelled on
    its patch grid.

    ``data`` (``EvalSet``): ``dataset``, ``split_seed`` and ``test_size`` default to the checkpoint's
    lineage (its own trimap stage's split, so it is scored on that stage's held-out test set; a model
    from elsewhere: toy-pets, split seed 0); an evaluation set that shares images with any stage's
    training images is refused unless ``allow_overlap`` (then ``warnings`` says so). ``probe``
    (``ProbeOptions``): the linear probe's backend and whether kNN runs.

    Returns ``{"checkpoint", "regime", "model", "model_config", "data": {...}, "layers": {name:
    metrics}, "warnings": [...]}`` where the layer names are ``"final"`` or ``"block B"`` and
    ``metrics`` holds every registered diagnostic's result (``registry.measure_layer``); ``data``
    says whether the pool patches were subsampled (``probe_subsample``), how many layers were held
    at once and the tokens' storage dtype (``token_dtype``). Raises VinyError for an unreadable / foreign model, a layer out of range or a dataset
    without trimaps (all checked before the data is loaded, except a ``folder`` that turns out to have
    none).
    """
    check_device(model.device)  # before any model or data is loaded
    model = protocol_model(data.protocol, model)
    ckpt = with_heads(ckpt, model.heads)
    loaded = load_with(ckpt, model)
    name = loaded.source if isinstance(ckpt, TokenModel) else str(ckpt)
    layers = parse_layers(layer, loaded.depth)
    where = resolve_evaluation(
        [(name, loaded.meta)], data.dataset, data.split_seed, data.test_size, data.resize
    )
    train_set, test_set, info, warnings = evaluation_sets(
        data.for_grid(loaded.num_patches), [(name, loaded.meta)], where, loaded.image_size
    )
    info["chosen"] = where["notes"] + outside_note(name, loaded)
    names = test_set.mask_classes.names
    info["classes"] = list(names)
    keep = patch_subsample(len(train_set), loaded.num_patches, loaded.dim)
    train_labels = patch_labels(train_set, loaded.patch_size, keep)
    test_labels = patch_labels(test_set, loaded.patch_size)
    info["probe_patches"], info["test_patches"] = train_labels.numel(), test_labels.numel()
    info["probe_subsample"] = subsample_note(keep, loaded.num_patches)
    groups = layer_groups(layers, loaded.depth, test_labels.numel() * loaded.dim)
    info["layers_at_once"] = "all" if len(groups) == 1 else 1
    info["token_dtype"] = model.token_dtype
    extract = model.extraction(progress)
    tag = f"seed{where['split_seed']}-t{where['test_size']}" + ("" if data.protocol == "viny" else "-authors")
    off = switched_off(knn=protocol_knn(data.protocol, probe.knn))
    results = {}
    for i, group in enumerate(groups):
        train_tokens = extract_patch_tokens(
            loaded, train_set, group, key=TokenKey(f"pool-{tag}", keep), **extract
        )
        test_tokens = extract_patch_tokens(loaded, test_set, group, key=TokenKey(f"test-{tag}"), **extract)
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
                probe_backend=probe.backend,
            )
            results[layer_label(label)] = measure_layer(tokens, off)
        del train_tokens, test_tokens
    return {
        "checkpoint": name,
        "regime": loaded.meta.get("regime"),
        "model": model_summary(loaded),
        "model_config": loaded.config,
        "data": info,
        "knn_settings": settings(off).get("knn"),
        "layers": results,
        "warnings": warnings,
    }
