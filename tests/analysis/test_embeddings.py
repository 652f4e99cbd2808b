"""Patch-token extraction: layer selection, preprocessing, the on-disk cache, and loading encoders
from viny checkpoints, the authors' state_dict, or (refused, with the keys named) anything else."""

import pytest
import torch
import torch.nn.functional as F

from viny_probe.analysis.authors import authors_name_map
from viny_probe.analysis.embeddings import TokenKey, extract_patch_tokens, load_encoder
from viny_probe.checkpoint import save_checkpoint
from viny_probe.data.augment import normalize, to_float
from viny_probe.data.base import ImageSet
from viny_probe.errors import VinyError
from viny_probe.model import MODEL_PRESETS, ViNy

CFG = MODEL_PRESETS["tiny"]  # 32 px, 4 px patches: 8x8 grid, dim 32, depth 2


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return ViNy(CFG).eval()


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageSet(name="pets", images=pixels, ids=[f"img{i}" for i in range(5)])


def reference(encoder, pixels):
    with torch.no_grad():
        return encoder(normalize(to_float(pixels)))


def count_runs(encoder):
    """A list that grows by one each time the encoder embeds a batch."""
    calls = []
    encoder.patch_embed.register_forward_hook(lambda *_: calls.append(1))
    return calls


def save_viny(path, encoder, model_config=None, state=None):
    save_checkpoint(
        path,
        {
            "regime": "simmim",
            "model_config": model_config or encoder.cfg.to_dict(),
            "encoder": state or encoder.state_dict(),
            "head": {},
            "lineage": [],
        },
    )
    return path


def test_shapes_and_values_for_final_int_list_and_all(encoder, images, tmp_path):
    kw = {"use_cache": False, "progress": False}
    final = extract_patch_tokens(encoder, images, **kw)
    assert list(final) == ["final"]
    assert final["final"].shape == (5, 64, 32) and final["final"].dtype == torch.float32
    torch.testing.assert_close(final["final"], reference(encoder, images.images))

    one = extract_patch_tokens(encoder, images, layers=1, **kw)
    assert list(one) == [1] and one[1].shape == (5, 64, 32)
    with torch.no_grad():
        want1 = encoder.patch_tokens_per_block(normalize(to_float(images.images)), [1])[1]
    torch.testing.assert_close(one[1], want1)
    assert not torch.allclose(one[1], final["final"])

    listed = extract_patch_tokens(encoder, images, layers=[2, 1, 2], **kw)
    assert list(listed) == [2, 1]
    every = extract_patch_tokens(encoder, images, layers="all", batch_size=2, **kw)
    assert list(every) == [1, 2]
    torch.testing.assert_close(every[2], final["final"])  # the last block includes the final LayerNorm
    torch.testing.assert_close(every[1], one[1])
    assert not every[1].is_inference()  # usable with autograd downstream (e.g. probe training)


