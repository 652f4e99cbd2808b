"""`--eval-protocol authors`: the study's code's diagnostic images (training images, raw, augmented once),
labelled in every output; the default (`viny`) unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from viny_probe.analysis.checkpoint_probe import probe_checkpoint
from viny_probe.analysis.eval_protocol import AUTHORS_LABEL, PROTOCOLS, authors_images
from viny_probe.analysis.lineage import lineage_stages
from viny_probe.analysis.options import DiagnoseOptions, EvalSet, ModelOptions, ProbeOptions
from viny_probe.checkpoint import load_checkpoint
from viny_probe.cli import app
from viny_probe.cli.analysis import EvalProtocol
from viny_probe.config import TrainConfig
from viny_probe.data import load_dataset


def small(protocol: str = "viny", knn: bool = False) -> dict:
    """The library's options for a few images, no token cache, under ``protocol``."""
    return dict(
        model=ModelOptions(use_cache=False),
        data=EvalSet(probe_images=12, test_images=8, protocol=protocol),
        probe=ProbeOptions(knn=knn),
        progress=False,
    )


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """A tiny segmentation checkpoint trained on 16 toy-pets pool images (test size 8)."""
    from viny_probe.trainers import train

    out = tmp_path_factory.mktemp("seg")
    cfg = TrainConfig(
        regime="segment", model="tiny", epochs=1, batch_size=8, train_size=16, test_size=8, device="cpu"
    )
    return train(cfg, out / "seg", progress=False).final_checkpoint


def _trained_ids(ckpt) -> set[str]:
    meta = load_checkpoint(ckpt)
    (stage,) = [s for s in lineage_stages(meta) if s.dataset == "toy-pets" and s.ids is not None]
    return set(stage.ids)


def test_authors_protocol_measures_on_the_images_the_model_trained_on(seg):
    """Under ``authors`` the probe is fitted and scored on the 16 images SEG trained on (not its 8
    held-out test images), with raw inputs, no refusal, and the label as the first warning. Mutant:
    ``evaluation_sets`` ignoring the protocol (always ``load_probe_data``) -> 8 test images, no label."""
    result = probe_checkpoint(seg, **small("authors", knn=True))
    d = result["data"]
    assert d["eval_protocol"] == "authors" and d["protocol_label"] == AUTHORS_LABEL
    assert d["test_images"] == d["probe_images"] == 16
    assert d["trained_on_evaluation_images"] == {str(seg): 16}
    assert result["warnings"][0] == AUTHORS_LABEL
    assert result["model"]["mean"] == [0.0, 0.0, 0.0] and result["model"]["std"] == [1.0, 1.0, 1.0]
    probe = result["layers"]["final"]["probe"]
    assert probe["num_test_patches"] == probe["num_train_patches"] == 16 * 64
    assert result["layers"]["final"].get("knn") is None  # its bank would hold the patches it classifies


def test_default_protocol_is_unchanged(seg):
    """The default is ``viny``: held-out test images (none trained on), the model's own normalisation,
    no label; the numbers equal an explicit ``eval_protocol="viny"``. Mutant: default ``"authors"``
    -> training images and the label."""
    default = probe_checkpoint(seg, **{**small(), "data": EvalSet(probe_images=12, test_images=8)})
    explicit = probe_checkpoint(seg, **small("viny"))
    d = default["data"]
    assert d["eval_protocol"] == "viny" and d["test_images"] == 8 and d["probe_images"] == 12
    assert AUTHORS_LABEL not in default["warnings"] and default["warnings"] == []
    assert default["model"]["mean"] != [0.0, 0.0, 0.0]
    assert default["layers"] == explicit["layers"]


def test_authors_images_are_the_training_images_flipped_and_jittered_with_their_masks(seg):
    """The images are SEG's training ids in pool order; each is either its plain image (up to the
    jitter) or its mirror, and its mask is flipped exactly when the image is. Mutants: masks not
    flipped with their images; no augmentation at all."""
    meta = load_checkpoint(seg)
    images, info = authors_images("toy-pets", 32, None, 0, 8, [("SEG", meta)])
    assert set(images.ids) == _trained_ids(seg) and len(images) == 16
    whole = load_dataset("toy-pets", size=32, limit=3000, seed=0)
    index = [whole.ids.index(i) for i in images.ids]
    plain_masks, plain = whole.masks[index], whole.images[index]
    flipped = [not torch.equal(images.masks[k], plain_masks[k]) for k in range(len(images))]
    assert any(flipped) and not all(flipped)
    for k, f in enumerate(flipped):
        assert torch.equal(images.masks[k], plain_masks[k].flip(-1) if f else plain_masks[k])
        source = plain[k].flip(-1) if f else plain[k]
        # contrast jitter moves pixels but keeps the picture: correlation with its source stays high
        a, b = images.images[k].float().flatten(), source.float().flatten()
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9
    assert not torch.equal(images.images, plain)
    assert info["trained_on_evaluation_images"] == {"SEG": 16}


def test_diagnose_labels_every_output(seg, tmp_path):
    """diagnose under ``authors`` writes the label into table2.md, summary.md, table2.json and
    summary.json, and scores on the training images. Mutant: the label left out of the warnings -> fails."""
    from viny_probe.analysis.diagnose import diagnose

    out = tmp_path / "diag"
    figures = DiagnoseOptions(depth_probe_images=6, cka_images=6, fig6_images=1)
    summary = diagnose([seg], ["SEG"], out, figures=figures, **small("authors"))
    assert summary["eval_protocol"] == "authors"
    assert summary["data"][32]["test_images"] == 16
    for name in ("table2.md", "summary.md"):
        assert AUTHORS_LABEL in (out / name).read_text()
    for name in ("table2.json", "summary.json", "fig5_similarity_vs_distance.json"):
        assert AUTHORS_LABEL in json.loads((out / name).read_text())["warnings"]


def test_cli_option_and_choices(seg, tmp_path):
    """`viny probe --eval-protocol authors` reaches the library and the table says so; the CLI's choices
    are the library's."""
    assert tuple(p.value for p in EvalProtocol) == PROTOCOLS
    out = tmp_path / "probe.json"
    result = CliRunner().invoke(
        app, ["probe", str(seg), "--eval-protocol", "authors", "--no-knn", "--no-cache", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "training images, not held out" in " ".join(result.output.split())
    assert json.loads(out.read_text())["warnings"][0] == AUTHORS_LABEL
