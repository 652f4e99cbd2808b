"""``viny:PATH`` (or a bare path): a viny checkpoint, a `viny export` folder (either format), or the
study authors' state_dict converted in memory (``authors.py``). The authors' file records no head
count: it is read from the ``config.json`` `viny export` wrote beside it, else from ``,heads=N`` in the
model string (the commands' ``--heads``), else taken as the study's 8 only for the study's attention
width (8 x 64); otherwise the load is refused rather than guessed. Its input size is fixed by its position embeddings; mean/std are ImageNet's,
or none (raw [0, 1] pixels) for a checkpoint that trained on raw inputs (``TrainConfig.inputs``). The
token cache's key holds its ViTConfig (``config``), the digest of its weights and, in its fingerprint,
the digest of viny's model.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from viny_probe import model as model_code
from viny_probe.analysis.authors import (
    authors_checkpoint_payload,
    authors_to_viny_state,
    describe_foreign,
    is_authors_state_dict,
)
from viny_probe.analysis.sources.base import (
    ModelSource,
    ModelSpec,
    SourceOptions,
    TokenModel,
    bytes_digest,
    register_source,
)
from viny_probe.checkpoint import FORMAT_VERSION, encoder_from_checkpoint, file_digest, torch_load_safely
from viny_probe.data.augment import IMAGENET_MEAN, IMAGENET_STD
from viny_probe.errors import VinyError
from viny_probe.model import ViNy

EXPORT_CONFIG = "config.json"
EXPORT_FORMATS = ("viny", "authors")


def export_config(folder: str | Path) -> dict | None:
    """The ``config.json`` of a `viny export` folder, or None where ``folder`` holds none (or another
    tool's, e.g. a Hugging Face one). Its format is under ``viny_format`` (``format`` before 0.2)."""
    path = Path(folder) / EXPORT_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or not isinstance(config.get("model_config"), dict):
        return None
    fmt = config.get("viny_format", config.get("format"))
    return {**config, "viny_format": fmt} if fmt in EXPORT_FORMATS else None


def export_beside(weights: str | Path) -> dict | None:
    """The config.json `viny export --format authors` wrote beside ``weights`` (its encoder.pth), or None."""
    config = export_config(Path(weights).parent)
    if config is None or (config["viny_format"], config.get("weights")) != ("authors", Path(weights).name):
        return None
    return config


def export_checkpoint(config: dict, state: dict, where: str | Path) -> dict:
    """The checkpoint dict an export stands for: its encoder ``state`` and the provenance its config.json
    kept (regime, training config, what it trained on, lineage), so that the diagnostics take the same
    defaults and refuse the same overlaps as on the checkpoint it came from. An export without that
    record (written before viny 0.2) gives a stage whose training images are unknown."""
    provenance = config.get("provenance") or {}
    return {
        "format_version": FORMAT_VERSION,
        "model_config": config["model_config"],
        "encoder": state,
        "head_type": None,
        "regime": provenance.get("regime", "exported"),
        "epoch": provenance.get("epoch"),
        "config": provenance.get("config") or {},
        "trained_on": provenance.get("trained_on"),
        "lineage": provenance.get("lineage") or [],
        "export": str(where),
    }


def load_export_folder(folder: str | Path, config: dict | None = None) -> tuple[ViNy, dict]:
    """``(encoder, checkpoint_dict)`` of a `viny export` folder (either format), built strictly."""
    from viny_probe.model import model_config

    folder = Path(folder)
    config = config or export_config(folder)
    if config is None:
        raise VinyError(f"{folder} is not a viny export: no {EXPORT_CONFIG} written by `viny export`")
    fmt, weights = config["viny_format"], folder / str(config.get("weights"))
    if not weights.is_file():
        raise VinyError(
            f"{folder / EXPORT_CONFIG}: format {fmt!r} with weights {weights} is not a complete viny export"
        )
    cfg = model_config(config["model_config"])
    if fmt == "viny":
        from safetensors.torch import load_file

        state = load_file(weights)
    else:
        _, state = authors_to_viny_state(
            torch_load_safely(weights, "the authors-format encoder.pth that viny export wrote"),
            cfg.heads,
            weights,
        )
    ckpt = export_checkpoint({**config, "model_config": cfg.to_dict()}, state, folder)
    return encoder_from_checkpoint(ckpt, weights).eval(), ckpt


def load_encoder(path: str | Path, heads: int | None = None) -> tuple[ViNy, dict]:
    """Load an encoder, in eval mode on the CPU, from a viny checkpoint, a `viny export` folder or the
    authors' state_dict.

    Returns ``(encoder, checkpoint_dict)``. For the authors' file the dict is the viny checkpoint that
    ``import_authors_checkpoint`` would write (regime "imported", lineage naming the file and its
    digest), or, when `viny export` wrote it, the provenance kept in the config.json beside it. Its head
    count: ``heads``, else that config.json's, else the study's 8 for the study's attention width (the
    module docstring). Anything else raises VinyError: a file torch cannot read, a dict of neither
    format, or an encoder whose tensors do not match the architecture (the message names the
    missing/unexpected keys).
    """
    path = Path(path)
    if path.is_dir():
        config = export_config(path)
        if config is None:
            raise VinyError(
                f"{path} is a folder without the config.json of `viny export`; give a checkpoint file, an "
                f"export folder, or hf:{path} for a Hugging Face save_pretrained folder"
            )
        if heads is not None and heads != config["model_config"].get("heads"):
            raise VinyError(
                f"--heads {heads}: {path}/config.json records {config['model_config'].get('heads')} heads"
            )
        return load_export_folder(path, config)
    if not path.is_file():
        raise VinyError(f"checkpoint not found: {path}")
    obj = torch_load_safely(path, "a viny checkpoint or the study authors' ViT state_dict")
    if isinstance(obj, dict) and "encoder" in obj and "format_version" in obj:
        if obj["format_version"] > FORMAT_VERSION:
            raise VinyError(
                f"{path} has checkpoint format {obj['format_version']}; this viny reads up to {FORMAT_VERSION}"
            )
        if "model_config" not in obj or not isinstance(obj["encoder"], dict):
            raise VinyError(f"{path} is a damaged viny checkpoint: no 'model_config' or no encoder state")
        ckpt = obj
    elif is_authors_state_dict(obj):
        beside = export_beside(path)
        if heads is None and beside is not None:
            heads = beside["model_config"].get("heads")
        cfg, state = authors_to_viny_state(obj, heads, path)
        ckpt = authors_checkpoint_payload(cfg, state, path, file_digest(path))
        if beside is not None:
            ckpt = {**export_checkpoint(beside, state, path), "model_config": cfg.to_dict()}
    else:
        raise VinyError(describe_foreign(path, obj))
    encoder = encoder_from_checkpoint(ckpt, path)
    return encoder.eval(), ckpt


def viny_token_model(encoder: ViNy, ckpt: dict | None = None, name: str = "viny") -> TokenModel:
    """A ViNy encoder as a TokenModel: its ``patch_tokens_per_block`` (block ``depth`` after the final
    LayerNorm), ImageNet normalisation (raw [0, 1] pixels when the checkpoint's run trained on them,
    ``--inputs raw``), the CLS token never in the output."""
    if not hasattr(encoder, "patch_tokens_per_block") or not hasattr(encoder, "cfg"):
        raise VinyError(f"expected a ViNy encoder, got {type(encoder).__name__}")
    cfg = encoder.cfg
    config = (ckpt or {}).get("config") or {}
    # the regime's option (config.json's regime_options; a flat key in a run of an older viny)
    raw = (config.get("regime_options") or config).get("inputs") == "raw"
    return TokenModel(
        encoder,
        encoder.patch_tokens_per_block,
        depth=cfg.depth,
        dim=cfg.dim,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
        source="viny",
        name=name,
        config=cfg.to_dict(),
        meta=ckpt or {},
        mean=(0.0, 0.0, 0.0) if raw else IMAGENET_MEAN,
        std=(1.0, 1.0, 1.0) if raw else IMAGENET_STD,
        notes=["mean/std: none, raw [0, 1] pixels, as its run trained (inputs raw)"] if raw else [],
        prefix_tokens=int(cfg.cls_in_sequence),
        fingerprint={"model.py": bytes_digest(model_code.__file__)},
    )


def load(spec: ModelSpec, options: SourceOptions) -> TokenModel:
    if options.weights is not None:
        raise VinyError(
            f"--weights is for timm: models; {spec.target} is a viny checkpoint and holds its own weights"
        )
    unknown = sorted(set(spec.options) - {"heads"})
    if unknown:
        raise VinyError(
            f"model {spec.text!r}: a viny checkpoint takes only heads=N after a comma, not {unknown}"
        )
    heads = spec.options.get("heads")
    if heads is not None and (not isinstance(heads, int) or isinstance(heads, bool) or heads < 1):
        raise VinyError(f"model {spec.text!r}: heads must be a whole number >= 1, got {heads!r}")
    encoder, ckpt = load_encoder(spec.target, heads)
    if options.image_size not in (None, encoder.cfg.image_size):
        raise VinyError(
            f"{spec.target}: a viny checkpoint's input size is fixed at {encoder.cfg.image_size} px by its "
            f"position embeddings; --img-size {options.image_size} cannot apply (for a timm: model, give "
            "img_size=... in its string instead)"
        )
    return replace(viny_token_model(encoder, ckpt, _run_name(spec.target)), weights_from=spec.target)


def _run_name(path: str) -> str:
    p = Path(path)
    return p.parent.name if p.stem in ("final", "last", "best") or p.stem.startswith("epoch") else p.stem


register_source(
    ModelSource(
        "viny",
        load,
        "a viny checkpoint (run folder's final.pt), a `viny export` folder or the study authors' state_dict "
        "(.pth; PATH,heads=N when no config.json of `viny export` is beside it)",
        "runs/spatial/final.pt",
        wrap=viny_token_model,
    )
)
