"""Wiring tests with known answers (issue #22): fake TokenModels whose tokens reveal what they were fed
(the input statistics, the image and patch they came from, the block that made them), so a mutant that
skips or swaps the normalisation, mispairs a subsample with its batch, or reads the wrong block gives a
wrong number here. Each test names the mutants it was watched failing on (applied once, reverted)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from viny_probe.analysis.embeddings import TokenKey, extract_patch_tokens
from viny_probe.analysis.options import DiagnoseOptions, EvalSet, ModelOptions, ProbeOptions
from viny_probe.analysis.sources import TokenModel

PATCH, SIZE = 4, 32  # toy-pets at 32 px: an 8 x 8 grid, like the tiny ViNy
GRID = SIZE // PATCH
OWN_MEAN, OWN_STD = (0.2, 0.4, 0.6), (0.3, 0.2, 0.1)  # every channel its own, none of them ImageNet's
GIVEN_MEAN, GIVEN_STD = (0.6, 0.5, 0.1), (0.15, 0.35, 0.25)  # what --mean / --std replace them with


class _Weights(nn.Module):
    """The module of a fake model: one parameter (a device and a digest), no computation."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))


def patches_of(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, S, S)`` -> ``(B, P, C, PATCH * PATCH)``, patches in row-major order."""
    b, c, s, _ = x.shape
    g = s // PATCH
    return x.reshape(b, c, g, PATCH, g, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(b, g * g, c, PATCH * PATCH)


def fake_model(block_tokens, depth: int, dim: int, mean=(0.0,) * 3, std=(1.0,) * 3, seen=None, name="fake"):
    """A TokenModel whose block ``b`` tokens are ``block_tokens(b, x)`` of the (normalised) input ``x``;
    every input it is fed is appended to ``seen``."""

    def tokens(x, blocks):
        if seen is not None:
            seen.append(x.detach().cpu().clone())
        return {b: block_tokens(b, x) for b in blocks}

    return TokenModel(
        _Weights(), tokens, depth=depth, dim=dim, patch_size=PATCH, image_size=SIZE, mean=mean, std=std,
        source=f"py:{name}", name=name,
    )  # fmt: skip


def channel_means(b, x):
    """Each patch's mean of each input channel: ``(B, P, 3)``."""
    return patches_of(x).mean(dim=-1)


def pixels(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)


def normalised(images: torch.Tensor, mean, std) -> torch.Tensor:
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    return (images.float() / 255 - m) / s


def assert_fed_uint8_through(seen: list[torch.Tensor], mean, std) -> None:
    """Every input the model saw is some uint8 image normalised with exactly ``mean`` / ``std``: undone
    with them, each value is k / 255 for an integer k in 0..255 (another mean/std, none, or ImageNet's
    leaves values off that lattice or outside [0, 1])."""
    assert seen, "the model was never run"
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    for x in seen:
        k = (x.double() * s + m) * 255
        assert (k - k.round()).abs().max() < 1e-3, "not a uint8 image normalised with this mean/std"
        assert k.min() > -1e-3 and k.max() < 255 + 1e-3
        assert k.std() > 1, "a blank input proves nothing"


