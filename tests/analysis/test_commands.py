"""`viny probe`, `viny similarity-map`, `viny diagnose`, `viny import-checkpoint` end to end on a tiny
checkpoint, and the clear errors for bad input (through the library and through `main()`)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from viny_probe.analysis import within_image_variance
from viny_probe.analysis.authors import authors_name_map
from viny_probe.analysis.checkpoint_probe import probe_checkpoint
from viny_probe.analysis.diagnostics import KNN_BANK_PATCHES, KNN_K, KNN_TEST_IMAGES, PROBE_SEED
from viny_probe.analysis.embeddings import extract_patch_tokens, load_encoder
from viny_probe.analysis.evaluation_data import load_probe_data, patch_labels
from viny_probe.analysis.knn import knn_patch_accuracy
from viny_probe.analysis.options import DiagnoseOptions, EvalSet, ModelOptions, ProbeOptions
from viny_probe.analysis.probe import linear_patch_probe
from viny_probe.analysis.rank import effective_rank
from viny_probe.analysis.similarity_image import similarity_map_for_image
from viny_probe.checkpoint import save_checkpoint
from viny_probe.cli import app, main
from viny_probe.data.protocol import make_split
from viny_probe.errors import VinyError
from viny_probe.model import ViNy

SMALL = ["--probe-images", "48", "--test-images", "24", "-q"]
NO_KNN = ProbeOptions(knn=False)


def run_main(monkeypatch, capsys, *args) -> tuple[int, str]:
    """`viny ARGS` through main(): (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["viny", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


# --------------------------------------------------------------------------------------------- probe
def test_probe_json_is_well_formed_and_sane(tiny_ckpt):
    """The command's numbers are those computed here from the same images' tokens (replacing bounds that
    held for any input: ``0 <= acc <= 1``, ``1 <= effective_rank <= 32``). Mutants killed: the kNN
    scored on the pool tokens and labels instead of the test ones (diagnostics.knn); the effective rank
    measured on the pool tokens (``effective_rank(layer.train)``); checkpoint_probe pairing each test or
    pool image with the previous image's patch labels (``patch_labels(...).roll(1, 0)``, counts unchanged)."""
    result = CliRunner().invoke(app, ["probe", str(tiny_ckpt), "--json", *SMALL])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    m = data["layers"]["final"]
    # dataset, split seed and test size come from the checkpoint's lineage: its spatial stage trained
    # on toy-pets with an 8-image test set, so it is scored on those 8 images
    assert data["data"]["dataset"] == "toy-pets" and data["data"]["test_size"] == 8
    assert data["data"]["split_seed"] == 0 and "lineage" in data["data"]["chosen"][0]
    assert data["data"]["probe_patches"] == 48 * 64 and data["data"]["test_patches"] == 8 * 64
    assert m["probe"]["num_train_patches"] == 48 * 64 and m["probe"]["num_test_patches"] == 8 * 64
    assert data["warnings"] == []
    assert set(m["probe"]["per_class_accuracy"]) == {"pet", "background", "boundary"}
    assert m["within_image_variance"] > 0 and m["across_image_variance"] > 0
    assert m["within_across_ratio"] == pytest.approx(m["within_image_variance"] / m["across_image_variance"])

    train, test, _ = load_probe_data("toy-pets", 32, None, 0, 8, probe_images=48, test_images=24)
    emb = {
        k: extract_patch_tokens(tiny_ckpt, s, progress=False)["final"]
        for k, s in (("train", train), ("test", test))
    }
    labels = {k: patch_labels(s, 4) for k, s in (("train", train), ("test", test))}
    fit = linear_patch_probe(
        emb["train"], labels["train"], emb["test"], labels["test"], seed=PROBE_SEED, num_classes=3,
        backend="auto",
    )  # fmt: skip
    assert m["probe"]["test_accuracy"] == pytest.approx(fit.test_accuracy, abs=1e-9)
    assert m["probe"]["train_accuracy"] == pytest.approx(fit.train_accuracy, abs=1e-9)
    assert m["probe"]["chosen_C"] == fit.chosen_C
    near = knn_patch_accuracy(
        emb["train"], labels["train"], emb["test"][:KNN_TEST_IMAGES], labels["test"][:KNN_TEST_IMAGES],
        k=KNN_K, num_classes=3, max_train_patches=KNN_BANK_PATCHES, seed=PROBE_SEED,
    )  # fmt: skip
    assert m["knn"]["accuracy"] == pytest.approx(near.accuracy, abs=1e-9)
    assert m["effective_rank"] == pytest.approx(effective_rank(emb["test"]), rel=1e-6)


def test_probe_uses_the_training_protocol_and_never_fits_on_test_images(tiny_ckpt):
    train, test, info = load_probe_data("toy-pets", 32, probe_images=100, test_images=50)
    ids = [f"toy-pets-s0-{i:06d}" for i in range(3000)]
    split = make_split(ids, 1000, 0)
    assert info["images_in_dataset"] == 3000
    index = lambda ids: [int(i.rsplit("-", 1)[1]) for i in ids]  # noqa: E731  (toy-pets-s0-000017 -> 17)
    assert index(test.ids) == split.test[:50].tolist()
    assert index(train.ids) == split.pool[:100].tolist()
    assert not set(index(train.ids)) & set(split.test.tolist())

    # The variance in the result is the one of the test images' final tokens (the lineage's split:
    # split seed 0, test size 8).
    result = probe_checkpoint(
        tiny_ckpt, data=EvalSet(probe_images=20, test_images=10), probe=NO_KNN, progress=False
    )
    _, test10, _ = load_probe_data("toy-pets", 32, test_size=8, probe_images=20, test_images=10)
    tokens = extract_patch_tokens(tiny_ckpt, test10, progress=False)["final"]
    assert result["layers"]["final"]["within_image_variance"] == pytest.approx(within_image_variance(tokens))
    assert result["layers"]["final"]["knn"] is None


def test_probe_every_block_prints_a_row_per_block(tiny_ckpt):
    result = CliRunner().invoke(app, ["probe", str(tiny_ckpt), "--layer", "all", "--no-knn", *SMALL])
    assert result.exit_code == 0, result.output
    assert "block 1" in result.output and "block 2" in result.output
    data = probe_checkpoint(
        tiny_ckpt, data=EvalSet(probe_images=20, test_images=10), probe=NO_KNN, layer="all", progress=False
    )
    assert list(data["layers"]) == ["block 1", "block 2"]


def test_the_probe_backend_is_a_parameter_down_to_the_probe(tiny_ckpt, monkeypatch, capsys):
    """ProbeOptions.backend reaches linear_patch_probe through LayerTokens.probe_backend, from the library
    and from `viny probe --probe-backend` (no environment variable); an unknown name is one line before
    any work. Mutant applied once, failing this test: diagnostics._probe ignoring layer.probe_backend
    (auto: torch)."""
    from viny_probe.analysis.diagnostics import probe_per_block
    from viny_probe.analysis.registry import LayerTokens

    small = EvalSet(probe_images=20, test_images=10)
    for backend in ("torch", "sklearn"):
        result = probe_checkpoint(
            tiny_ckpt, data=small, probe=ProbeOptions(backend, knn=False), progress=False
        )
        assert result["layers"]["final"]["probe"]["backend"] == backend
    seen = []
    monkeypatch.setattr(
        "viny_probe.analysis.diagnostics.linear_patch_probe",
        lambda *a, backend, **k: seen.append(backend) or type("R", (), {"test_accuracy": 0.5})(),
    )
    layer = LayerTokens(torch.zeros(2, 4, 3), final={"probe": {"chosen_C": 1.0}}, probe_backend="torch")
    probe_per_block(layer)
    assert seen == ["torch"]  # the per-block probe too
    monkeypatch.undo()
    result = CliRunner().invoke(
        app, ["probe", str(tiny_ckpt), "--no-knn", "--probe-backend", "sklearn", "--json", *SMALL]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["layers"]["final"]["probe"]["backend"] == "sklearn"
    code, err = run_main(monkeypatch, capsys, "probe", tiny_ckpt, "--probe-backend", "jax", "-q")
    assert code == 2 and "--probe-backend must be one of auto, torch, sklearn, got 'jax'" in err


# ------------------------------------------------------------------------------------ similarity-map
def test_similarity_map_on_an_embedded_image_writes_all_references(tiny_ckpt, tmp_path):
    out = tmp_path / "map.png"
    result = CliRunner().invoke(app, ["similarity-map", str(tiny_ckpt), "toy-pets:3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    names = ("background", "foreground", "boundary")
    for path in [out, *(tmp_path / f"map-{n}.png" for n in names)]:
        assert path.is_file() and path.stat().st_size > 1000
        assert path.with_suffix(".json").is_file()
    grid = json.loads(out.with_suffix(".json").read_text())
    assert set(grid["refs"]) == set(names) and grid["vmin"] == -0.5 and grid["vmax"] == 1.0
    overlay = json.loads((tmp_path / "map-boundary.json").read_text())
    row, col = overlay["refs"]["boundary"]  # the shape of every similarity-map JSON: refs and maps by name
    assert overlay["maps"]["boundary"][row][col] == pytest.approx(1.0, abs=1e-5)


def test_similarity_map_on_any_image_file_with_patch_or_pixel(tiny_ckpt, tmp_path):
    picture = tmp_path / "odd.png"
    rgba = np.random.default_rng(0).integers(0, 255, (70, 50, 4), dtype=np.uint8)  # H 70, W 50, RGBA
    Image.fromarray(rgba, "RGBA").save(picture)
    out = tmp_path / "patch.png"
    result = CliRunner().invoke(
        app, ["similarity-map", str(tiny_ckpt), str(picture), "--patch", "2,5", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["refs"] == {"patch": [2, 5]} and np.array(data["maps"]["patch"]).shape == (8, 8)
    assert data["maps"]["patch"][2][5] == pytest.approx(1.0, abs=1e-5)
    # Pixel (69, 49) of the 70 x 50 original is the bottom-right patch of the resized input.
    res = similarity_map_for_image(tiny_ckpt, picture, pixel="69,49", out=tmp_path / "px.png")
    assert res["refs"] == {"pixel": [7, 7]}
    # No trimap and no reference: the default set.
    res = similarity_map_for_image(tiny_ckpt, picture, out=tmp_path / "default.png")
    assert set(res["refs"]) == {"centre", "top_left_corner"} and len(res["files"]) == 3


# -------------------------------------------------------------------------------------------- diagnose
def test_diagnose_writes_every_file(tiny_ckpt, fresh_ckpt, tmp_path):
    out = tmp_path / "diag"
    args = [
        "diagnose",
        str(tiny_ckpt),
        str(fresh_ckpt),
        str(tiny_ckpt),
        "--names",
        "Spatial",
        "Fresh",
        "Again",
        "-o",
        str(out),
        "--depth-probe-images",
        "16",
        "--cka-images",
        "12",
        "--fig6-images",
        "1",
        *SMALL,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for stem in (
        "table2",
        "fig5_similarity_vs_distance",
        "fig5_by_class",
        "fig6_reference_patches",
        "depth_curves",
        "cka",
    ):
        if stem != "table2":
            assert (out / f"{stem}.png").stat().st_size > 1000
        json.loads((out / f"{stem}.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    md = (out / "summary.md").read_text()
    for link in (
        "table2.md",
        "fig5_similarity_vs_distance.png",
        "fig6_reference_patches.png",
        "depth_curves.png",
        "cka.png",
    ):
        assert f"({link})" in md
    assert [r["checkpoint"] for r in summary["table2"]] == ["Spatial", "Fresh", "Again"]
    assert "| Spatial |" in (out / "table2.md").read_text()
    # Same checkpoint, same images: identical numbers; CKA of a checkpoint with itself is 1 on the diagonal.
    assert summary["table2"][0] == {**summary["table2"][2], "checkpoint": "Spatial"}
    pairs = {tuple(p["names"]): p for p in summary["cka"]}
    assert set(pairs) == {("Spatial", "Fresh"), ("Spatial", "Again"), ("Fresh", "Again")}
    assert pairs["Spatial", "Again"]["diagonal"] == pytest.approx([1.0, 1.0])
    assert pairs["Spatial", "Fresh"]["diagonal"][1] < 0.999
    per_block = summary["per_block"]["Fresh"]
    assert per_block["probe_accuracy"][0] is None and len(per_block["probe_accuracy"]) == 3  # blocks 1..2
    fig6 = json.loads((out / "fig6_reference_patches.json").read_text())
    assert list(fig6["maps"]) == ["Spatial", "Fresh", "Again"] and len(fig6["refs"]) == 3
    curves = json.loads((out / "fig5_similarity_vs_distance.json").read_text())["curves"]
    assert curves["Fresh"]["distances"] == list(range(0, 15))  # from distance 0 (cosine 1), as the study
    assert curves["Fresh"]["mean"][0] == 1.0
    several = json.loads((out / "fig6_images.json").read_text())  # viny's several-images layout, kept
    assert list(several["maps"]) == ["Spatial", "Fresh", "Again"] and len(several["refs"]) == 3
    assert fig6["encoders"] == ["Spatial", "Fresh", "Again"] and fig6["panels"][1]["shows"] == "target"


def test_diagnose_names_must_match_the_checkpoints(tiny_ckpt, tmp_path):
    with pytest.raises(VinyError, match="2 names for 1 checkpoints"):
        CliRunner().invoke(
            app, ["diagnose", str(tiny_ckpt), "--names", "A,B", "-o", str(tmp_path)], catch_exceptions=False
        )


# ----------------------------------------------------------------------------------- import-checkpoint
def test_import_checkpoint_and_authors_file_accepted_directly(tmp_path):
    torch.manual_seed(2)
    model = ViNy("tiny").eval()
    ours = model.state_dict()
    theirs = {a: ours[v].clone() for a, v in authors_name_map(model.cfg.depth).items()}
    src, dst = tmp_path / "authors.pth", tmp_path / "imported.pt"
    torch.save(theirs, src)
    result = CliRunner().invoke(app, ["import-checkpoint", str(src), str(dst), "--heads", "2"])
    assert result.exit_code == 0, result.output
    imported, meta = load_encoder(dst)
    assert meta["regime"] == "imported" and imported.cfg == model.cfg
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(imported(x), model(x))
    # Analysis commands take the authors' file as is, with its head count after a comma.
    res = similarity_map_for_image(f"{src},heads=2", "toy-pets:0", patch="1,1", out=tmp_path / "a.png")
    assert res["refs"] == {"patch": [1, 1]}


# --------------------------------------------------------------------------------------- bad input
def test_non_image_file_is_a_clear_error(tiny_ckpt, tmp_path, monkeypatch, capsys):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    code, err = run_main(monkeypatch, capsys, "similarity-map", tiny_ckpt, bogus, "-o", tmp_path / "x.png")
    assert code == 2 and "error:" in err and "cannot read image file" in err and "Traceback" not in err
    assert "dataset loaders" not in err and "on-error" not in err  # one image: no advice for datasets


def test_checkpoint_of_another_architecture_is_a_clear_error(tmp_path, monkeypatch, capsys):
    other = tmp_path / "resnet.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 2)).state_dict(), other)
    code, err = run_main(monkeypatch, capsys, "probe", other, "-q")
    assert code == 2 and "expected either a viny checkpoint" in err and "Traceback" not in err
    # A viny checkpoint whose weights do not fit its model config names the keys.
    bad = tmp_path / "bad.pt"
    state = ViNy("tiny").state_dict()
    state.pop("norm.weight")
    save_checkpoint(bad, {"regime": "x", "model_config": ViNy("tiny").cfg.to_dict(), "encoder": state})
    with pytest.raises(VinyError, match="norm.weight"):
        similarity_map_for_image(bad, "toy-pets:0", out=tmp_path / "b.png")


def test_layer_out_of_range_is_a_clear_error(tiny_ckpt, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "probe", tiny_ckpt, "--layer", "5", "-q")
    assert code == 2 and "layer 5 is out of range" in err and "1..2" in err
    with pytest.raises(VinyError, match="out of range"):
        probe_checkpoint(tiny_ckpt, layer=0, progress=False)
    with pytest.raises(VinyError, match="--layer must be"):
        probe_checkpoint(tiny_ckpt, layer="last", progress=False)


def test_dataset_without_trimaps_is_a_clear_error(tiny_ckpt, tmp_path, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "probe", tiny_ckpt, "--dataset", "toy-scenes", "-q")
    # the CLI offers only the datasets with masks (a registry-driven choice); the library says why
    assert code == 2 and "'toy-scenes' is not one of" in err and "toy-pets" in err
    with pytest.raises(VinyError, match="has no masks"):
        from viny_probe.analysis.diagnose import diagnose

        diagnose([tiny_ckpt], out_dir=tmp_path, data=EvalSet(dataset="intel"))
    with pytest.raises(VinyError, match="test split .* holds"):
        similarity_map_for_image(tiny_ckpt, "toy-pets:5000", out=tmp_path / "y.png")


# ------------------------------------------------------------------------- evaluation-set guard
def test_an_evaluation_set_the_lineage_trained_on_is_refused_and_allow_overlap_stamps_every_output(
    tiny_ckpt, tmp_path
):
    """The checkpoint's spatial stage trained on 16 toy-pets pool images of the 8-image-test split; a
    1000-image test set of the same split seed contains them. Refused, naming the count; with
    --allow-overlap every output carries the warning. Mutant: the guard comparing against the test
    ids of the training split (no overlap found), or dropping the stamp."""
    overlapping = EvalSet(test_size=1000, probe_images=20, test_images=1000)
    with pytest.raises(VinyError, match="16 of the 1000 evaluation images"):
        probe_checkpoint(tiny_ckpt, data=overlapping, probe=NO_KNN, progress=False)
    result = probe_checkpoint(
        tiny_ckpt, data=replace(overlapping, allow_overlap=True), probe=NO_KNN, progress=False
    )
    assert len(result["warnings"]) == 1 and "16 of the 1000" in result["warnings"][0]
    # another split seed puts the 16 training images anywhere: the overlap is then what it is, and
    # the default (the lineage's own split) never overlaps
    assert (
        probe_checkpoint(
            tiny_ckpt, data=EvalSet(probe_images=20, test_images=8), probe=NO_KNN, progress=False
        )["warnings"]
        == []
    )

    from viny_probe.analysis.diagnose import diagnose

    out = tmp_path / "diag"
    small = dict(out_dir=out, probe=NO_KNN, progress=False)
    small.update(figures=DiagnoseOptions(depth_probe_images=8, cka_images=8, fig6_images=1))
    with pytest.raises(VinyError, match="--allow-overlap"):
        diagnose([tiny_ckpt], data=overlapping, **small)
    summary = diagnose([tiny_ckpt], data=replace(overlapping, allow_overlap=True), **small)
    assert summary["warnings"]
    for md in out.glob("*.md"):
        assert md.read_text().startswith("> **WARNING:**"), md
    for js in out.glob("*.json"):
        assert json.loads(js.read_text())["warnings"] == summary["warnings"], js
    for png in out.glob("*.png"):
        with Image.open(png) as im:  # the red banner on top
            assert im.convert("RGB").getpixel((2, 2)) == (200, 30, 30), png


def test_similarity_map_refuses_an_embedded_image_the_lineage_trained_on(tiny_ckpt, tmp_path):
    """DATASET:INDEX goes through the same guard: an image of the 1000-image test split that the
    spatial stage trained on is refused, and --allow-overlap stamps the map. Mutant: load_images_for
    skipping the guard."""
    from viny_probe.checkpoint import load_checkpoint
    from viny_probe.data import load_dataset

    trained = set(load_checkpoint(tiny_ckpt)["trained_on"]["ids"])
    full = load_dataset("toy-pets", size=32, limit=3000, seed=0)
    test = make_split(full.ids, 1000, 0).test.tolist()
    index = next(k for k, i in enumerate(test) if full.ids[i] in trained)
    with pytest.raises(VinyError, match="1 of the 1 evaluation images"):
        similarity_map_for_image(
            tiny_ckpt, f"toy-pets:{index}", out=tmp_path / "m.png", data=EvalSet(test_size=1000)
        )
    res = similarity_map_for_image(
        tiny_ckpt,
        f"toy-pets:{index}",
        out=tmp_path / "m.png",
        data=EvalSet(test_size=1000, allow_overlap=True),
    )
    assert len(res["warnings"]) == 1
    assert json.loads((tmp_path / "m.json").read_text())["warnings"] == res["warnings"]


def test_diagnose_draws_pca_rgb_and_embeds_the_explorer_from_the_tokens_it_measured(
    tiny_ckpt, fresh_ckpt, tmp_path
):
    """pca_rgb.json holds pca_rgb() of each model's final-block tokens over ALL test images (first 4
    shown); explorer.html holds, for each model in order, the int8 tokens of the first 8 test images at
    every block, equal to quantise() of tokens extracted afresh from the same images and block.
    Mutants watched failing: the explorer fed block b - 1's tokens for block b (block 1's for blocks 1
    and 2); PCA fitted over the shown 4 images only."""
    from viny_probe.analysis.diagnose import diagnose
    from viny_probe.analysis.embeddings import extract_patch_tokens
    from viny_probe.analysis.evaluation_data import load_probe_data
    from viny_probe.analysis.explore import decode_tokens, quantise, read_page_data
    from viny_probe.analysis.pca import pca_rgb
    from viny_probe.analysis.sources import load_model

    out = tmp_path / "diag"
    summary = diagnose(
        [tiny_ckpt, fresh_ckpt], ["Spatial", "Fresh"], out, model=ModelOptions(use_cache=False),
        data=EvalSet(probe_images=48, test_images=24),
        figures=DiagnoseOptions(depth_probe_images=16, cka_images=12, fig6_images=1), progress=False,
    )  # fmt: skip
    assert summary["files"]["pca_rgb"] == "pca_rgb.png" and summary["files"]["explorer"] == "explorer.html"
    assert "(explorer.html)" in (out / "summary.md").read_text()
    where = summary["data"][32]
    _, test_set, _ = load_probe_data(
        where["dataset"], 32, None, where["split_seed"], where["test_size"], 48, 24
    )
    page = read_page_data(out / "explorer.html")
    assert [m["name"] for m in page["models"]] == ["Spatial", "Fresh"]
    assert len(page["images"]) == 8
    pca = json.loads((out / "pca_rgb.json").read_text())
    for entry, ckpt, name in zip(page["models"], (tiny_ckpt, fresh_ckpt), ("Spatial", "Fresh"), strict=True):
        model = load_model(ckpt)
        tokens = extract_patch_tokens(model, test_set, "all", use_cache=False, progress=False)
        for block in (1, 2):
            assert torch.equal(decode_tokens(entry, block, 8), quantise(tokens[block][:8]))
        colours, _ = pca_rgb(tokens[2])
        drawn = torch.tensor(pca["colours"][name])  # (4, g, g, 3)
        assert torch.allclose(drawn.reshape(4, -1, 3), colours[:4], atol=1e-6)


def test_a_pixel_of_a_non_square_image_maps_to_its_own_patch():
    """`similarity-map --pixel Y,X` on a 70 x 50 (H x W) original, input 32 px on an 8 x 8 grid: y scales
    by 32/70 and x by 32/50, each into its own axis. Replaces a check at the corner pixel (69, 49), whose
    patch (7, 7) is the same with y and x swapped. Mutants watched failing: y and x swapped; both
    scaled by the height."""
    from types import SimpleNamespace

    from viny_probe.analysis.similarity_image import _pixel_patch

    cfg = SimpleNamespace(image_size=32, patch_size=4)
    cases = {(69, 0): (7, 0), (0, 49): (0, 7), (35, 40): (4, 6), (10, 30): (1, 4)}
    for pixel, patch in cases.items():
        assert tuple(_pixel_patch(pixel, (70, 50), cfg)) == patch, pixel
    with pytest.raises(VinyError, match="outside the 70x50 image"):
        _pixel_patch((10, 50), (70, 50), cfg)
