"""Any vision transformer as a model source: timm (with CLS, with registers), a Hugging Face folder, a
``py:`` callable. Every model here is a random-init tiny one built or saved in a temp folder: nothing
is downloaded. The tokens viny extracts must equal the model's own intermediate outputs; the commands
must write their outputs for it; bad input is a one-line error."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch
from typer.testing import CliRunner

from viny_probe.analysis.checkpoint_probe import probe_checkpoint
from viny_probe.analysis.embeddings import extract_patch_tokens
from viny_probe.analysis.options import DiagnoseOptions, EvalSet, ModelOptions, ProbeOptions
from viny_probe.analysis.sources import MODEL_SOURCES, TokenModel, load_model, parse_model_spec
from viny_probe.checkpoint import save_checkpoint
from viny_probe.cli import app, main
from viny_probe.errors import VinyError
from viny_probe.model import ViNy, ViTConfig

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")

TINY = "img_size=64,patch_size=8,depth=2,embed_dim=32,num_heads=2,pretrained=false"
TIMM_CLS = f"timm:vit_tiny_patch16_224,{TINY}"  # 1 prefix token (CLS), 8 x 8 grid
TIMM_REG = f"timm:vit_tiny_patch16_224,{TINY},reg_tokens=4"  # CLS + 4 registers
SMALL = ["--dataset", "toy-pets", "--probe-images", "24", "--test-images", "12", "-q"]

PY_MODEL = '''
import torch
from torch import nn

from viny_probe.analysis.sources import TokenModel


class TinyViT(nn.Module):
    """Conv patches, a CLS token, pre-norm torch encoder layers, a final LayerNorm."""

    def __init__(self, image_size=64, patch=8, dim=32, depth=2):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + (image_size // patch) ** 2, dim))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, 2, 64, dropout=0.0, batch_first=True, norm_first=True)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def embed(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos

    def forward_features(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


def build(image_size=64):
    torch.manual_seed(0)
    module = TinyViT(image_size).eval()
    return TokenModel.from_blocks(
        module, module.blocks, module.forward_features, prefix_tokens=1, dim=32, patch_size=8,
        image_size=image_size, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
    )


def not_a_token_model():
    return nn.Linear(3, 3)
'''


def run_main(monkeypatch, capsys, *args) -> tuple[int, str]:
    """`viny ARGS` through main(): (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["viny", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A tiny random-init ViTModel (64 px, 8 px patches, 2 layers) with a preprocessor config whose
    mean/std (0.5 / 0.25) differ from ImageNet's, saved with save_pretrained."""
    cfg = transformers.ViTConfig(
        image_size=64,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
    )
    torch.manual_seed(3)
    folder = tmp_path_factory.mktemp("hf-vit")
    transformers.utils.logging.disable_progress_bar()
    transformers.ViTModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "ViTImageProcessor",
                "do_normalize": True,
                "image_mean": [0.5] * 3,
                "image_std": [0.25] * 3,
                "size": {"height": 64, "width": 64},
            }
        )
    )
    return folder


@pytest.fixture(scope="module")
def py_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("py-model") / "tiny_vit.py"
    path.write_text(PY_MODEL)
    return path


@pytest.fixture(scope="module")
def viny64(tmp_path_factory):
    """An untrained viny checkpoint on the same 64 px / 8 px grid as the timm and hf models."""
    torch.manual_seed(4)
    model = ViNy(ViTConfig(image_size=64, patch_size=8, dim=32, depth=2, heads=2, dim_head=16, mlp_dim=64))
    path = tmp_path_factory.mktemp("viny64") / "fresh64.pt"
    save_checkpoint(
        path, {"regime": "fresh", "model_config": model.cfg.to_dict(), "encoder": model.state_dict()}
    )
    return path


def pixels(n=3, size=64, seed=0) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def normalised(images, mean, std) -> torch.Tensor:
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (images.float() / 255 - m) / s


def extract_all(model, images, **kw):
    return extract_patch_tokens(model, images, "all", use_cache=False, progress=False, device="cpu", **kw)