# -------------------------------------------------------------------------------- 1. normalisation
@pytest.mark.parametrize(("mean", "std"), [(OWN_MEAN, OWN_STD), ((0.0,) * 3, (1.0,) * 3)], ids=["own", "raw"])
def test_extraction_normalises_uint8_with_the_models_own_mean_and_std_per_channel(mean, std):
    """A model whose tokens are its input's per-patch channel means: the extracted tokens equal those of
    (images / 255 - mean) / std with the model's own per-channel values, and of images / 255 where the
    model declares raw [0, 1] pixels (mean 0, std 1). Mutants killed (embeddings._prepare): the
    normalisation dropped (``x = to_float(x)``); mean and std swapped; ImageNet's mean/std instead of the
    model's (either of them); the model's mean read in reversed channel order (``model.mean[::-1]``)."""
    model = fake_model(channel_means, depth=1, dim=3, mean=mean, std=std)
    images = pixels(5)
    got = extract_patch_tokens(model, images, use_cache=False, progress=False, batch_size=2)["final"]
    want = patches_of(normalised(images, mean, std)).mean(dim=-1)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_viny_raw_checkpoint_is_extracted_on_raw_pixels():
    """A ViNy whose run trained on raw [0, 1] pixels (``inputs: raw``): its extracted tokens are its
    forward of images / 255, not of ImageNet-normalised ones (test_recipes checks the declared mean/std;
    this checks the extraction reads them). Mutant killed: viny_token_model ignoring the checkpoint's
    inputs (``raw = False``)."""
    from viny_probe.analysis.sources.viny import viny_token_model
    from viny_probe.model import ViNy

    torch.manual_seed(0)
    encoder = ViNy("tiny").eval()
    model = viny_token_model(encoder, {"config": {"inputs": "raw"}})
    images = pixels(3, seed=1)
    got = extract_patch_tokens(model, images, use_cache=False, progress=False)["final"]
    with torch.no_grad():
        want = encoder(images.float() / 255)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_probe_similarity_map_and_diagnose_feed_the_model_its_own_normalisation(tmp_path):
    """Through the three commands (library entry points, a TokenModel given directly), every image the
    model is fed is a uint8 image normalised with the model's own mean/std, or with ModelOptions' mean /
    std (--mean / --std) when given. Mutants killed: similarity_image passing the picture as float [0, 1]
    (``picture[None].float() / 255``: taken as already normalised); sources.load_with dropping the given
    mean (``mean=None``); checkpoint_probe, similarity_image and diagnose.load_models each loading with
    ``ModelOptions()`` instead of the given options. And diagnose's final-block numbers are the last
    block's (block b here is b x the channel means): mutant killed, _test_tokens handing block 1 on as the
    final block (``test_all[1]``)."""
    from viny_probe.analysis.checkpoint_probe import probe_checkpoint
    from viny_probe.analysis.diagnose import diagnose
    from viny_probe.analysis.evaluation_data import load_probe_data
    from viny_probe.analysis.similarity_image import similarity_map_for_image
    from viny_probe.analysis.variance import within_image_variance

    seen: list[torch.Tensor] = []
    scaled = lambda b, x: b * channel_means(b, x)  # noqa: E731
    model = fake_model(scaled, depth=2, dim=3, mean=OWN_MEAN, std=OWN_STD, seen=seen)
    own, given = ModelOptions(use_cache=False), ModelOptions(use_cache=False, mean=GIVEN_MEAN, std=GIVEN_STD)
    small, no_knn = EvalSet(probe_images=8, test_images=4), ProbeOptions(knn=False)

    probe_checkpoint(model, own, small, no_knn, progress=False)
    assert_fed_uint8_through(seen, OWN_MEAN, OWN_STD)
    seen.clear()
    probe_checkpoint(model, given, small, no_knn, progress=False)
    assert_fed_uint8_through(seen, GIVEN_MEAN, GIVEN_STD)

    for options, (mean, std) in ((own, (OWN_MEAN, OWN_STD)), (given, (GIVEN_MEAN, GIVEN_STD))):
        seen.clear()
        similarity_map_for_image(model, "toy-pets:3", patch="2,5", out=tmp_path / "map.png", model=options)
        assert_fed_uint8_through(seen, mean, std)

    seen.clear()
    figures = DiagnoseOptions(depth_probe_images=4, cka_images=4, fig6_images=1)
    summary = diagnose([model], ["fake"], tmp_path / "diag", given, small, no_knn, figures, progress=False)
    assert_fed_uint8_through(seen, GIVEN_MEAN, GIVEN_STD)
    where = summary["data"][SIZE]
    _, test, _ = load_probe_data(where["dataset"], SIZE, None, where["split_seed"], where["test_size"], 8, 4)
    final = 2 * channel_means(2, normalised(test.images, GIVEN_MEAN, GIVEN_STD))
    assert summary["final_layer"]["fake"]["within_image_variance"] == pytest.approx(
        within_image_variance(final), rel=1e-4
    )


