"""An export folder (`viny export`, either format) is a model everywhere viny reads one: probe, diagnose,
similarity-map, explore and extract give what the checkpoint it came from gives; an authors-format
encoder.pth takes its head count from the config.json beside it, and without one the head count is
given (--heads), never guessed; Hugging Face does not take the folder for one of its own."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from viny_probe.cli import app
from viny_probe.errors import VinyError

SMALL = ["--probe-images", "16", "--test-images", "8", "--no-knn", "--device", "cpu", "-q", "--no-cache"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], prog_name="viny", env={"COLUMNS": "250"})


@pytest.fixture(scope="module")
def exports(tiny_ckpt, tmp_path_factory):
    """The tiny spatial checkpoint (2 heads) exported in both formats, and the authors' file alone."""
    root = tmp_path_factory.mktemp("exports")
    for fmt in ("viny", "authors"):
        res = invoke("export", tiny_ckpt, "--format", fmt, "-o", root / fmt)
        assert res.exit_code == 0, res.output
    shutil.copy(root / "authors" / "encoder.pth", root / "bare.pth")
    return root


def probe(model, *extra):
    res = invoke("probe", model, *SMALL, "--json", *extra)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    return data["data"], data["layers"]


def test_probe_reads_every_form_of_an_export_as_the_checkpoint(tiny_ckpt, exports):
    """The same data defaults (from the provenance in config.json) and the same numbers. Mutants
    applied once, each failing this test: load_encoder without its export-folder branch ("checkpoint
    not found", as before); the authors' file without the head count of the config.json beside it
    (refused: its width is not the study's)."""
    want_data, want = probe(tiny_ckpt)
    for model in (exports / "viny", exports / "authors", exports / "authors" / "encoder.pth"):
        data, layers = probe(model)
        assert (data["dataset"], data["split_seed"], data["test_images"]) == (
            want_data["dataset"],
            want_data["split_seed"],
            want_data["test_images"],
        )
        assert layers == want, model


def test_an_authors_file_without_its_config_needs_heads_and_is_never_guessed(tiny_ckpt, exports):
    """Before, the 2-head file was read as 8 heads and gave other tokens. Mutant applied once, failing
    this test: infer_authors_config taking 8 heads for any width again."""
    res = invoke("probe", exports / "bare.pth", *SMALL, "--dataset", "toy-pets")
    assert isinstance(res.exception, VinyError) and "--heads N" in str(res.exception), res.output
    want_data, want = probe(tiny_ckpt)
    split = ["--split-seed", want_data["split_seed"], "--test-size", 8]  # no lineage: the checkpoint's split
    _, got = probe(exports / "bare.pth", "--dataset", "toy-pets", "--heads", "2", *split)
    assert got == want
    res = invoke("probe", "timm:vit_tiny_patch16_224", "--heads", "2")
    assert isinstance(res.exception, VinyError) and "--heads is for the study authors'" in str(res.exception)


def test_similarity_map_diagnose_explore_and_extract_read_an_export(tiny_ckpt, exports, tmp_path):
    res = invoke("similarity-map", tiny_ckpt, "toy-pets:1", "--patch", "2,3", "-o", tmp_path / "c.png")
    assert res.exit_code == 0, res.output
    res = invoke("similarity-map", exports / "viny", "toy-pets:1", "--patch", "2,3", "-o", tmp_path / "e.png")
    assert res.exit_code == 0, res.output
    want, got = (json.loads((tmp_path / f"{n}.json").read_text())["maps"] for n in ("c", "e"))
    assert got == want

    res = invoke(
        "diagnose", exports / "viny", exports / "authors", "-o", tmp_path / "diag", *SMALL,
        "--depth-probe-images", "8", "--cka-images", "4", "--fig6-images", "1",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "diag" / "summary.json").read_text())["table2"]
    assert len(rows) == 2 and {k: v for k, v in rows[0].items() if k != "checkpoint"} == {
        k: v for k, v in rows[1].items() if k != "checkpoint"
    }

    res = invoke("explore", exports / "authors", "toy-pets:1", "--layer", "final", "-o", tmp_path / "x.html")
    assert res.exit_code == 0 and (tmp_path / "x.html").is_file(), res.output
    res = invoke(
        "extract", exports / "viny", "--probe-images", "4", "--test-images", "4", "--layer", "final",
        "-o", tmp_path / "tokens", "-q", "--device", "cpu",
    )  # fmt: skip
    assert res.exit_code == 0 and (tmp_path / "tokens" / "index.json").is_file(), res.output


def test_hugging_face_does_not_take_an_export_for_its_own(exports):
    """ViTModel.from_pretrained(EXPORT) used to build a random ViT-B/16 after a load report (config.json
    and model.safetensors are its names). Mutant applied once, failing this test: the viny weights
    written as model.safetensors again."""
    transformers = pytest.importorskip("transformers")
    config = json.loads((exports / "viny" / "config.json").read_text())
    assert "model_type" not in config and config["viny_format"] == "viny"
    for folder in (exports / "viny", exports / "authors"):
        with pytest.raises((OSError, ValueError)):
            transformers.ViTModel.from_pretrained(str(folder))
        with pytest.raises((OSError, ValueError)):
            transformers.AutoModel.from_pretrained(str(folder))
