"""``timm:NAME[,KEY=VALUE...]``: ``timm.create_model(NAME, pretrained=False, **options)``, random-init
with torch seed 0 unless ``--weights FILE`` (or ``weights=FILE``) gives a safetensors file or a torch
state_dict, loaded strictly. ``--img-size`` is timm's ``img_size=``. Prefix tokens are the model's
``num_prefix_tokens``; mean/std come from its pretrained config (``timm.data.resolve_data_config``);
the input size is the one the model is built for (``patch_embed.img_size``). Tokens are read with
forward hooks on ``model.blocks``; the last block's entry is ``forward_features`` (after the final norm).
"""

from __future__ import annotations

import difflib
from pathlib import Path

import torch

from viny_probe.analysis.sources.base import (
    ModelSource,
    ModelSpec,
    SourceOptions,
    TokenModel,
    load_weights_strict,
    register_source,
    require,
    square,
)
from viny_probe.errors import VinyError

INIT_SEED = (
    0  # a model without --weights is random-initialised with this torch seed: same string, same weights
)


def _create(timm, name: str, kwargs: dict, what: str):
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            return timm.create_model(name, pretrained=False, **kwargs)
    except RuntimeError as e:
        if "Unknown model" not in str(e):
            raise VinyError(f"{what}: timm could not build it ({str(e).splitlines()[0][:200]})") from None
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; `timm.list_models('vit_*')` lists them"
        raise VinyError(f"{what}: timm has no model named {name!r}{hint}") from None
    except TypeError as e:
        bad = [k for k in kwargs if f"'{k}'" in str(e)]
        if bad:
            raise VinyError(
                f"{what}: this model does not take {', '.join(f'{k}=' for k in bad)}"
                + (" (no --img-size for it: it has no patch grid to resize)" if "img_size" in bad else "")
            ) from None
        raise VinyError(f"{what}: timm could not build it ({str(e).splitlines()[0][:200]})") from None
    except (ValueError, AssertionError) as e:
        raise VinyError(f"{what}: timm could not build it with {kwargs} ({str(e)[:200]})") from None


def _options(spec: ModelSpec, options: SourceOptions, what: str) -> tuple[dict, str | Path | None]:
    kwargs = dict(spec.options)
    weights = kwargs.pop("weights", None)
    if weights is not None and options.weights is not None and str(weights) != str(options.weights):
        raise VinyError(
            f"{what}: weights given twice ({weights} in the string, {options.weights} by --weights)"
        )
    weights = weights if weights is not None else options.weights
    if options.image_size is not None:
        if kwargs.get("img_size", options.image_size) != options.image_size:
            raise VinyError(
                f"{what}: img_size={kwargs['img_size']} in the string but --img-size {options.image_size}"
            )
        kwargs["img_size"] = options.image_size
    return kwargs, weights


def load(spec: ModelSpec, options: SourceOptions) -> TokenModel:
    timm = require("timm", "timm", "timm")
    from timm.data import resolve_data_config

    what = spec.text or f"timm:{spec.target}"
    kwargs, weights = _options(spec, options, what)
    model = _create(timm, spec.target, kwargs, what)
    patch_embed, blocks = getattr(model, "patch_embed", None), getattr(model, "blocks", None)
    if (
        patch_embed is None
        or not isinstance(blocks, torch.nn.Sequential | torch.nn.ModuleList)
        or not len(blocks)
    ):
        raise VinyError(
            f"{what}: {type(model).__name__} has no patch grid (no patch_embed and blocks): viny diagnoses "
            "vision transformers whose patch tokens form one g x g grid (timm's vit_*, deit_*, eva_* ...)"
        )
    prefix = getattr(model, "num_prefix_tokens", None)
    if not isinstance(prefix, int):
        raise VinyError(
            f"{what}: the model does not declare num_prefix_tokens; its prefix tokens are unknown"
        )
    image_size = square(getattr(patch_embed, "img_size", None), what, "input size")
    patch_size = square(getattr(patch_embed, "patch_size", None), what, "patch size")
    if weights is not None:
        load_weights_strict(model, weights, what)
    data = resolve_data_config({}, model=model)
    dim = int(getattr(model, "embed_dim", None) or model.num_features)
    notes = [
        f"input {image_size} px: "
        + ("--img-size / img_size=" if "img_size" in kwargs else "the model's own"),
        "mean/std: the model's pretrained config (timm resolve_data_config)",
        f"{prefix} prefix token(s) dropped: timm's num_prefix_tokens",
        f"weights: {weights}"
        if weights is not None
        else f"weights: random init (torch seed {INIT_SEED}), no --weights",
    ]
    config = {
        "source": "timm",
        "model": spec.target,
        "kwargs": kwargs,
        "weights": None if weights is None else str(weights),
        "depth": len(blocks),
        "dim": dim,
        "patch_size": patch_size,
        "image_size": image_size,
        "prefix_tokens": prefix,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    return TokenModel.from_blocks(
        model.eval(),
        list(blocks),
        model.forward_features,
        prefix_tokens=prefix,
        dim=dim,
        patch_size=patch_size,
        image_size=image_size,
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        source=what,
        config=config,
        notes=notes,
        weights_from=None if weights is None else str(weights),
    )


register_source(
    ModelSource(
        "timm",
        load,
        "a timm model by name, random-init or with --weights FILE (safetensors or a torch state_dict)",
        "timm:vit_small_patch16_224",
        extra="timm",
    )
)