# --------------------------------------------------------------- 2. the patch subsample across batches
def indexed_images(n: int) -> torch.Tensor:
    """Image i: channel 0 holds 10 * i everywhere, channel 1 holds each pixel's patch index (0..63)."""
    images = torch.zeros(n, 3, SIZE, SIZE, dtype=torch.uint8)
    images[:, 0] = (10 * torch.arange(n, dtype=torch.uint8))[:, None, None]
    patch = torch.arange(GRID * GRID, dtype=torch.uint8).reshape(GRID, GRID)
    images[:, 1] = patch.repeat_interleave(PATCH, 0).repeat_interleave(PATCH, 1)
    return images


def own_index(b, x):
    """A raw-pixel model's token of a patch: (its image's channel 0 / 10, its patch index) as floats."""
    means = patches_of(x).mean(dim=-1) * 255
    return torch.stack([means[..., 0] / 10, means[..., 1]], dim=-1)


def test_the_patch_subsample_keeps_each_images_own_patches_across_batches():
    """10 images in batches of 3 (the last holds one), 5 different patches kept per image: the token at
    [i, j] is image i's patch keep[i, j], read off the token itself. Mutants killed (embeddings._run):
    the batch's rows of ``patches`` taken by the batch-local index (``patches[: stop - start]``: every
    batch keeps the first images' patches); shifted by one at the batch boundary
    (``patches[start + 1 : stop + 1]``, the last batch's short slice refused); every image's first k
    patches kept instead of its own (_batch_tokens: ``t[:, : keep.shape[1]]``); the kept tokens copied
    in reversed order (``tokens[b].flip(1)``)."""
    n, k = 10, 5
    model = fake_model(own_index, depth=2, dim=2)
    g = torch.Generator().manual_seed(3)
    keep = torch.rand(n, GRID * GRID, generator=g).argsort(dim=1)[:, :k].sort(dim=1).values
    assert len({tuple(row) for row in keep.tolist()}) == n  # every image keeps other patches
    got = extract_patch_tokens(
        model,
        indexed_images(n),
        "all",
        batch_size=3,
        key=TokenKey(patches=keep),
        use_cache=False,
        progress=False,
    )
    for block in (1, 2):
        assert got[block].shape == (n, k, 2)
        torch.testing.assert_close(got[block][..., 0].round(), torch.arange(n).float()[:, None].expand(n, k))
        torch.testing.assert_close(got[block][..., 1].round(), keep.float())


# ------------------------------------------------------------------ 3. the block a per-block number reads
DIM = 6
WHERE = EvalSet(dataset="toy-pets", split_seed=0, test_size=40, probe_images=24, test_images=12)
UNCACHED, NO_KNN = ModelOptions(use_cache=False), ProbeOptions(knn=False)


@pytest.fixture(scope="module")
def toy_sets():
    """The probe's pool and test images at the sizes the tests below ask for, with their patch labels."""
    from viny_probe.analysis.evaluation_data import load_probe_data, patch_labels

    train, test, _ = load_probe_data("toy-pets", SIZE, None, 0, 40, probe_images=24, test_images=12)
    return {
        "train": train,
        "test": test,
        "labels": {k: patch_labels(s, PATCH) for k, s in (("train", train), ("test", test))},
    }


def _label_table(toy_sets) -> dict[bytes, torch.Tensor]:
    return {
        img.numpy().tobytes(): lab
        for key in ("train", "test")
        for img, lab in zip(toy_sets[key].images, toy_sets["labels"][key], strict=True)
    }


def one_hot_labels(x: torch.Tensor, table: dict[bytes, torch.Tensor]) -> torch.Tensor:
    """A raw-pixel model's token of a patch: the one-hot of its trimap class (looked up by the image's
    own pixels), zero for an unlabelled patch or an image not in ``table``."""
    out = torch.zeros(len(x), GRID * GRID, DIM)
    for i, img in enumerate((x * 255).round().to(torch.uint8)):
        labels = table.get(img.cpu().numpy().tobytes())
        if labels is not None:
            rows = torch.nonzero(labels >= 0).squeeze(1)
            out[i, rows, labels[rows]] = 1.0
    return out


