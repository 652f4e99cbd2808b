"""``hf:ORG/NAME[@REVISION]`` or ``hf:FOLDER``: a Hugging Face model by its hub id, read from the hub
cache (``HF_HUB_CACHE``; downloaded into it, configs and safetensors weights only, where the hub is
reachable and ``HF_HUB_OFFLINE`` is not set: ``huggingface_hub.snapshot_download``), or a local folder
in ``save_pretrained`` layout (config.json + weights). Either way the folder is then loaded with
``AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=False)``; the outputs name
the repo and the revision (the snapshot's commit), or the folder. For a model with a vision tower (CLIP, SigLIP) the tower is used. Tokens come from
``output_hidden_states=True``: block b < depth is ``hidden_states[b]``, block depth is
``last_hidden_state`` (after the final norm).

Prefix tokens are read off the config by model type (``PREFIX_TOKENS``: 1 CLS for ViT, CLS +
distillation for DeiT, CLS + ``num_register_tokens`` for DINOv2 with registers, none for SigLIP ...);
a type not in the table is refused rather than guessed. Input size and mean/std come from
``preprocessor_config.json`` when the folder has one (its crop size when it centre-crops), else the
config's ``image_size`` and ImageNet's mean/std; ``--img-size`` interpolates the position embeddings.

The model's fingerprint (the token cache's key) holds the sha256 of config.json and
preprocessor_config.json, and the transformers version: an edited config (activation, layer-norm eps)
with the same weights is another key.
No code from the folder runs, ever: a config.json with an ``auto_map`` (the folder's own Python classes)
is refused before transformers reads the folder, and every ``from_pretrained`` passes
``trust_remote_code=False``, so transformers never asks on standard input whether to run it.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import pickle
import re
from collections.abc import Callable
from pathlib import Path

from viny_probe.analysis.sources.base import (
    ModelSource,
    ModelSpec,
    SourceOptions,
    TokenModel,
    bytes_digest,
    patch_part,
    register_source,
    require,
    square,
)
from viny_probe.checkpoint import check_finite_state
from viny_probe.data.augment import IMAGENET_MEAN, IMAGENET_STD
from viny_probe.errors import VinyError

#: Tokens before the patches, by config.model_type (checked against the token count on every pass).
PREFIX_TOKENS: dict[str, Callable] = {
    "vit": lambda c: 1,
    "deit": lambda c: 2,  # CLS + distillation
    "dinov2": lambda c: 1,
    "dinov2_with_registers": lambda c: 1 + int(c.num_register_tokens),
    "clip_vision_model": lambda c: 1,
    "siglip_vision_model": lambda c: 0,
    "beit": lambda c: 1,
    "data2vec-vision": lambda c: 1,
    "vit_msn": lambda c: 1,
    "ijepa": lambda c: 0,
}
# Weights a folder may lack without changing the patch tokens (heads viny never reads).
_UNUSED = ("pooler.", "head.", "classifier.")


@contextlib.contextmanager
def _quiet(transformers):
    """No load report or progress bar from transformers while loading."""
    logging = transformers.utils.logging
    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


_REPO_ID = re.compile(r"^([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@([\w./-]+))?$")
# What a snapshot of a hub repo needs for viny: the configs and the weights, never the repo's code.
_HUB_FILES = ["config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json"]


def _hub_cache() -> str:
    import os

    return os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub"
    )


def _hub_snapshot(repo_id: str, revision: str | None, what: str) -> Path:
    """The local snapshot folder of ``repo_id`` at ``revision`` (default main) in the Hugging Face cache,
    downloaded into it (configs and safetensors weights only) where the hub is reachable and
    ``HF_HUB_OFFLINE`` is not set; one line naming the cache to fill otherwise."""
    import os

    hub = require("huggingface_hub", "hf", "hf")
    try:
        return Path(hub.snapshot_download(repo_id, revision=revision, allow_patterns=_HUB_FILES))
    except (OSError, ValueError) as e:  # not cached offline, no network, no such repo: OSErrors all
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") else ""
        at = f"@{revision}" if revision else ""
        raise VinyError(
            f"{what}: no local folder of that name, and the Hugging Face cache {_hub_cache()} holds no "
            f"snapshot of {repo_id}{at} that could be read{offline} ({type(e).__name__}); fill the cache on a "
            f"machine with network access (huggingface-cli download {repo_id}"
            f"{' --revision ' + revision if revision else ''}) and copy it here, or give a local folder"
        ) from None


def _folder(spec: ModelSpec, what: str) -> Path:
    folder = Path(spec.target).expanduser()
    hub_id = _REPO_ID.match(spec.target)
    if not folder.exists() and hub_id:
        folder = _hub_snapshot(hub_id[1], hub_id[2], what)
    if not folder.exists():
        raise VinyError(f"{what}: folder not found: {folder}")
    if not folder.is_dir():
        raise VinyError(f"{what}: {folder} is a file; hf: takes a folder written by save_pretrained")
    if not (folder / "config.json").is_file():
        raise VinyError(
            f"{what}: {folder} has no config.json; hf: takes a folder in save_pretrained layout "
            "(config.json + model.safetensors, and preprocessor_config.json if it has one)"
        )
    return folder


def _refuse_remote_code(transformers, folder: Path, what: str) -> None:
    """A folder whose config.json has an ``auto_map`` names Python classes of its own: refused in one line,
    before transformers reads it (asked without ``trust_remote_code``, it would offer to run them)."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise VinyError(f"{what}: cannot read {path} ({e})") from None
    auto_map = config.get("auto_map") if isinstance(config, dict) else None
    if not auto_map:
        return
    model_type = config.get("model_type")
    known = model_type in transformers.CONFIG_MAPPING
    fix = (
        f"delete auto_map from {path} to build transformers' own {model_type!r} class"
        if known
        else f"transformers has no {model_type!r} class of its own: wrap the model as a py: source"
    )
    raise VinyError(
        f"{what}: {path} has an auto_map (custom code in {folder}), and viny runs no code from a model "
        f"folder; {fix}"
    )


