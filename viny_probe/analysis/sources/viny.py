"""``viny:PATH`` (or a bare path): a viny checkpoint, or the study authors' state_dict converted in
memory (``authors.py``). Its input size is fixed by its position embeddings; mean/std are ImageNet's,
or none (raw [0, 1] pixels) for a checkpoint that trained on raw inputs (``TrainConfig.inputs``). The
token cache's key holds its ViTConfig (``config``), the digest of its weights and, in its fingerprint,
the digest of viny's model.py."""

from __future__ import annotations

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


def load_encoder(path: str | Path, heads: int | None = None) -> tuple[ViNy, dict]:
    """Load an encoder, in eval mode on the CPU, from a viny checkpoint or the authors' state_dict.

    Returns ``(encoder, checkpoint_dict)``. For the authors' file the dict is the viny checkpoint that
    ``import_authors_checkpoint`` would write (regime "imported", lineage naming the file and its
    digest); ``heads`` overrides the head count assumed for it (default 8, the study's). Anything else
    raises VinyError: a file torch cannot read, a dict of neither format, or an encoder whose tensors do
    not match the architecture (the message names the missing/unexpected keys).
    """
    path = Path(path)
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
        cfg, state = authors_to_viny_state(obj, heads, path)
        ckpt = authors_checkpoint_payload(cfg, state, path, file_digest(path))
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
    raw = ((ckpt or {}).get("config") or {}).get("inputs") == "raw"
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
    encoder, ckpt = load_encoder(spec.target)
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
        "a viny checkpoint (run folder's final.pt) or the study authors' state_dict (.pth)",
        "runs/spatial/final.pt",
    )
)