def noise(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed pseudo-random function of each patch's pixels, in [-1, 1], unrelated to its class."""
    w = torch.randn(3 * PATCH * PATCH, DIM, generator=torch.Generator().manual_seed(seed))
    return torch.sin(13.0 * patches_of(x).flatten(2) @ w)


def model_a(table, **kw) -> TokenModel:
    """Depth 3: block 2 is the patch class one-hot, block b != 2 is b x noise seeded b (so block 3's
    within-image variance is 9 x that of a seed-3 noise)."""
    fn = lambda b, x: one_hot_labels(x, table) if b == 2 else b * noise(x, b)  # noqa: E731
    return fake_model(fn, depth=3, dim=DIM, name="A", **kw)


def model_b(table, **kw) -> TokenModel:
    """Depth 3: block b < 3 is noise seeded b + 2 (so its block 1 is model A's block 3 over 3: CKA 1),
    block 3 the patch class one-hot (model A's block 2: CKA 1)."""
    fn = lambda b, x: one_hot_labels(x, table) if b == 3 else noise(x, b + 2)  # noqa: E731
    return fake_model(fn, depth=3, dim=DIM, name="B", **kw)


def test_probe_every_block_reports_the_block_it_names(toy_sets, monkeypatch):
    """``layer="all"`` on model A: "block B"'s within-image variance is that of block B's tokens computed
    here from the images (block 2: of the one-hot patch classes; block 3: 9 x the seed-3 noise's) and only
    block 2 (the one-hot classes) is probed perfectly, train and test, with the pool tokens cut to a
    seeded half of each image's patches (the memory bound, lowered here): the labels follow the same
    patches. Mutants killed: embeddings._resolve_layers mapping block B to B + 1 (``min(b + 1, depth)``)
    and to B - 1 (``max(b - 1, 1)``); extract_patch_tokens returning the deepest block for every label
    (``found[wanted[-1][1]]``); probe_checkpoint measuring every label on the last layer's test tokens
    (``test_tokens[list(test_tokens)[-1]]``) or pool tokens (``train_tokens[list(train_tokens)[-1]]``);
    probe_checkpoint labelling other pool patches than it keeps (``patch_labels(..., keep.flip(1))``)."""
    from viny_probe.analysis import evaluation_data
    from viny_probe.analysis.checkpoint_probe import probe_checkpoint
    from viny_probe.analysis.variance import within_image_variance

    monkeypatch.setattr(evaluation_data, "PROBE_MAX_VALUES", 24 * 32 * DIM)  # 32 of 64 patches kept

    table = _label_table(toy_sets)
    result = probe_checkpoint(model_a(table), UNCACHED, WHERE, NO_KNN, layer="all", progress=False)
    layers = result["layers"]
    assert list(layers) == ["block 1", "block 2", "block 3"]
    assert result["data"]["probe_subsample"]["patches_per_image"] == 32
    test = toy_sets["test"].images
    x = test.float() / 255
    want = {
        1: within_image_variance(noise(x, 1)),
        2: within_image_variance(one_hot_labels(x, table)),
        3: 9 * within_image_variance(noise(x, 3)),
    }
    for b, value in want.items():
        assert layers[f"block {b}"]["within_image_variance"] == pytest.approx(value, rel=1e-4), b
    assert len({round(v, 3) for v in want.values()}) == 3  # three different answers
    assert layers["block 2"]["probe"]["test_accuracy"] == 1.0
    assert layers["block 2"]["probe"]["train_accuracy"] == 1.0
    for b in (1, 3):
        assert layers[f"block {b}"]["probe"]["test_accuracy"] < 0.9


def test_diagnose_per_block_curves_and_cka_read_the_blocks_they_name(
    toy_sets, tmp_path, monkeypatch, figures
):
    """``diagnose`` on models A and B (depth 3 each), with every memory bound lowered so the per-block curves
    run on the first 6 of the 12 test images, and the per-block probe, the final probe and CKA on seeded
    patch subsamples. Known answers: A's per-block within-image variance at block b is that of A's block-b
    tokens of those 6 images computed here (block 3: 9 x the seed-3 noise), its final-layer one that of
    all 12; the per-block probe is perfect at A's block 2 only (the one-hot classes), the final probe
    perfect for B only (its last block is the one-hot); CKA(A block i, B block j) equals linear_cka of
    those two blocks on the first 6 test images at the CKA subsample, 1 where A's block 3 meets B's block
    1 and A's block 2 meets B's block 3; B's same-class pairs have cosine 1 and its different-class pairs
    0 at every distance; Fig 6 draws the chosen test image, its trimap and, for B, the map of its one-hot
    tokens: 1 on the reference's class, 0 elsewhere; pca_rgb.png's top row shows the first 4 test images.
    Mutants killed: diagnose._per_block reading block b - 1's test tokens (``test_all[max(b - 1, 1)]``) or
    the last block's pool tokens for every block (``train_blocks[model.depth]``); _cka_features taking the
    last block for every block (``test_all[model.depth]``) or block b + 1 (``test_all[min(b + 1,
    model.depth)]``); _test_tokens extracting block 1 as the final block of all 12 images
    (``extract_patch_tokens(..., 1, ...)``); _depth_pool labelling other patches than it keeps
    (``keep.flip(1)``); _measure_checkpoint likewise for the final probe; _cka_features taking each
    image's first patches instead of the CKA subsample (``x[:, : keep.shape[1]]``); _cka computing B
    against A (``cka_matrix(got.cka_feats[b], got.cka_feats[a])``: the matrix transposed); _test_tokens
    embedding the last 6 test images for the per-block pass (``range(n - depth_images, n)``) and
    _measure_checkpoint pairing them with the last 6 images' labels (``test_labels[-depth_images:]``);
    _choose_fig6 drawing the previous test image or its trimap (``test_set.images[index - 1]``,
    ``test_set.masks[index - 1]``); _fig6_maps mapping the previous image's tokens (``final[index - 1]``);
    the by-class Fig 5 curves fed the previous image's labels (``test_labels.roll(1, 0)``);
    evaluation_data.patch_labels keeping each image's first k labels instead of keep's (``labels[:, :
    keep.shape[1]]``); the PCA figure drawn over the next 4 images (``test_set.images[1 : shown + 1]``) or
    in reversed order (plot_pca_rgb: ``enumerate(shown[::-1])``)."""
    from viny_probe.analysis import diagnose as diagnose_module
    from viny_probe.analysis import evaluation_data
    from viny_probe.analysis.cka import linear_cka
    from viny_probe.analysis.diagnostics import DEPTH_PROBE_MAX_ITER, PROBE_SEED
    from viny_probe.analysis.evaluation_data import patch_labels, patch_subsample
    from viny_probe.analysis.probe import linear_patch_probe
    from viny_probe.analysis.variance import within_image_variance

    monkeypatch.setattr(evaluation_data, "PROBE_MAX_VALUES", 24 * 32 * DIM)  # final probe: 32 of 64
    monkeypatch.setattr(diagnose_module, "DEPTH_PROBE_MAX_VALUES", 16 * 32 * DIM)  # per-block: 32 of 64
    monkeypatch.setattr(diagnose_module, "CKA_MAX_VALUES", 6 * 40 * 3 * DIM)  # CKA: 40 of 64
    monkeypatch.setattr(diagnose_module, "DEPTH_MAX_VALUES", 6 * GRID * GRID * DIM * 3)  # 6 test images
    table = _label_table(toy_sets)
    a, b = model_a(table), model_b(table)
    summary = diagnose_module.diagnose(
        [a, b], ["A", "B"], tmp_path / "diag", UNCACHED, WHERE, NO_KNN,
        DiagnoseOptions(depth_probe_images=16, cka_images=10, fig6_images=1), progress=False,
    )  # fmt: skip
    memory = summary["memory"]
    assert memory["A"]["depth_test_images"] == 6 and memory["A"]["test_images"] == 12
    assert memory["A"]["probe_subsample"]["patches_per_image"] == 32
    assert memory["A"]["depth_probe_subsample"]["patches_per_image"] == 32
    assert memory["A"]["cka_patches_per_image"] == 40

    x = toy_sets["test"].images.float() / 255
    tokens = {name: {k: m.tokens(x[:6], [k])[k] for k in (1, 2, 3)} for name, m in (("A", a), ("B", b))}
    within = summary["per_block"]["A"]["within_image_variance"]
    assert within[0] is None
    for k in (1, 2, 3):
        assert within[k] == pytest.approx(within_image_variance(tokens["A"][k]), rel=1e-4), k
    assert within[3] == pytest.approx(9 * within_image_variance(noise(x[:6], 3)), rel=1e-4)
    final_within = summary["final_layer"]["A"]["within_image_variance"]
    assert final_within == pytest.approx(9 * within_image_variance(noise(x, 3)), rel=1e-4)
    assert final_within != pytest.approx(within[3], rel=1e-3)  # 12 images, not the per-block 6

    # the per-block probe: fitted on the first 16 pool images at the per-block subsample, with the C
    # the final probe chose; at block b it equals that fit computed here on A's block b
    probe_a = summary["per_block"]["A"]["probe_accuracy"]
    pool = toy_sets["train"].subset(list(range(16)))
    keep = patch_subsample(16, GRID * GRID, DIM, 16 * 32 * DIM)
    pool_x, labels = pool.images.float() / 255, patch_labels(pool, PATCH, keep)
    chosen_c = summary["final_layer"]["A"]["probe"]["chosen_C"]
    for k in (1, 2, 3):
        fit = linear_patch_probe(
            a.tokens(pool_x, [k])[k].gather(1, keep[:, :, None].expand(-1, -1, DIM)), labels,
            tokens["A"][k], toy_sets["labels"]["test"][:6], Cs=(chosen_c,), seed=PROBE_SEED, num_classes=3,
            max_iter=DEPTH_PROBE_MAX_ITER, backend="auto",
        )  # fmt: skip
        assert probe_a[k] == pytest.approx(fit.test_accuracy, abs=1e-9), k
    assert probe_a[2] > 0.9 > max(probe_a[1], probe_a[3])  # the one-hot block is the one read well
    assert summary["final_layer"]["B"]["probe"]["test_accuracy"] == 1.0
    assert summary["final_layer"]["B"]["probe"]["train_accuracy"] == 1.0
    assert summary["final_layer"]["A"]["probe"]["test_accuracy"] < 0.9

    (pair,) = summary["cka"]
    assert pair["names"] == ["A", "B"]
    keep = patch_subsample(6, GRID * GRID, 3 * DIM, 6 * 40 * 3 * DIM)
    cut = {
        name: {k: t[:6].gather(1, keep[:, :, None].expand(-1, -1, DIM)) for k, t in per.items()}
        for name, per in tokens.items()
    }
    want = [[linear_cka(cut["A"][i], cut["B"][j]) for j in (1, 2, 3)] for i in (1, 2, 3)]
    np.testing.assert_allclose(pair["matrix"], want, rtol=1e-6, atol=1e-9)
    assert pair["matrix"][2][0] == pytest.approx(1.0) and pair["matrix"][1][2] == pytest.approx(1.0)
    others = [pair["matrix"][i][j] for i in range(3) for j in range(3) if (i, j) not in ((2, 0), (1, 2))]
    assert max(others) < 0.9

    # Fig 5 by class: B's final tokens are the one-hot classes, so a same-class pair has cosine 1 at every
    # distance and a different-class pair 0 (unlabelled patches: none in these trimaps)
    assert (toy_sets["labels"]["test"] >= 0).all()
    by_class = summary["similarity_vs_distance"]["B"]
    assert by_class["same"]["mean"] == pytest.approx([1.0] * len(by_class["same"]["mean"]))
    assert by_class["different"]["mean"] == pytest.approx(
        [0.0] * len(by_class["different"]["mean"]), abs=1e-6
    )

    # Fig 6: the chosen test image, its trimap, and B's map of its one-hot tokens (1 on the reference's
    # class, 0 elsewhere, unlabelled patches 0)
    (chosen,) = summary["settings"]["fig6_images"]
    index = chosen["test_index"]
    panel = json.loads((tmp_path / "diag" / "fig6_reference_patches.json").read_text())
    np.testing.assert_array_equal(panel["target"], toy_sets["test"].masks[index].numpy())
    labels = toy_sets["labels"]["test"][index].reshape(GRID, GRID)
    for name, (row, col) in panel["refs"].items():
        want = ((labels == labels[row, col]) & (labels >= 0)).float().numpy()
        np.testing.assert_allclose(panel["maps"]["B"][name], want, atol=1e-6)
    drawn = [f for f in figures if f.axes and f.axes[0].get_title() == "input"][0]
    np.testing.assert_array_equal(
        drawn.axes[0].images[0].get_array(), toy_sets["test"].images[index].permute(1, 2, 0).numpy()
    )
    # pca_rgb.png: its top row shows the first 4 test images, the ones whose colours fill the rows below
    (pca,) = [f for f in figures if f._suptitle is not None and "PCA" in f._suptitle.get_text()]
    for j in range(4):
        shown = pca.axes[j].images[0].get_array()
        np.testing.assert_array_equal(shown, toy_sets["test"].images[j].permute(1, 2, 0).numpy())


def test_similarity_map_of_an_embedded_image_pairs_its_picture_trimap_and_tokens(toy_sets, tmp_path):
    """``similarity-map toy-pets:3`` (split seed 0, 40 held out) on a model whose tokens are the patch
    classes' one-hot: the model is fed test image 3 of the same split the probe scores on; the study's
    references sit on a background, a pet and a boundary patch of that image's own trimap; each map is 1
    on the reference's class and 0 elsewhere. Mutant killed: images.embedded_image taking the next test
    image (``int(test[index + 1])``); before the merge of main, also its taking the next image's trimap
    (``full.masks[i + 1]``; the image and its trimap now load together, by one index)."""
    from viny_probe.analysis.similarity_image import similarity_map_for_image

    seen: list[torch.Tensor] = []
    table = _label_table(toy_sets)
    model = fake_model(lambda b, x: one_hot_labels(x, table), depth=1, dim=DIM, seen=seen, name="onehot")
    res = similarity_map_for_image(
        model, "toy-pets:3", out=tmp_path / "m.png", data=EvalSet(split_seed=0, test_size=40)
    )
    (fed,) = seen
    assert torch.equal((fed[0] * 255).round().to(torch.uint8), toy_sets["test"].images[3])
    labels = toy_sets["labels"]["test"][3].reshape(GRID, GRID)
    classes = {"foreground": 0, "background": 1, "boundary": 2}  # pet, background, boundary
    assert set(res["refs"]) == set(classes)
    for name, (row, col) in res["refs"].items():
        assert int(labels[row, col]) == classes[name], name
        want = (labels == classes[name]).float().numpy()
        np.testing.assert_allclose(res["maps"][name], want, atol=1e-6)


# ------------------------------------------------------------------- 5. where the figures draw things
@pytest.fixture
def figures(monkeypatch):
    """Every matplotlib Figure the plot functions save, in order (read back through their artists)."""
    from viny_probe.analysis import plots

    saved = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, data: saved.append(fig) or save(fig, path, data))
    return saved


