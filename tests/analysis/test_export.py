"""`viny export`: the encoder as encoder.safetensors (viny's names) or encoder.pth (the study authors'
names) plus config.json, and both round trips back into viny."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from viny_probe.analysis.authors import import_authors_checkpoint
from viny_probe.analysis.export import EXPORT_FORMATS, export_encoder, load_export
from viny_probe.checkpoint import file_digest, load_checkpoint, save_checkpoint
from viny_probe.cli import app
from viny_probe.errors import VinyError
from viny_probe.model import ViNy

from .test_authors import tiny_authors_state


def _images(n=3, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_viny_format_loads_back_with_identical_outputs(tiny_ckpt, tmp_path):
    """export (viny format) -> load back into ViNy: the same tensors under the same names, and the same
    patch tokens at every block. Mutant applied once, failing this test: _weights_bytes swapping the q and
    k chunks of every blocks.{i}.attn.qkv.weight (the shapes stay, the outputs change)."""
    result = export_encoder(tiny_ckpt, tmp_path / "exp")
    source = ViNy(load_checkpoint(tiny_ckpt)["model_config"])
    source.load_state_dict(load_checkpoint(tiny_ckpt)["encoder"])
    source.eval()
    saved = load_file(tmp_path / "exp" / "encoder.safetensors")
    assert set(saved) == set(source.state_dict())
    assert all(torch.equal(saved[k], v) for k, v in source.state_dict().items())
    loaded = load_export(tmp_path / "exp")
    x = _images()
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x)) and torch.equal(loaded(x, cls=True), source(x, cls=True))
        ours, theirs = loaded.patch_tokens_per_block(x), source.patch_tokens_per_block(x)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[b], theirs[b]) for b in ours)
    assert result["files"] == [
        str(tmp_path / "exp" / "encoder.safetensors"),
        str(tmp_path / "exp" / "config.json"),
    ]


def test_config_json_names_the_model_version_source_and_lineage(tiny_ckpt, tmp_path):
    export_encoder(tiny_ckpt, tmp_path / "exp")
    config = json.loads((tmp_path / "exp" / "config.json").read_text())
    ckpt = load_checkpoint(tiny_ckpt)
    assert config["viny_format"] == "viny" and config["weights"] == "encoder.safetensors"
    assert config["model_config"] == ckpt["model_config"]
    assert config["viny_version"] == __import__("viny_probe").__version__
    assert config["source"]["sha256"] == file_digest(tiny_ckpt) and config["source"]["regime"] == "spatial"
    (stage,) = config["lineage"]  # trained from scratch: one stage, its own
    assert stage["regime"] == "spatial" and stage["dataset"] == "toy-pets" and stage["images"] == 16
    assert stage["sha256"] == file_digest(tiny_ckpt)
    assert config["parameters"] == sum(p.numel() for p in ViNy("tiny").parameters())


def test_lineage_summary_lists_every_stage_oldest_first(tiny_ckpt, tmp_path):
    """A checkpoint trained from another: its parent's stage first (with the parent's digest), its own last."""
    ckpt = load_checkpoint(tiny_ckpt)
    child = {
        **ckpt,
        "regime": "segment",
        "config": {**ckpt["config"], "regime": "segment"},
        "lineage": [
            {
                "regime": "spatial",
                "dataset": "toy-pets",
                "checkpoint": str(tiny_ckpt),
                "digest": file_digest(tiny_ckpt),
                "trained_on": ckpt["trained_on"],
            }
        ],
    }
    save_checkpoint(tmp_path / "child.pt", child)
    result = export_encoder(tmp_path / "child.pt", tmp_path / "exp")
    assert [s["regime"] for s in result["lineage"]] == ["spatial", "segment"]
    assert result["lineage"][0]["sha256"] == file_digest(tiny_ckpt)
    assert result["lineage"][1]["sha256"] == file_digest(tmp_path / "child.pt")


def test_authors_format_is_the_exact_reverse_of_import(tmp_path):
    """The authors' file -> viny checkpoint (import) -> export --format authors gives back their file:
    the same 32 names and the same tensors, bit for bit; and import-checkpoint of the export gives the
    same encoder tensors. Mutant applied once, failing this test: viny_to_authors_state transposing
    blocks.{i}.attn.proj.weight (square in the tiny model, so no shape check catches it)."""
    original = tiny_authors_state(seed=3)
    torch.save(original, tmp_path / "theirs.pth")
    imported = import_authors_checkpoint(tmp_path / "theirs.pth", tmp_path / "ours.pt", heads=2)
    result = export_encoder(imported, tmp_path / "exp", "authors")
    written = torch.load(tmp_path / "exp" / "encoder.pth", weights_only=True)
    assert set(written) == set(original)
    assert all(torch.equal(written[k], original[k]) for k in original)

    again = import_authors_checkpoint(tmp_path / "exp" / "encoder.pth", tmp_path / "again.pt", heads=2)
    first, second = load_checkpoint(imported)["encoder"], load_checkpoint(again)["encoder"]
    assert set(first) == set(second) and all(torch.equal(first[k], second[k]) for k in first)
    assert result["model_config"]["heads"] == 2
    assert any("--heads 2" in w for w in result["warnings"])  # not the study's 8: import needs --heads


def test_authors_format_of_a_viny_checkpoint_loads_back(tiny_ckpt, tmp_path):
    """export --format authors -> load_export (heads from config.json): the same outputs."""
    export_encoder(tiny_ckpt, tmp_path / "exp", "authors")
    ckpt = load_checkpoint(tiny_ckpt)
    source = ViNy(ckpt["model_config"])
    source.load_state_dict(ckpt["encoder"])
    x = _images(seed=1)
    with torch.no_grad():
        assert torch.equal(load_export(tmp_path / "exp")(x), source.eval()(x))
    config = json.loads((tmp_path / "exp" / "config.json").read_text())
    assert config["viny_format"] == "authors" and config["weights"] == "encoder.pth" and config["warnings"]


def test_unknown_format_and_incomplete_folder_are_clear_errors(tiny_ckpt, tmp_path):
    with pytest.raises(VinyError, match="choose one of viny, authors"):
        export_encoder(tiny_ckpt, tmp_path / "x", "onnx")
    with pytest.raises(VinyError, match="no config.json"):
        load_export(tmp_path / "missing")
    assert EXPORT_FORMATS == ("viny", "authors")


def test_cli_export_json_prints_only_the_result(tiny_ckpt, tmp_path):
    res = CliRunner().invoke(app, ["export", str(tiny_ckpt), "-o", str(tmp_path / "exp"), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["format"] == "viny" and data["parameters"] > 0
    assert (tmp_path / "exp" / "encoder.safetensors").is_file() and (
        tmp_path / "exp" / "config.json"
    ).is_file()
    res = CliRunner().invoke(
        app, ["export", str(tiny_ckpt), "-o", str(tmp_path / "a"), "--format", "authors"]
    )
    assert res.exit_code == 0 and "encoder.pth" in res.output and "warning" in res.output