def _load(transformers, folder: Path, what: str):
    _refuse_remote_code(transformers, folder, what)
    try:
        with _quiet(transformers):
            model, info = transformers.AutoModel.from_pretrained(
                str(folder), local_files_only=True, output_loading_info=True, trust_remote_code=False
            )
    except pickle.UnpicklingError:  # torch's message would advise loading it unsafely: not repeated
        raise VinyError(
            f"{what}: its weights file holds pickled objects torch will not load without running code; "
            "viny refuses it (save the model with safetensors weights)"
        ) from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise VinyError(f"{what}: transformers could not load it ({first})") from None
    missing = sorted(k for k in info.get("missing_keys", ()) if not any(u in k for u in _UNUSED))
    mismatched = sorted(str(k) for k in info.get("mismatched_keys", ()))
    if missing or mismatched:
        parts = [f"missing keys {missing[:5]}"] if missing else []
        parts += [f"shape mismatch {mismatched[:3]}"] if mismatched else []
        raise VinyError(f"{what}: the weights do not match its config: " + "; ".join(parts))
    check_finite_state(model.state_dict(), f"{what}: the weights in {folder}")
    return model


def _preprocessor(folder: Path, what: str) -> dict:
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise VinyError(f"{what}: cannot read {path.name} ({e})") from None


def _preprocessor_size(pp: dict, what: str) -> int | None:
    key = "crop_size" if pp.get("do_center_crop") and pp.get("crop_size") else "size"
    value = pp.get(key)
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return square((value["height"], value["width"]), what, f"preprocessor {key}")
        return value.get("shortest_edge")
    return value if isinstance(value, int) else None


def _normalisation(pp: dict) -> tuple[tuple, tuple, str]:
    if pp.get("do_normalize") is False:
        return (
            (0.0, 0.0, 0.0),
            (1.0, 1.0, 1.0),
            "mean/std: none (preprocessor_config.json: do_normalize false)",
        )
    if pp.get("image_mean") and pp.get("image_std"):
        return tuple(pp["image_mean"]), tuple(pp["image_std"]), "mean/std: preprocessor_config.json"
    return IMAGENET_MEAN, IMAGENET_STD, "mean/std: ImageNet's (no preprocessor_config.json)"


