"""viny bench (viny_probe.perf): analytic FLOPs, the plain baseline's equivalence, bf16/fp32 agreement, a smoke run."""

from __future__ import annotations

import json

import pytest
import torch

from viny_probe import perf
from viny_probe.errors import VinyError
from viny_probe.model import MODEL_PRESETS, ViNy, ViTConfig, model_config
from viny_probe.perf.baseline import PlainViT, baseline_loss, plain_loader, write_jpegs
from viny_probe.registry import REGIMES

# The smallest bench that runs everything: the tiny model, one step, one round, random images.
TINY = dict(
    device="cpu", model="tiny", batch=8, steps=1, warmup=0, repeats=1, dataset="random", peak_sizes=(128,)
)


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny model's ops are too small to split; one thread also keeps a shared machine's load out."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_flops_tiny_hand_count():
    # tiny: 32 px, patch 4 -> 64 patches; dim 32, depth 2, 2 heads of 16 (inner 32), MLP 64. SimMIM runs
    # the blocks on the 64 patch tokens (the study's token path); classification on 65 (CLS first).
    cfg = MODEL_PRESETS["tiny"]
    f = perf.analytic_flops(cfg, "simmim")
    patch_embed = 64 * 48 * 32  # 64 patches x (4*4*3) x 32

    def per_block(t):
        return (
            t * 32 * 96  # qkv
            + 2 * t * t * 16  # scores, 2 heads
            + 2 * t * t * 16  # weighted sum
            + t * 32 * 32  # output projection
            + t * 32 * 64 * 2  # MLP up + down
        )

    decoder = 64 * 32 * 48
    macs = patch_embed + 2 * per_block(64) + decoder
    assert f["forward"] == 2 * macs == 3_538_944
    assert f["train"] == 3 * f["forward"]
    assert f["head"] == 2 * decoder
    # Classification: 65 tokens in the blocks, head 32 x classes on the CLS token only.
    c = perf.analytic_flops(cfg, "classify", 6)
    assert c["encoder"] == 2 * (patch_embed + 2 * per_block(65))
    assert c["head"] == 2 * 32 * 6
    # Segmentation: 3 x 4 x 4 logits per patch; spatial: 3 per patch; both on 64 tokens.
    assert perf.analytic_flops(cfg, "segment")["head"] == 2 * 64 * 32 * 48
    assert perf.analytic_flops(cfg, "segment")["encoder"] == f["encoder"]
    assert perf.analytic_flops(cfg, "spatial")["head"] == 2 * 64 * 32 * 3


def test_flops_scale_as_expected():
    base = ViTConfig(**{**MODEL_PRESETS["tiny"].to_dict()})
    f = perf.analytic_flops(base, "classify", 6)
    deeper = perf.analytic_flops(ViTConfig(**{**base.to_dict(), "depth": 4}), "classify", 6)
    assert deeper["encoder"] - f["encoder"] == f["encoder"] - f["patch_embed"]  # blocks scale with depth
    wider_mlp = perf.analytic_flops(ViTConfig(**{**base.to_dict(), "mlp_dim": 128}), "classify", 6)
    assert wider_mlp["mlp"] == 2 * f["mlp"] and wider_mlp["qkv"] == f["qkv"]
    # Attention products grow with tokens squared: 64 -> 256 patches (65 -> 257 tokens).
    big = perf.analytic_flops(ViTConfig(**{**base.to_dict(), "image_size": 64}), "classify", 6)
    assert big["attn_scores"] / f["attn_scores"] == pytest.approx((257 / 65) ** 2)
    assert big["qkv"] / f["qkv"] == pytest.approx(257 / 65)
    # The study's ViNy: ~0.74 GFLOP forward, ~2.2 GFLOP per training image.
    v = perf.analytic_flops("viny", "simmim")
    assert 0.70e9 < v["forward"] < 0.78e9