def red_squares(ax) -> list[tuple[float, float, float]]:
    """(x, y, side) of each red square on ``ax``, in data coordinates."""
    from matplotlib.patches import Rectangle

    return [
        (*p.get_xy(), p.get_width())
        for p in ax.patches
        if isinstance(p, Rectangle) and p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)
    ]


def test_the_reference_square_is_drawn_on_its_patch(figures, tmp_path):
    """Reference patch (row 2, col 1) of a 4 x 4 map over a 64 px image (16 px patches): the red square's
    corner is at x = 1 * 16 - 0.5, y = 2 * 16 - 0.5 on the input and the overlay, at (0.5, 1.5) on the map
    (imshow's cell edges sit at -0.5); the several-images grid marks its input the same way. Mutants
    killed: plot_similarity_overlay marking (col, row) on the input (``_mark_patch(axes[0], col, row,
    size)``); _mark_patch placing the square at (row, col) (``Rectangle((row * size - 0.5, col * size -
    0.5), ...)``); plot_reference_grid marking its input at (col, row)."""
    from viny_probe.analysis import plot_reference_grid, plot_similarity_overlay

    image = pixels(1)[0].repeat_interleave(2, 1).repeat_interleave(2, 2)  # (3, 64, 64)
    grid = np.linspace(-1, 1, 16).reshape(4, 4)
    plot_similarity_overlay(image, grid, (2, 1), tmp_path / "overlay.png")
    (fig,) = figures
    picture, cells, overlay = fig.axes[:3]
    assert red_squares(picture) == [(15.5, 31.5, 16.0)]
    assert red_squares(cells) == [(0.5, 1.5, 1.0)]
    assert red_squares(overlay) == [(15.5, 31.5, 16.0)]

    plot_reference_grid(image, {"m": {"r": grid}}, {"r": (2, 1)}, tmp_path / "grid.png")
    picture, cells = figures[1].axes[:2]
    assert red_squares(picture) == [(15.5, 31.5, 16.0)]
    assert red_squares(cells) == [(0.5, 1.5, 1.0)]