def _vision(model):
    """The vision tower and its config (CLIP, SigLIP), else the model itself."""
    if hasattr(model.config, "vision_config") and hasattr(model, "vision_model"):
        return model.vision_model, model.config.vision_config
    return model, model.config


def load(spec: ModelSpec, options: SourceOptions) -> TokenModel:
    transformers = require("transformers", "hf", "hf")
    what = spec.text or f"hf:{spec.target}"
    if options.weights is not None or spec.options:
        raise VinyError(f"{what}: an hf: folder holds its own weights and takes no options or --weights")
    folder = _folder(spec, what)
    module, config = _vision(_load(transformers, folder, what))
    if getattr(config, "patch_size", None) is None:
        raise VinyError(
            f"{what}: {type(module).__name__} ({config.model_type}) has no patch grid (no patch_size in its "
            "config): viny diagnoses vision transformers"
        )
    if config.model_type not in PREFIX_TOKENS:
        raise VinyError(
            f"{what}: viny does not know how many prefix tokens a {config.model_type!r} model has (known: "
            f"{', '.join(PREFIX_TOKENS)}); add it to hf_models.PREFIX_TOKENS, or wrap it as a py: source"
        )
    prefix = PREFIX_TOKENS[config.model_type](config)
    pp = _preprocessor(folder, what)
    native = square(config.image_size, what, "image_size")
    from_pp = _preprocessor_size(pp, what)
    image_size = options.image_size or from_pp or native
    size_note = (
        "--img-size" if options.image_size else "preprocessor_config.json" if from_pp else "config.json"
    )
    patch_size = square(config.patch_size, what, "patch_size")
    mean, std, norm_note = _normalisation(pp)
    forward_kwargs = {}
    if image_size != native and "interpolate_pos_encoding" in inspect.signature(module.forward).parameters:
        forward_kwargs["interpolate_pos_encoding"] = True
    depth, grid = int(config.num_hidden_layers), image_size // patch_size

    def tokens(images, wanted):
        out = module(pixel_values=images, output_hidden_states=True, **forward_kwargs)
        hidden = out.hidden_states
        if hidden is None or len(hidden) != depth + 1:
            raise VinyError(
                f"{what}: expected {depth + 1} hidden states, got {None if hidden is None else len(hidden)}"
            )
        return {
            b: patch_part(out.last_hidden_state if b == depth else hidden[b], prefix, grid * grid, what, b)
            for b in wanted
        }

    return TokenModel(
        module.eval(),
        tokens,
        depth=depth,
        dim=int(config.hidden_size),
        patch_size=patch_size,
        image_size=image_size,
        mean=mean,
        std=std,
        source=what,
        config={
            "source": "hf",
            "folder": str(folder),
            "weights": _weights_record(spec.target, folder),
            "model_type": config.model_type,
            "class": type(module).__name__,
            "depth": depth,
            "dim": int(config.hidden_size),
            "patch_size": patch_size,
            "image_size": image_size,
            "prefix_tokens": prefix,
        },
        notes=[
            f"weights: {_weights_record(spec.target, folder)}",
            f"input {image_size} px: {size_note}"
            + (" (position embeddings interpolated)" if image_size != native else ""),
            norm_note,
            f"{prefix} prefix token(s) dropped: the {config.model_type} config",
        ],
        prefix_tokens=prefix,
        fingerprint={
            "config.json": bytes_digest(folder / "config.json"),
            "preprocessor_config.json": bytes_digest(folder / "preprocessor_config.json"),
            "transformers": transformers.__version__,
        },
        weights_from=str(folder),
    )


def _weights_record(target: str, folder: Path) -> str:
    """Which weights: a hub repo at the revision its snapshot folder is named by, or the local folder."""
    if Path(target).expanduser().exists():
        return f"local folder {folder}"
    repo = _REPO_ID.match(target)[1]
    return f"hf hub {repo}@{folder.name}"


register_source(
    ModelSource(
        "hf",
        load,
        "a Hugging Face model: a hub id ORG/NAME[@REVISION] from the hub cache, or a local "
        "save_pretrained folder (ViT, DeiT, DINOv2, CLIP vision, ...)",
        "hf:facebook/dinov2-small",
        extra="hf",
    )
)