def test_plain_baseline_matches_viny():
    torch.manual_seed(0)
    cfg = MODEL_PRESETS["tiny"]
    viny = ViNy(cfg).eval()
    plain = PlainViT(cfg).eval()
    plain.load_state_dict(viny.state_dict())  # same names, same shapes
    x = torch.randn(3, 3, 32, 32)
    mask = torch.zeros(3, 64, dtype=torch.bool)
    mask[:, ::2] = True
    token = torch.randn(cfg.dim)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), viny(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plain(x, mask, token), viny(x, mask, token), atol=1e-5, rtol=1e-5)
    # Seeded the same way, make_trainer gives both the same initial weights.
    data = perf.bench_data(cfg, 4, "random")
    a = perf.make_trainer("simmim", cfg, data, torch.device("cpu")).encoder.state_dict()
    plain = perf.TrainerSetup(encoder_cls=PlainViT)
    b = perf.make_trainer("simmim", cfg, data, torch.device("cpu"), plain).encoder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_segment_baseline_is_the_segment_regimes_loss():
    """The plain segmentation baseline computes the loss viny's segment regime computes, on the same
    weights and un-augmented inputs (so `viny bench --baseline segment` times the same work), and a
    bench run with it gives the step ratios but no JPEG-epoch figures (its DataLoader has no trimaps).
    Mutant applied once: the baseline's targets transposed (``targets.transpose(1, 2)``) -> the losses
    differ and this test failed."""
    cfg = MODEL_PRESETS["tiny"]
    data = perf.bench_data(cfg, 4, "random")
    viny = perf.make_trainer("segment", cfg, data, torch.device("cpu"))
    plain = perf.make_trainer(
        "segment", cfg, data, torch.device("cpu"), perf.TrainerSetup(encoder_cls=PlainViT)
    )
    batch = perf.fixed_batch(data, 4, torch.device("cpu"))
    x = perf.harness.normalize(perf.harness.to_float(batch["images"]))
    inputs = {"images": x, "masks": batch["masks"].long()}
    want, _ = viny.regime.loss(viny.regime.predict(viny.encoder, viny.head, inputs), inputs)
    got = baseline_loss("segment", plain.encoder, plain.head, x, inputs["masks"], None)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    r = perf.run_bench(
        perf.BenchOptions(**TINY, regimes=("segment",), precisions=("fp32",)),
        perf.SingleRunOptions(baseline="segment", epoch_batches=2),
    )
    assert r["baseline"]["regime"] == "segment" and r["baseline"]["train_img_per_s"] > 0
    assert "epoch_img_per_s" not in r["baseline"]
    assert r["ratios"]["train_step_fp32_vs_baseline"] > 0


def test_bf16_and_fp32_losses_agree():
    curves = perf.precision_agreement("tiny", "simmim", steps=5, batch=16)
    fp32, bf16 = torch.tensor(curves["fp32"]), torch.tensor(curves["bf16"])
    assert len(fp32) == 5
    assert torch.allclose(bf16, fp32, rtol=0.02, atol=0.01), (fp32, bf16)
    cls = perf.precision_agreement("tiny", "segment", steps=3, batch=8)
    assert torch.allclose(torch.tensor(cls["bf16"]), torch.tensor(cls["fp32"]), rtol=0.02, atol=0.02), cls


def test_bench_smoke_tiny_returns_all_fields():
    r = perf.run_bench(perf.BenchOptions(**TINY), perf.SingleRunOptions(epoch_batches=2))
    json.dumps(r)  # JSON-able
    assert {row["regime"] for row in r["regimes"]} == set(REGIMES)
    assert len(r["regimes"]) == 8
    for row in r["regimes"]:
        for k in (
            "train_img_per_s",
            "eval_img_per_s",
            "flops_train_per_img",
            "train_flops",
            "train_frac_of_peak",
            "epoch_img_per_s",
            "epoch_vs_step",
        ):
            assert row[k] > 0, (row["regime"], k)
    for p in ("fp32", "bf16"):
        assert r["matmul_peak"][p]["peak_flops"] > 0 and r["matmul_peak"][p]["model_shaped"]["flops"] > 0
    assert r["data_pipeline"]["img_per_s"] > 0
    base = r["baseline"]
    for k in ("train_img_per_s", "eval_img_per_s", "dataloader_img_per_s", "epoch_img_per_s"):
        assert base[k] > 0
    assert r["ratios"]["train_step_fp32_vs_baseline"] > 0 and r["ratios"]["epoch_bf16_vs_baseline"] > 0
    # the products' own bf16 / fp32 gain, beside the step's (mutant: the ratio inverted, killed)
    peak = r["matmul_peak"]
    assert r["ratios"]["matmul_bf16_vs_fp32"] == peak["bf16"]["peak_flops"] / peak["fp32"]["peak_flops"]
    assert (
        r["ratios"]["model_shaped_matmul_bf16_vs_fp32"]
        == peak["bf16"]["model_shaped"]["flops"] / peak["fp32"]["model_shaped"]["flops"]
    )
    assert r["paper_plan"]["projection"]["total_hours"] > 0