def test_fig5_draws_each_mean_at_its_distance(figures, tmp_path):
    """Fig 5's line holds the curve's (distance, mean) points and its band spans low..high; without the
    distance-0 point the x values start at 1. The by-class figure draws same-class pairs solid and
    different-class pairs dashed, each at its own distances; the depth curves draw block b's value at
    x = b. Mutants killed: plot_similarity_vs_distance plotting the means against their position
    (``np.arange(len(d["mean"]))``) or against distance + 1; the band drawn from low to the mean;
    plot_similarity_by_class with the line styles swapped; plot_depth_curves plotting block b at b + 1
    (``np.arange(1, len(ys) + 1)``)."""
    from viny_probe.analysis import plot_depth_curves, similarity_vs_distance
    from viny_probe.analysis.distance import similarity_vs_distance_by_class
    from viny_probe.analysis.plots import plot_similarity_by_class, plot_similarity_vs_distance

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(5, 16, 4, generator=g) + torch.linspace(0, 3, 16)[None, :, None]
    curve = similarity_vs_distance(emb)
    for from_zero in (False, True):
        plot_similarity_vs_distance({"m": curve}, tmp_path / f"fig5-{from_zero}.png", from_zero=from_zero)
        ax = figures[-1].axes[0]
        (line,) = ax.lines
        head = [0] if from_zero else []
        np.testing.assert_array_equal(line.get_xdata(), head + list(curve.distances))
        np.testing.assert_allclose(line.get_ydata(), [1.0] * len(head) + list(curve.mean))
        (band,) = ax.collections
        corners = np.concatenate([p.vertices for p in band.get_paths()])
        assert set(np.round(corners[:, 0], 6)) == set(head + list(curve.distances))
        assert corners[:, 1].min() == pytest.approx(min(curve.low)) and corners[:, 1].max() == pytest.approx(
            max(curve.high.max(), 1.0 if from_zero else -np.inf)
        )

    labels = torch.randint(0, 3, (5, 16), generator=g)
    by_class = similarity_vs_distance_by_class(emb, labels)
    plot_similarity_by_class({"m": by_class}, tmp_path / "by-class.png")
    same, different = figures[-1].axes[0].lines
    assert same.get_linestyle() == "-" and different.get_linestyle() == "--"
    for line, kind in ((same, "same"), (different, "different")):
        np.testing.assert_array_equal(line.get_xdata(), by_class[kind].distances)
        np.testing.assert_allclose(line.get_ydata(), by_class[kind].mean)

    plot_depth_curves({"m": {"probe_accuracy": [None, 0.5, 0.7, 0.9]}}, tmp_path / "depth.png")
    (line,) = figures[-1].axes[0].lines
    np.testing.assert_array_equal(line.get_xdata(), [0, 1, 2, 3])
    np.testing.assert_allclose(line.get_ydata(), [np.nan, 0.5, 0.7, 0.9])