# ---------------------------------------------------------------------------- tokens = the model's own
@pytest.mark.parametrize("spec, prefix", [(TIMM_CLS, 1), (TIMM_REG, 5)])
def test_timm_tokens_equal_forward_intermediates(spec, prefix):
    """Blocks 1..depth-1 equal timm's forward_intermediates (NLC, prefix dropped by timm), the last its
    output with the final norm. Mutants, each watched failing once: base.patch_part returning
    ``x[:, prefix - 1 : -1]`` (CLS kept, last patch lost: the values differ); timm_models passing
    ``prefix_tokens=1`` for the register model (4 registers kept: refused by the token count)."""
    model = load_model(spec)
    assert model.prefix_tokens == prefix and model.grid == 8 and model.depth == 2 and model.dim == 32
    data = timm.data.resolve_data_config({}, model=model.module)
    assert model.mean == tuple(data["mean"]) and model.std == tuple(data["std"])
    images = pixels()
    got = extract_all(model, images)
    with torch.no_grad():
        x = normalised(images, data["mean"], data["std"])
        raw = model.module.forward_intermediates(x, indices=[0], output_fmt="NLC", intermediates_only=True)
        normed = model.module.forward_intermediates(
            x, indices=[1], norm=True, output_fmt="NLC", intermediates_only=True
        )
    torch.testing.assert_close(got[1], raw[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[2], normed[0], atol=1e-5, rtol=0)
    # the same string builds the same random-init weights (seed 0): the same cache entry next time
    assert load_model(spec).digest() == model.digest()
    # --img-size is timm's img_size=: 56 px -> a 7 x 7 grid
    assert load_model(spec.replace("img_size=64,", ""), image_size=56).grid == 7


def test_hf_tokens_equal_hidden_states_with_the_folders_mean_and_std(hf_folder):
    """Block b < depth = hidden_states[b], block depth = last_hidden_state, CLS (1 for ViT) dropped,
    pixels normalised with preprocessor_config.json's mean/std. Mutants watched failing once:
    hf_models.PREFIX_TOKENS['vit'] = 2 (one token too many dropped: refused by the token count);
    _normalisation ignoring the preprocessor config (ImageNet's mean/std: the values differ)."""
    model = load_model(f"hf:{hf_folder}")
    assert (model.prefix_tokens, model.grid, model.depth, model.dim) == (1, 8, 2, 32)
    assert model.mean == (0.5, 0.5, 0.5) and model.std == (0.25, 0.25, 0.25)
    reference = transformers.ViTModel.from_pretrained(hf_folder, local_files_only=True).eval()
    images = pixels(seed=1)
    got = extract_all(model, images, batch_size=2)
    with torch.no_grad():
        out = reference(pixel_values=normalised(images, [0.5] * 3, [0.25] * 3), output_hidden_states=True)
    torch.testing.assert_close(got[1], out.hidden_states[1][:, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[2], out.last_hidden_state[:, 1:], atol=1e-5, rtol=0)
    # --img-size 56: a 7 x 7 grid through HF's own interpolated position embeddings
    small = load_model(f"hf:{hf_folder}", image_size=56)
    assert small.grid == 7 and any("interpolated" in n for n in small.notes)
    got = extract_all(small, pixels(2, size=56, seed=6))
    with torch.no_grad():
        out = reference(
            pixel_values=normalised(pixels(2, size=56, seed=6), [0.5] * 3, [0.25] * 3),
            output_hidden_states=True,
            interpolate_pos_encoding=True,
        )
    torch.testing.assert_close(got[2], out.last_hidden_state[:, 1:], atol=1e-5, rtol=0)


def test_py_callable_tokens_equal_its_blocks(py_file):
    """``py:FILE:build`` -> TokenModel.from_blocks: block outputs with the CLS dropped, the last after
    the final norm, the callable's own mean/std. Mutant watched failing once: hooked_tokens hooking the
    last block too and keeping its raw output instead of forward()'s normed one."""
    model = load_model(f"py:{py_file}:build")
    assert model.name == "build" and model.source == f"py:{py_file}:build"
    images = pixels(seed=2)
    got = extract_all(model, images)
    module = model.module
    with torch.no_grad():
        x = module.embed(normalised(images, [0.5] * 3, [0.25] * 3))
        first = module.blocks[0](x)
        last = module.norm(module.blocks[1](first))
    torch.testing.assert_close(got[1], first[:, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(got[2], last[:, 1:], atol=1e-5, rtol=0)
    # --img-size reaches a callable that takes image_size: a 7 x 7 grid
    assert load_model(f"py:{py_file}:build", image_size=56).grid == 7


def test_mean_std_overrides_and_the_cache_key_holds_the_weights(tmp_path):
    """--mean/--std replace the model's own; new weights in the same --weights file never read the cache
    entry of the old ones. Mutant watched failing once: TokenModel.identity() without "weights" (the
    second extraction returned the first weights' cached tokens)."""
    from safetensors.torch import save_file

    def tiny(seed):
        torch.manual_seed(seed)
        return timm.create_model(
            "vit_tiny_patch16_224",
            pretrained=False,
            img_size=64,
            patch_size=8,
            depth=2,
            embed_dim=32,
            num_heads=2,
        ).state_dict()

    images = pixels(2, seed=5)
    path = tmp_path / "weights.safetensors"
    kw = dict(use_cache=True, cache_dir=tmp_path / "cache", progress=False, device="cpu")
    save_file(tiny(1), path)
    first = load_model(TIMM_CLS, weights=path)
    before = extract_patch_tokens(first, images, **kw)["final"]
    save_file(tiny(2), path)  # the same file name, other weights
    second = load_model(TIMM_CLS, weights=path)
    assert second.digest() != first.digest()
    after = extract_patch_tokens(second, images, **kw)["final"]
    assert not torch.allclose(before, after)
    torch.testing.assert_close(
        after, extract_patch_tokens(second, images, **{**kw, "use_cache": False})["final"]
    )
    shifted = load_model(TIMM_CLS, mean=(0.2, 0.2, 0.2), std=(0.3, 0.3, 0.3))
    assert shifted.mean == (0.2, 0.2, 0.2) and any("as given" in n for n in shifted.notes)
    random_init = extract_patch_tokens(load_model(TIMM_CLS), images, **kw)["final"]
    assert not torch.allclose(extract_patch_tokens(shifted, images, **kw)["final"], random_init)


def test_weights_saved_at_another_grid_get_their_position_embeddings_resampled(tmp_path):
    """A --weights file saved for a 64-px model (8 x 8 grid, CLS + 2 registers) loads at its own size
    unchanged and at --img-size 32 (4 x 4) with pos_embed resampled over the grid: the prefix rows kept,
    the grid rows equal to a bicubic resize of the saved 8 x 8 grid, a row-index ramp still constant
    along each row, and a note plus a warning saying so. Mutants: no resample (the strict load refuses
    the 67-row pos_embed); the grid transposed before or after resizing (the row ramp runs along the
    columns)."""
    from safetensors.torch import save_file

    spec = "timm:vit_tiny_patch16_224,patch_size=8,depth=2,embed_dim=32,num_heads=2,reg_tokens=2"
    torch.manual_seed(3)
    saved_model = timm.create_model(
        spec[5:].split(",")[0],
        pretrained=False,
        img_size=64,
        **{"patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2, "reg_tokens": 2},
    )
    state = {k: v.clone().contiguous() for k, v in saved_model.state_dict().items()}
    prefix = saved_model.num_prefix_tokens  # 3: CLS + 2 registers, each with a position
    assert state["pos_embed"].shape == (1, prefix + 64, 32)
    grid = state["pos_embed"][0, prefix:].reshape(8, 8, 32)
    grid[:, :, 0] = torch.arange(8.0)[:, None]  # channel 0: the row index; channel 1: the column
    grid[:, :, 1] = torch.arange(8.0)[None, :]
    path = tmp_path / "w64.safetensors"
    save_file(state, path)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        same = load_model(spec, weights=path, image_size=64)  # the weights' own size: nothing resampled
    assert not [w for w in caught if "resampled" in str(w.message)]
    assert not any("resampled" in n for n in same.notes)
    torch.testing.assert_close(same.module.pos_embed, state["pos_embed"], rtol=0, atol=0)
    images = pixels(2, seed=4)
    saved_model.load_state_dict(state)
    own = saved_model.eval().forward_features(normalised(images, same.mean, same.std))[:, prefix:]
    torch.testing.assert_close(extract_patch_tokens(same, images, progress=False)["final"], own)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = load_model(spec, weights=path, image_size=32)
    said = "pos_embed resampled from the weights' 8 x 8 grid to 4 x 4"
    assert any(said in str(w.message) for w in caught) and any(said in n for n in small.notes)
    pos = small.module.pos_embed.detach()
    assert small.grid == 4 and pos.shape == (1, prefix + 16, 32)
    torch.testing.assert_close(pos[0, :prefix], state["pos_embed"][0, :prefix], rtol=0, atol=0)
    want = (
        torch.nn.functional.interpolate(
            state["pos_embed"][0, prefix:].reshape(1, 8, 8, 32).permute(0, 3, 1, 2),
            size=(4, 4),
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )
        .permute(0, 2, 3, 1)
        .reshape(16, 32)
    )
    torch.testing.assert_close(pos[0, prefix:], want)
    rows, cols = pos[0, prefix:, 0].reshape(4, 4), pos[0, prefix:, 1].reshape(4, 4)
    assert torch.allclose(rows, rows[:, :1].expand(4, 4)) and (rows[1:, 0] > rows[:-1, 0]).all()
    assert torch.allclose(cols, cols[:1].expand(4, 4)) and (cols[0, 1:] > cols[0, :-1]).all()
    assert extract_patch_tokens(small, pixels(2, size=32), progress=False)["final"].shape == (2, 16, 32)


# ---------------------------------------------------------------------------------------- commands
def test_probe_writes_its_table_for_timm_hf_and_py(hf_folder, py_file, tmp_path):
    """Each model's probe test accuracy is the one fitted here on its own tokens of the same images,
    labelled on its 8 x 8 grid (replacing ``0 <= accuracy <= 1``). Mutants killed: checkpoint_probe
    pairing each test image with the previous image's patch labels (``patch_labels(...).roll(1, 0)``);
    diagnostics.probe splitting off other validation images (``seed=layer.seed + 1``)."""
    from viny_probe.analysis.diagnostics import PROBE_SEED
    from viny_probe.analysis.evaluation_data import load_probe_data, patch_labels
    from viny_probe.analysis.probe import linear_patch_probe

    for spec in (TIMM_REG, f"hf:{hf_folder}", f"py:{py_file}:build"):
        result = CliRunner().invoke(
            app, ["probe", spec, "--json", "--device", "cpu", "--batch-size", "7", *SMALL]
        )
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["model"]["grid"] == [8, 8] and data["data"]["image_size"] == 64
        assert data["data"]["probe_patches"] == 24 * 64 and data["data"]["probe_subsample"] is None
        where = data["data"]
        train, test, _ = load_probe_data(
            where["dataset"], 64, None, where["split_seed"], where["test_size"], 24, 12
        )
        emb = [extract_all(load_model(spec), s, batch_size=7)[2] for s in (train, test)]
        fit = linear_patch_probe(
            emb[0], patch_labels(train, 8), emb[1], patch_labels(test, 8), seed=PROBE_SEED, num_classes=3,
            backend="auto",
        )  # fmt: skip
        assert data["layers"]["final"]["probe"]["test_accuracy"] == pytest.approx(fit.test_accuracy, abs=1e-9)
        assert any("not checked" in line for line in data["data"]["chosen"])
    table = CliRunner().invoke(app, ["probe", TIMM_CLS, "--layer", "all", "--no-knn", *SMALL])
    assert (
        table.exit_code == 0
        and "(8 x 8 patches)" in " ".join(table.output.split())
        and "block 2" in table.output
    )


def test_diagnose_timm_hf_and_viny_together_on_one_grid(hf_folder, viny64, tmp_path):
    out = tmp_path / "diag"
    args = [
        "diagnose",
        TIMM_CLS,
        f"hf:{hf_folder}",
        str(viny64),
        "-o",
        str(out),
        "--depth-probe-images",
        "8",
        "--cka-images",
        "6",
        "--fig6-images",
        "1",
        "--device",
        "cpu",
        *SMALL,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    names = [c["name"] for c in summary["checkpoints"]]
    assert names == ["vit_tiny_patch16_224", "hf-vit0", "fresh64"]
    assert [c["model"]["grid"] for c in summary["checkpoints"]] == [[8, 8]] * 3
    assert {tuple(m["names"]) for m in summary["cka"]} == {
        (names[0], names[1]),
        (names[0], names[2]),
        (names[1], names[2]),
    }
    assert summary["notes"] == []
    for stem in ("fig5_similarity_vs_distance", "fig6_reference_patches", "depth_curves", "cka"):
        assert (out / f"{stem}.png").stat().st_size > 1000
    assert "| vit_tiny_patch16_224 |" in (out / "table2.md").read_text()
    assert json.loads((out / "fig5_similarity_vs_distance.json").read_text())["curves"]["fresh64"][
        "distances"
    ] == list(range(0, 15))


def test_diagnose_on_7x7_and_12x12_grids(tmp_path, capsys):
    """Labels, distances 1..2(g-1), reference patches, maps and per-block curves on each model's own
    grid; CKA across the two grids is skipped with a note; the Fig 6 references of the second grid are
    chosen on that grid. Mutant watched failing once: _fig6_maps reusing the first grid's references
    (the 12 x 12 maps then marked the 7 x 7 positions: map_refs missing from the JSON). Mutant killed
    (#22, replacing ``0 <= v < 12``): _fig6_maps choosing the second grid's references on the previous
    test image's trimap (``test_set.masks[index - 1]``)."""
    from viny_probe.analysis.diagnose import diagnose
    from viny_probe.analysis.evaluation_data import load_probe_data
    from viny_probe.analysis.reference import choose_reference_patches

    seven = (
        "timm:vit_tiny_patch16_224,img_size=56,patch_size=8,depth=2,embed_dim=32,num_heads=2,pretrained=false"
    )
    twelve = (
        "timm:vit_tiny_patch16_224,img_size=48,patch_size=4,depth=3,embed_dim=32,num_heads=2,pretrained=false"
    )
    out = tmp_path / "grids"
    summary = diagnose(
        [seven, twelve],
        ["seven", "twelve"],
        out,
        model=ModelOptions(device="cpu"),
        data=EvalSet(dataset="toy-pets", probe_images=16, test_images=8),
        figures=DiagnoseOptions(depth_probe_images=8, cka_images=4, fig6_images=1),
        progress=False,
    )
    curves = json.loads((out / "fig5_similarity_vs_distance.json").read_text())["curves"]
    assert curves["seven"]["distances"] == list(range(0, 13)) and curves["twelve"]["distances"] == list(
        range(0, 23)
    )
    assert summary["data"][56]["test_patches"] == 8 * 49 and summary["data"][48]["test_patches"] == 8 * 144
    assert (
        len(summary["per_block"]["seven"]["probe_accuracy"]) == 3
        and len(summary["per_block"]["twelve"]["within_image_variance"]) == 4
    )
    fig6 = json.loads((out / "fig6_reference_patches.json").read_text())
    row = next(iter(fig6["refs"]))
    assert len(fig6["maps"]["seven"][row]) == 7 and len(fig6["maps"]["twelve"][row]) == 12
    # the second grid's references: the study's choice on the same test image's trimap at 48 px, 4 px patches
    index = summary["settings"]["fig6_images"][0]["test_index"]
    where = summary["data"][48]
    _, test48, _ = load_probe_data("toy-pets", 48, None, where["split_seed"], where["test_size"], 16, 8)
    chosen = choose_reference_patches(test48.masks[index], 4)
    assert fig6["map_refs"]["twelve"] == {k: list(v) for k, v in chosen.items()}
    assert summary["cka"] == [] and "cka" not in summary["files"]
    assert any(
        "CKA seven vs twelve skipped" in n and "7 x 7" in n and "12 x 12" in n for n in summary["notes"]
    )
    assert "CKA seven vs twelve skipped" in (out / "summary.md").read_text()


def test_memory_bounds_are_seeded_subsamples_and_say_so(monkeypatch):
    """With the bounds made small: the probe is fitted on a seeded per-image patch subsample (written
    into the result), several layers are measured one at a time with the same numbers. Mutant watched
    failing once: checkpoint_probe labelling the pool's full grid (patch_labels without keep)."""
    from viny_probe.analysis import checkpoint_probe, evaluation_data

    data = EvalSet(dataset="toy-pets", probe_images=16, test_images=8)
    kw = dict(data=data, probe=ProbeOptions(knn=False), layer="all", progress=False)
    whole = probe_checkpoint(TIMM_CLS, **kw)
    monkeypatch.setattr(checkpoint_probe, "LAYERS_MAX_VALUES", 1)
    one_at_a_time = probe_checkpoint(TIMM_CLS, **kw)
    assert whole["data"]["layers_at_once"] == "all" and one_at_a_time["data"]["layers_at_once"] == 1
    assert (
        one_at_a_time["layers"]["block 1"]["within_image_variance"]
        == whole["layers"]["block 1"]["within_image_variance"]
    )
    monkeypatch.setattr(evaluation_data, "PROBE_MAX_VALUES", 16 * 10 * 32)
    cut = probe_checkpoint(TIMM_CLS, **{**kw, "layer": "final"})
    note = cut["data"]["probe_subsample"]
    assert note["patches_per_image"] == 10 and note["of_patches"] == 64 and note["seed"] == 0
    assert (
        cut["data"]["probe_patches"] == 16 * 10
        and cut["layers"]["final"]["probe"]["num_train_patches"] == 160
    )
    keep = evaluation_data.patch_subsample(16, 64, 32, 16 * 10 * 32)
    assert torch.equal(keep, evaluation_data.patch_subsample(16, 64, 32, 16 * 10 * 32))
    assert all(len(set(row.tolist())) == 10 for row in keep)


def test_similarity_map_for_an_hf_model(hf_folder, tmp_path):
    out = tmp_path / "map.png"
    result = CliRunner().invoke(
        app, ["similarity-map", f"hf:{hf_folder}", "toy-pets:3", "--patch", "7,7", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data["maps"]["patch"]) == 8 and data["maps"]["patch"][7][7] == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------- bad input
def bad(monkeypatch, capsys, *args) -> str:
    code, err = run_main(monkeypatch, capsys, *args)
    assert code == 2 and err.startswith("error:") and "Traceback" not in err, err
    return " ".join(err.split())


def test_bad_models_are_one_line_errors(monkeypatch, capsys, tmp_path):
    err = bad(monkeypatch, capsys, "probe", "timm:vit_tiny_patch16_2244", "-q")
    assert (
        "timm has no model named 'vit_tiny_patch16_2244'" in err
        and "did you mean vit_tiny_patch16_224" in err
    )
    other = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=64,
        patch_size=8,
        depth=3,
        embed_dim=32,
        num_heads=2,
    )
    torch.save(other.state_dict(), tmp_path / "depth3.pth")
    err = bad(monkeypatch, capsys, "probe", TIMM_CLS, "--weights", tmp_path / "depth3.pth", "-q")
    assert "does not match the model architecture" in err and "unexpected keys ['blocks.2." in err
    err = bad(monkeypatch, capsys, "probe", TIMM_CLS, "--weights", tmp_path / "missing.safetensors", "-q")
    assert "weights file not found" in err
    (tmp_path / "empty").mkdir()
    err = bad(monkeypatch, capsys, "probe", f"hf:{tmp_path / 'empty'}", "-q")
    assert "has no config.json" in err and "save_pretrained" in err
    err = bad(monkeypatch, capsys, "probe", "timm:resnet18,pretrained=false", "-q")
    assert "has no patch grid" in err
    wide = tmp_path / "wide"
    transformers.ViTModel(
        transformers.ViTConfig(
            image_size=[64, 96],
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(wide)
    err = bad(monkeypatch, capsys, "probe", f"hf:{wide}", "-q")
    assert "64 x 96" in err and "square patch grid" in err
    err = bad(monkeypatch, capsys, "probe", "tim:vit_small_patch16_224", "-q")
    assert "'tim' is not a model source" in err


def test_models_without_a_patch_grid_or_the_protocol_are_refused(tmp_path, py_file):
    folder = tmp_path / "resnet"
    transformers.ResNetModel(
        transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 8], depths=[1, 1])
    ).save_pretrained(folder)
    with pytest.raises(VinyError, match="no patch grid"):
        load_model(f"hf:{folder}")
    with pytest.raises(VinyError, match="must return a viny_probe.analysis.sources.TokenModel"):
        load_model(f"py:{py_file}:not_a_token_model")
    with pytest.raises(VinyError, match="no function 'nope'"):
        load_model(f"py:{py_file}:nope")
    # a callable whose tokens keep the CLS token: refused before any data is loaded
    leaky = TokenModel(
        torch.nn.Identity(),
        lambda x, blocks: {b: torch.zeros(len(x), 65, 4) for b in blocks},
        depth=1,
        dim=4,
        patch_size=8,
        image_size=64,
    )
    with pytest.raises(VinyError, match=r"expected \(1, 64, 4\)"):
        from viny_probe.analysis.sources.base import check_tokens

        check_tokens(leaky)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda_is_a_clear_error(monkeypatch, capsys):
    err = bad(monkeypatch, capsys, "probe", TIMM_CLS, "--device", "cuda", *SMALL)
    assert "--device cuda" in err and "no CUDA device" in err


@pytest.mark.parametrize("package, spec, extra", [("timm", TIMM_CLS, "timm"), ("transformers", "hf:.", "hf")])
def test_a_missing_extra_names_it(monkeypatch, capsys, package, spec, extra):
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError
    err = bad(monkeypatch, capsys, "probe", spec, "-q")
    assert f'pip install "viny-probe[{extra}]"' in err and err.count("error:") == 1


def test_sources_registry_and_parsing():
    assert list(MODEL_SOURCES)[:4] == ["viny", "timm", "hf", "py"]
    spec = parse_model_spec("timm:vit_small_patch16_224,img_size=64,dynamic_img_size=true,weights=a.pt")
    assert spec.prefix == "timm" and spec.target == "vit_small_patch16_224"
    assert spec.options == {"img_size": 64, "dynamic_img_size": True, "weights": "a.pt"}
    assert parse_model_spec("runs/spatial/final.pt").prefix == "viny"
    assert parse_model_spec("py:pkg.mod:build").target == "pkg.mod:build"


def test_hf_input_size_is_the_preprocessors_crop_not_the_configs_image_size(tmp_path):
    """A DINOv2-like folder in miniature: config image_size 64 (DINOv2: 518), preprocessor resizing the
    shortest edge to 40 then centre-cropping 32 (DINOv2: 256 then 224). The model takes 32 px inputs,
    a 4 x 4 grid of its 8 px patches, and says the size came from preprocessor_config.json. Mutant:
    ``_preprocessor_size`` reading ``size`` whatever the crop (``key = "size"``) -> 40 px."""
    cfg = transformers.ViTConfig(
        image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    torch.manual_seed(3)
    transformers.ViTModel(cfg, add_pooling_layer=False).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "BitImageProcessor",
                "do_resize": True,
                "size": {"shortest_edge": 40},
                "do_center_crop": True,
                "crop_size": {"height": 32, "width": 32},
                "image_mean": [0.5] * 3,
                "image_std": [0.25] * 3,
            }
        )
    )
    model = load_model(f"hf:{tmp_path}")
    assert model.image_size == 32
    tokens = model.tokens(torch.zeros(1, 3, 32, 32), [2])
    assert tokens[2].shape[:2] == (1, 16)