def test_paper_plan_image_steps():
    plan = perf.paper_plan()
    assert plan["image_steps"]["simmim"] == 100 * 345_000 * 3
    assert plan["image_steps"]["classify"] == 200 * 14_034 * 9
    assert plan["image_steps"]["segment"] == 100 * 13_750 * 4 * 3
    assert plan["total"] == 145_261_200
    proj = perf.project_plan(plan, {"simmim": 1000.0, "classify": 1000.0, "segment": 1000.0})
    assert proj["total_seconds"] == pytest.approx(145_261.2)


def test_jpeg_folder_roundtrip(tmp_path):
    imgs = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    paths = write_jpegs(imgs, tmp_path)
    batches = list(plain_loader(paths, torch.arange(5), 32, batch_size=2))
    assert [b[0].shape[0] for b in batches] == [2, 2, 1]
    assert batches[0][0].shape[1:] == (3, 32, 32)


def test_cli_bench_json(monkeypatch, capsys):
    """`viny bench` builds its options once, with the parameter objects' own defaults for every flag not
    given, and `--fleet` the same BenchOptions plus a FleetOptions. Mutants seen failing: the CLI's
    ``--steps`` default written as 3 beside BenchOptions.steps = 2; ``--epoch-batches`` not passed on."""
    from typer.testing import CliRunner

    import viny_probe.perf.fleet as fleet_module
    from viny_probe.cli import app

    seen = {}

    def fake_bench(options, single, log):
        seen["bench"] = options, single
        return {"called": options.model, "batch": options.batch}

    monkeypatch.setattr(perf, "run_bench", fake_bench)
    res = CliRunner().invoke(
        app,
        [
            "bench",
            "--model",
            "tiny",
            "--batch-size",
            "4",
            "--json",
            "--device",
            "cpu",
            "--epoch-batches",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {"called": "tiny", "batch": 4}
    assert seen["bench"] == (
        perf.BenchOptions(device="cpu", model="tiny", batch=4),
        perf.SingleRunOptions(epoch_batches=3),
    )

    def fake_fleet(fleet, options, log):
        seen["fleet"] = fleet, options
        return {"fleets": [], "matmul_peak": {}}

    monkeypatch.setattr(fleet_module, "run_fleet_bench", fake_fleet)
    args = ["bench", "--model", "tiny", "--device", "cpu", "--precision", "fp32", "--fleet", "1,4", "--json"]
    res = CliRunner().invoke(app, [*args, "--no-cuda-graphs"])
    assert res.exit_code == 0, res.output
    assert seen["fleet"] == (
        perf.FleetOptions((1, 4), graphs=False),
        perf.BenchOptions(device="cpu", model="tiny", precisions=("fp32",)),
    )


def test_bench_data_never_falls_back_to_random_images():
    """A dataset without trimaps is an error naming the options, not random tensors timed instead.
    Mutant: the old try/except that returned random images -> no error."""
    cfg = model_config("tiny")
    with pytest.raises(VinyError, match="--dataset random"):
        perf.bench_data(cfg, 4, "toy-scenes")
    assert perf.bench_data(cfg, 4, "toy-pets").masks is not None


def test_bench_records_the_streams_it_ran_with():
    """`viny bench --streams N` reaches the trainers it times (mutant killed: run_bench leaving the
    ``TrainerSetup`` without ``single.streams``); auto resolves the tiny model's batch to 1."""
    options = perf.BenchOptions(**TINY, regimes=("segment",), precisions=("fp32",))
    for asked, resolved in ((0, 1), (2, 2)):
        r = perf.run_bench(options, perf.SingleRunOptions(baseline=None, epoch=False, streams=asked))
        assert r["streams"] == {"fp32": resolved} and r["micro_batch"] == {"fp32": 8}


def test_bench_caption_says_the_micro_batches_and_streams():
    """The printed table says how each precision's step was cut (mutant killed: the side-by-side count
    printed for one stream too)."""
    from viny_probe.cli.bench import _micro

    said = _micro({"micro_batch": {"fp32": 16, "bf16": 64}, "streams": {"fp32": 2, "bf16": 1}})
    assert (
        said == " Micro-batches (--micro-batch, --streams): fp32 16 images, 2 side by side; bf16 64 images."
    )
    assert _micro({}) == ""  # a result written before viny recorded them
