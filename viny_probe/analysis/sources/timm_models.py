"""``timm:NAME[.TAG][,KEY=VALUE...]``: ``timm.create_model(NAME, pretrained=True, **options)``: timm's
own pretrained weights for that tag (``vit_small_patch16_224.dino``), read through timm's loading from
the Hugging Face cache (``HF_HUB_CACHE``, honouring ``HF_HUB_OFFLINE``); ``--weights FILE`` (or
``weights=FILE``) gives a safetensors file or a torch state_dict instead, loaded strictly; random init
(torch seed 0) only when asked for with ``pretrained=false``, and the notes say so. ``--img-size`` is timm's ``img_size=``. Prefix tokens are the model's
``num_prefix_tokens``; mean/std come from its pretrained config (``timm.data.resolve_data_config``);
the input size is the one the model is built for (``patch_embed.img_size``). Tokens are read with
forward hooks on ``model.blocks``; the last block's entry is ``forward_features`` (after the final norm).
The model's fingerprint (the token cache's key) holds its pretrained_cfg and the timm version; its
arguments are in ``config["kwargs"]``.
"""

from __future__ import annotations

import difflib
import json
import math
import warnings
from pathlib import Path

import torch

from viny_probe.analysis.sources.base import (
    ModelSource,
    ModelSpec,
    SourceOptions,
    TokenModel,
    read_state_dict,
    register_source,
    require,
    square,
)
from viny_probe.checkpoint import load_state_strict
from viny_probe.errors import VinyError, VinyWarning

INIT_SEED = (
    0  # a model without --weights is random-initialised with this torch seed: same string, same weights
)


def _pretrained_cfg(timm, name: str, what: str):
    """timm's pretrained config of ``name`` (with its tag); a VinyError when timm has no weights for it."""
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name.split(".")[0]):
        return None  # create_model names the unknown model, with close matches
    try:
        cfg = get_pretrained_cfg(name)
    except (RuntimeError, KeyError, ValueError):
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        base = name.split(".")[0]
        tags = timm.list_models(base, pretrained=True)[:6]
        hint = f"; its pretrained tags: {', '.join(tags)}" if tags else ""
        raise VinyError(
            f"{what}: timm has no pretrained weights named {name!r}{hint}. Give --weights FILE, or add "
            "',pretrained=false' for a random network (said so in every output)"
        )
    return cfg


def _where_cached(cfg) -> str:
    """``hub id@revision`` of the weights timm read from the Hugging Face cache (or the URL / file)."""
    if cfg.hf_hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_model.safetensors"):
                found = try_to_load_from_cache(cfg.hf_hub_id, filename)
                if isinstance(found, str):
                    return f"hf hub {cfg.hf_hub_id}@{Path(found).parent.name} ({filename})"
        except ImportError:
            pass
        return f"hf hub {cfg.hf_hub_id}"
    return str(cfg.url or cfg.file)


def _offline_message(name: str, cfg, what: str, err: BaseException) -> str:
    import os

    cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )
    where = f"Hugging Face repo {cfg.hf_hub_id}" if cfg.hf_hub_id else str(cfg.url or cfg.file)
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") else ""
    return (
        f"{what}: its pretrained weights ({where}) are not in the cache {cache} and could not be "
        f"fetched{offline} ({type(err).__name__}); fill that cache on a machine with network access "
        f"(python -c \"import timm; timm.create_model('{name}', pretrained=True)\") and copy it here, or "
        "give --weights FILE"
    )


