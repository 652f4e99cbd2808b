"""Export a checkpoint's encoder for use outside viny: the weights plus a ``config.json`` in a folder.

Two formats (``EXPORT_FORMATS``):

- ``viny``: ``encoder.safetensors`` with viny's tensor names (``ViNy.state_dict()``), loadable with
  ``safetensors.torch.load_file`` into ``ViNy(ViTConfig(**config["model_config"]))`` (or with
  :func:`load_export`). Not ``model.safetensors``: that is the name Hugging Face's ``from_pretrained``
  loads, and it would build its default ViT-B/16 from the config.json beside it, fill it with
  nothing it recognises and return it randomly initialised (a "load report" its only sign); with
  another name it refuses the folder.
- ``authors``: ``encoder.pth``, the study authors' state_dict naming (142 tensors for ViNy), written with
  ``torch.save`` as their published ``encoder_vit_4M_pretrain_200K.pth`` is, so their code loads it with
  ``model.load_state_dict(torch.load(path))``. It is the exact reverse of ``viny import-checkpoint``
  (``authors.authors_name_map``): a renaming, no tensor reshaped or transposed.

``config.json`` holds, for both: the format (``viny_format``; no ``model_type``, so that no tool takes it
for a Hugging Face config) and weights file, the ViTConfig, the viny version, the parameter count, the
source checkpoint (path, sha256, regime, epoch), a summary of its lineage (every stage the encoder went
through: regime, dataset, images, checkpoint digest) and the checkpoint's ``provenance`` (regime, training
config, what it trained on, full lineage): every viny command reads an export folder as a model, with
the defaults and overlap checks of the checkpoint it came from (``sources/viny.py``).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from viny_probe import __version__
from viny_probe.analysis.authors import AUTHORS_HEADS, CHANNELS, authors_name_map
from viny_probe.analysis.embeddings import load_encoder
from viny_probe.analysis.sources.viny import EXPORT_FORMATS, load_export_folder
from viny_probe.checkpoint import atomic_write_bytes, file_digest, jsonable, write_json
from viny_probe.errors import VinyError
from viny_probe.model import ViNy, count_parameters
from viny_probe.runlock import hold_run_folder, is_run_folder, refuse_to_overwrite

WEIGHTS_FILE = {"viny": "encoder.safetensors", "authors": "encoder.pth"}
CONFIG_FILE = "config.json"
PROVENANCE_KEYS = ("regime", "epoch", "config", "trained_on", "lineage")


def viny_to_authors_state(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """A ViNy encoder state_dict renamed to the study authors' names (the reverse of
    ``authors_to_viny_state``). Every name is checked: a missing or unexpected one raises VinyError."""
    ours_to_theirs = {ours: theirs for theirs, ours in authors_name_map(depth).items()}
    missing = sorted(set(ours_to_theirs) - set(state))
    unexpected = sorted(set(state) - set(ours_to_theirs))
    if missing or unexpected:
        raise VinyError(
            f"encoder does not map onto the authors' ViT: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return {ours_to_theirs[name]: t for name, t in state.items()}


def lineage_summary(ckpt: dict, source: str | Path, digest: str) -> list[dict]:
    """Every stage the checkpoint's encoder went through, oldest first, its own stage last: regime,
    dataset, training images, split seed and the checkpoint (path, sha256) each stage wrote."""
    stages = []
    for entry in ckpt.get("lineage", []):
        used = entry.get("trained_on") or {}
        stages.append(
            {
                "regime": entry.get("regime"),
                "dataset": entry.get("dataset", used.get("dataset")),
                "images": used.get("images"),
                "split_seed": used.get("split_seed"),
                "checkpoint": entry.get("checkpoint"),
                "sha256": entry.get("digest"),
            }
        )
    regime = ckpt.get("regime")
    if regime not in (None, "imported"):
        used = ckpt.get("trained_on") or {}
        stages.append(
            {
                "regime": regime,
                "dataset": ckpt.get("config", {}).get("dataset", used.get("dataset")),
                "images": used.get("images"),
                "split_seed": used.get("split_seed"),
                "epochs": ckpt.get("epoch"),
                "checkpoint": str(source),
                "sha256": digest,
            }
        )
    return stages


def _weights_bytes(encoder: ViNy, fmt: str) -> bytes:
    state = {k: v.detach().cpu().contiguous().clone() for k, v in encoder.state_dict().items()}
    if fmt == "viny":
        from safetensors.torch import save

        return save(state, metadata={"format": "pt", "viny_version": __version__})
    authors = viny_to_authors_state(state, encoder.cfg.depth)
    buffer = io.BytesIO()
    torch.save(authors, buffer)
    return buffer.getvalue()


def _authors_warnings(encoder: ViNy) -> list[str]:
    cfg, out = encoder.cfg, []
    if cfg.channels != CHANNELS:
        raise VinyError(
            f"--format authors needs a 3-channel encoder (the authors' patch embedding); this one has "
            f"{cfg.channels}. Use --format viny."
        )
    if cfg.heads != AUTHORS_HEADS:
        out.append(
            f"the encoder has {cfg.heads} heads, which the authors' state_dict does not record (their code "
            f"assumes {AUTHORS_HEADS}): build their ViT with heads={cfg.heads}; viny reads the count from the "
            f"config.json beside encoder.pth, and needs --heads {cfg.heads} for the file without it"
        )
    if cfg.cls_in_sequence:
        out.append(
            "this encoder ran the CLS token through the blocks in every stage (cls_in_sequence, checkpoint "
            "format 1); the authors' code prepends it only for classification, so their forward differs "
            "from the one it was trained with"
        )
    return out


def export_encoder(ckpt: str | Path, out: str | Path, fmt: str = "viny", force: bool = False) -> dict:
    """Write the encoder of ``ckpt`` (a viny checkpoint or the authors' state_dict) into the folder ``out``.

    ``fmt`` is ``"viny"`` (``model.safetensors``) or ``"authors"`` (``encoder.pth``, the study code's
    names); ``config.json`` goes beside it in both (module docstring). Each file is written atomically,
    the weights first, so a folder with a ``config.json`` is complete. Returns what was written:
    ``{"out", "format", "files", "model_config", "parameters", "tensors", "source", "lineage",
    "warnings"}``.

    Nothing is written into a run folder or over an existing file unless ``force`` (a one-line
    VinyError naming the path and --force); with it, a run folder's lock is held while writing.
    """
    if fmt not in EXPORT_FORMATS:
        raise VinyError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    ckpt, out = Path(ckpt), Path(out)
    encoder, loaded = load_encoder(ckpt)
    warnings = _authors_warnings(encoder) if fmt == "authors" else []
    digest = file_digest(ckpt)
    weights = out / WEIGHTS_FILE[fmt]
    refuse_to_overwrite([weights, out / CONFIG_FILE], force)
    data = _weights_bytes(encoder, fmt)
    lock = hold_run_folder(out, advice="choose another -o") if is_run_folder(out) else None
    try:
        config = _write_export(out, weights, data, fmt, encoder, ckpt, loaded, digest, warnings)
    finally:
        if lock is not None:
            lock.release()
    return {
        "out": str(out),
        "files": [str(weights), str(out / CONFIG_FILE)],
        "format": config["viny_format"],
        **{k: config[k] for k in ("model_config", "parameters", "tensors", "source", "lineage")},
        "warnings": warnings,
    }


def _write_export(out, weights, data, fmt, encoder, ckpt, loaded, digest, warnings) -> dict:
    """The weights, then config.json (each atomically: a folder with a config.json is complete)."""
    atomic_write_bytes(weights, lambda f: f.write(data))
    source = {
        "checkpoint": str(ckpt),
        "sha256": digest,
        "regime": loaded.get("regime"),
        "epoch": loaded.get("epoch"),
    }
    config = {
        "viny_format": fmt,
        "weights": weights.name,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        "model_config": encoder.cfg.to_dict(),
        "viny_version": __version__,
        "parameters": count_parameters(encoder),
        "tensors": len(encoder.state_dict()),
        "source": source,
        "lineage": lineage_summary(loaded, ckpt, digest),
        "provenance": jsonable({k: loaded[k] for k in PROVENANCE_KEYS if loaded.get(k) is not None}),
    }
    if warnings:
        config["warnings"] = warnings
    write_json(out / CONFIG_FILE, config)
    return config


def load_export(folder: str | Path) -> ViNy:
    """The encoder an ``export_encoder`` folder holds (either format), built strictly, in eval mode."""
    return load_export_folder(folder)[0]