def test_resizing_float_input_and_encoder_state_restored(encoder, images):
    big = F.interpolate(to_float(images.images), size=(64, 64), mode="bilinear", align_corners=False)
    big = (big * 255).round().to(torch.uint8)
    got = extract_patch_tokens(encoder, big, use_cache=False, progress=False)["final"]
    small = F.interpolate(to_float(big), size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        want = encoder(normalize(small))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    # a float tensor is taken as already preprocessed; the caller's train mode survives the call
    encoder.train()
    pre = normalize(to_float(images.images))
    got = extract_patch_tokens(encoder, pre, use_cache=False, progress=False)["final"]
    assert encoder.training
    torch.testing.assert_close(got, reference(encoder.eval(), images.images))


def test_cache_hit_skips_the_model_and_key_follows_layer_and_count(encoder, images, tmp_path):
    """The cache key follows the layer, the image count, the TokenKey's split and extra, and the
    weights. Mutant seen failing: ``"extra": None`` in the key instead of ``key.extra``."""
    runs = count_runs(encoder)
    kw = {"cache_dir": tmp_path, "progress": False, "key": TokenKey("test"), "batch_size": 2}
    first = extract_patch_tokens(encoder, images, **kw)["final"]
    assert len(runs) == 3  # ceil(5 / 2) batches
    files = sorted(tmp_path.glob("*.pt"))
    assert len(files) == 1 and files[0].name.startswith("pets-test-L2-n5-")

    again = extract_patch_tokens(encoder, images, **kw)["final"]
    assert len(runs) == 3  # served from disk
    assert torch.equal(again, first)
    # same weights, same images -> same entry, whether passed as "final" or as block 2
    extract_patch_tokens(encoder, images, layers=[2], **kw)
    assert len(runs) == 3

    extract_patch_tokens(encoder, images, layers=1, **kw)  # another layer: new entry
    assert len(runs) == 6 and len(list(tmp_path.glob("*.pt"))) == 2
    extract_patch_tokens(encoder, images.subset([0, 1, 2, 3]), **kw)  # another count: new entry
    assert len(runs) == 8 and len(list(tmp_path.glob("*.pt"))) == 3
    extract_patch_tokens(encoder, images, **{**kw, "key": TokenKey("train")})  # another split: new entry
    assert len(runs) == 11 and len(list(tmp_path.glob("*.pt"))) == 4
    extract_patch_tokens(encoder, images, **{**kw, "key": TokenKey("test", extra="v2")})  # TokenKey.extra
    assert len(runs) == 14 and len(list(tmp_path.glob("*.pt"))) == 5
    with torch.no_grad():  # other weights: new entry
        encoder.norm.bias.add_(1.0)
    changed = extract_patch_tokens(encoder, images, **kw)["final"]
    assert len(runs) == 17 and not torch.allclose(changed, first)


def test_cache_dir_from_environment_and_corrupt_entries_are_recomputed(
    encoder, images, tmp_path, monkeypatch
):
    monkeypatch.setenv("VINY_CACHE_DIR", str(tmp_path))
    runs = count_runs(encoder)
    first = extract_patch_tokens(encoder, images, progress=False)["final"]
    (entry,) = (tmp_path / "embeddings").glob("*.pt")
    entry.write_bytes(b"truncated")
    again = extract_patch_tokens(encoder, images, progress=False)["final"]
    assert len(runs) == 2 and torch.equal(again, first)
    extract_patch_tokens(encoder, images, progress=False)
    assert len(runs) == 2  # rewritten, then hit


def test_checkpoint_paths_viny_and_authors(encoder, images, tmp_path):
    path = save_viny(tmp_path / "simmim.pt", encoder)
    loaded, ckpt = load_encoder(path)
    assert ckpt["regime"] == "simmim" and not loaded.training
    want = reference(encoder, images.images)
    got = extract_patch_tokens(
        path, images, cache_dir=tmp_path / "cache", device="cpu"
    )  # with a progress bar
    torch.testing.assert_close(got["final"], want)

    to_authors = {ours: theirs for theirs, ours in authors_name_map(CFG.depth).items()}
    authors_file = tmp_path / "authors.pth"
    torch.save({to_authors[k]: v for k, v in encoder.state_dict().items()}, authors_file)
    loaded, ckpt = load_encoder(authors_file, heads=CFG.heads)
    assert ckpt["regime"] == "imported" and ckpt["lineage"][0]["regime"] == "authors-import"
    assert loaded.cfg == CFG
    torch.testing.assert_close(reference(loaded, images.images), want)


def test_foreign_and_wrong_architecture_files_name_the_keys(encoder, tmp_path):
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(2, 3, 3, 3)}, foreign)
    with pytest.raises(VinyError, match="conv1.weight") as err:
        load_encoder(foreign)
    assert "pos_embedding" in str(err.value) and "format_version" in str(err.value)

    deeper = ViNy(CFG.__class__(**{**CFG.to_dict(), "depth": 3}))
    wrong = save_viny(tmp_path / "wrong.pt", encoder, state=deeper.state_dict())
    with pytest.raises(VinyError, match=r"unexpected keys \['blocks\.2\."):
        load_encoder(wrong)

    to_authors = {ours: theirs for theirs, ours in authors_name_map(CFG.depth).items()}
    partial = {to_authors[k]: v for k, v in encoder.state_dict().items() if k != "blocks.1.attn.qkv.weight"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(VinyError, match=r"missing keys \['transformer\.layers\.1\.0\.to_qkv\.weight'\]"):
        load_encoder(tmp_path / "partial.pth", heads=CFG.heads)

    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(VinyError, match="not a loadable checkpoint"):
        load_encoder(tmp_path / "text.pt")
    with pytest.raises(VinyError, match="not found"):
        load_encoder(tmp_path / "absent.pt")


def test_bad_layers_and_inputs_are_refused(encoder, images):
    kw = {"use_cache": False, "progress": False}
    for bad in (0, 3, [1, 5]):
        with pytest.raises(VinyError, match=r"out of range: this encoder has blocks 1\.\.2"):
            extract_patch_tokens(encoder, images, layers=bad, **kw)
    for bad in ("last", [], True, 1.5):
        with pytest.raises(VinyError, match="layers must be"):
            extract_patch_tokens(encoder, images, layers=bad, **kw)
    with pytest.raises(VinyError, match=r"\(N, 3, H, W\)"):
        extract_patch_tokens(encoder, torch.zeros(2, 1, 32, 32, dtype=torch.uint8), **kw)
    with pytest.raises(VinyError, match="batch_size"):
        extract_patch_tokens(encoder, images, batch_size=0, **kw)