def _create(timm, name: str, kwargs: dict, what: str, pretrained: bool = False):
    cfg = _pretrained_cfg(timm, name, what) if pretrained else None
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, ConnectionError) as e:  # huggingface_hub's offline / not-cached errors are OSErrors
        if cfg is None:
            raise
        raise VinyError(_offline_message(name, cfg, what, e)) from None
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
    pretrained = kwargs.pop("pretrained", None)
    if pretrained is not None and not isinstance(pretrained, bool):
        raise VinyError(f"{what}: pretrained= must be true or false, got {pretrained!r}")
    if pretrained and weights is not None:
        raise VinyError(f"{what}: pretrained=true and a weights file both name weights; choose one")
    kwargs["pretrained"] = weights is None if pretrained is None else pretrained
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
    pretrained = kwargs.pop("pretrained")
    model = _create(timm, spec.target, kwargs, what, pretrained)
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
    resampled = None
    if weights is not None:
        resampled = _load_weights(model, weights, what)
    data = resolve_data_config({}, model=model)
    dim = int(getattr(model, "embed_dim", None) or model.num_features)
    notes = [
        f"input {image_size} px: "
        + ("--img-size / img_size=" if "img_size" in kwargs else "the model's own"),
        "mean/std: the model's pretrained config (timm resolve_data_config)",
        f"{prefix} prefix token(s) dropped: timm's num_prefix_tokens",
        _weights_note(model, weights, pretrained),
    ]
    if resampled:
        notes.append(resampled)
        warnings.warn(f"{what}: {resampled}", VinyWarning, stacklevel=2)
    config = {
        "source": "timm",
        "model": spec.target,
        "kwargs": kwargs,
        "weights": notes[-1].removeprefix("weights: "),
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
        fingerprint={
            "pretrained_cfg": json.loads(json.dumps(getattr(model, "pretrained_cfg", None), default=str)),
            "timm": timm.__version__,
        },
        weights_from=None if weights is None else str(weights),
    )


def _load_weights(model, weights, what: str) -> str | None:
    """Load the ``weights`` file strictly, except that a ``pos_embed`` saved for another patch grid (224-px
    weights at ``--img-size 112``) is resampled to the model's grid with timm's own
    ``resample_abs_pos_embed`` (bicubic over the grid, prefix tokens kept), as timm does for its
    pretrained weights. Returns the note saying so, or None when nothing was resampled."""
    state = read_state_dict(weights, what)
    note = None
    own = getattr(model, "pos_embed", None)
    saved = state.get("pos_embed")
    if (
        isinstance(own, torch.Tensor)
        and isinstance(saved, torch.Tensor)
        and saved.ndim == own.ndim == 3
        and saved.shape != own.shape
        and saved.shape[0] == own.shape[0]
        and saved.shape[2] == own.shape[2]
    ):
        new_grid = square(tuple(model.patch_embed.grid_size), what, "patch grid")
        prefix = own.shape[1] - new_grid * new_grid  # prefix tokens with a position (0 with no_embed_class)
        old_grid = math.isqrt(max(saved.shape[1] - prefix, 0))
        if prefix >= 0 and old_grid > 0 and old_grid * old_grid + prefix == saved.shape[1]:
            from timm.layers import resample_abs_pos_embed

            state = dict(state)
            state["pos_embed"] = resample_abs_pos_embed(
                saved.float(), [new_grid, new_grid], [old_grid, old_grid], num_prefix_tokens=prefix
            ).to(saved.dtype)
            note = (
                f"pos_embed resampled from the weights' {old_grid} x {old_grid} grid to {new_grid} x "
                f"{new_grid} (bicubic, {prefix} prefix position(s) kept; timm resample_abs_pos_embed)"
            )
    load_state_strict(model, state, f"{what}: weights file {Path(weights).expanduser()}")
    return note


def _weights_note(model, weights, pretrained: bool) -> str:
    if weights is not None:
        return f"weights: {weights}"
    if pretrained:
        cfg = model.pretrained_cfg
        tag = cfg.get("tag") if isinstance(cfg, dict) else None
        from types import SimpleNamespace

        ns = SimpleNamespace(**{k: cfg.get(k) for k in ("hf_hub_id", "url", "file")})
        return f"weights: timm pretrained{' tag ' + tag if tag else ''}, {_where_cached(ns)}"
    return f"weights: RANDOM INIT (torch seed {INIT_SEED}; pretrained=false), not trained weights"


register_source(
    ModelSource(
        "timm",
        load,
        "a timm model by name with its pretrained weights (NAME.TAG, from the Hugging Face cache), "
        "--weights FILE (safetensors or a torch state_dict), or pretrained=false for random init",
        "timm:vit_small_patch16_224.augreg_in21k",
        extra="timm",
    )
)
