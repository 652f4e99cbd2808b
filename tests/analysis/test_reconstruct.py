"""`viny reconstruct` (Fig 2): the pictures it composes, its errors, and a run on a tiny SimMIM checkpoint."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from viny_probe.analysis.reconstruct import (
    MASK_BLACK,
    MASK_GREY,
    load_simmim,
    pixel_mask,
    reconstruct,
    reconstruct_images,
)
from viny_probe.checkpoint import save_checkpoint
from viny_probe.cli import app, main
from viny_probe.config import TrainConfig
from viny_probe.data.augment import IMAGENET_MEAN, IMAGENET_STD
from viny_probe.errors import VinyError
from viny_probe.heads import SimMIMHead
from viny_probe.model import ViNy
from viny_probe.trainers.simmim import fixed_half_masks, reconstruction_loss


@pytest.fixture(scope="session")
def simmim_ckpt(tmp_path_factory):
    from viny_probe.trainers import train

    cfg = TrainConfig(
        regime="simmim", model="tiny", epochs=1, batch_size=8, train_size=16, test_size=8, device="cpu"
    )
    return train(cfg, tmp_path_factory.mktemp("simmim-run"), progress=False).final_checkpoint


def pictures(n: int) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )


def tiny_model(seed: int = 0) -> tuple[ViNy, SimMIMHead]:
    torch.manual_seed(seed)
    encoder = ViNy("tiny").eval()
    return encoder, SimMIMHead(encoder.cfg).eval()


def test_pictures_have_the_shapes_and_the_masks_given():
    encoder, head = tiny_model()
    images, masks = pictures(3), fixed_half_masks(3, 64, seed=5)
    r = reconstruct(encoder, head, images, masks)
    for t in (r.inputs, r.masked_inputs, r.reconstructions):
        assert t.shape == (3, 3, 32, 32) and t.dtype == torch.float32
        assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    assert torch.equal(r.masks, masks) and r.masked_l1.shape == (3,)
    torch.testing.assert_close(r.inputs, images.float() / 255)
    # Every image has exactly half its patches masked, so the mean of the per-image L1 is the held-out loss.
    assert float(r.masked_l1.mean()) == pytest.approx(
        reconstruction_loss(encoder, head, images, seed=5), rel=1e-5
    )


def test_reconstruction_is_the_input_at_visible_patches_and_the_decoder_at_masked_ones():
    """Mutant: the decoder's pixels pasted at the visible patches (inverted paste mask)."""
    encoder, head = tiny_model()
    images, masks = pictures(4), fixed_half_masks(4, 64)
    r = reconstruct(encoder, head, images, masks)
    where = pixel_mask(masks, 4).expand(-1, 3, -1, -1)
    assert where.shape == (4, 3, 32, 32) and int(where[:, 0].sum()) == 4 * 32 * 4 * 4
    assert torch.equal(r.reconstructions[~where], r.inputs[~where])  # exactly the input where visible
    assert not torch.equal(r.reconstructions[where], r.inputs[where])
    # A constant decoder: every masked pixel is that constant un-normalised per channel, clipped.
    with torch.no_grad():
        head.decoder.weight.zero_()
        head.decoder.bias.fill_(0.5)
    r = reconstruct(encoder, head, images, masks)
    for ch in range(3):
        want = min(1.0, max(0.0, 0.5 * IMAGENET_STD[ch] + IMAGENET_MEAN[ch]))
        assert torch.allclose(r.reconstructions[:, ch][where[:, ch]], torch.tensor(want), atol=1e-6)


def test_masked_input_is_black_exactly_at_masked_patches():
    """Masked patches are black, as the study's Fig 2 draws them; grey stays one argument away.
    Mutants: the fill drawn over the visible patches (inverted mask in the middle panel); the default
    fill back to MASK_GREY (applied once, failed, reverted)."""
    encoder, head = tiny_model()
    images, masks = pictures(4), fixed_half_masks(4, 64, seed=2)
    images = images.clamp(min=1)  # no black input pixel, so black marks exactly the masked ones
    r = reconstruct(encoder, head, images, masks)
    black = (r.masked_inputs == MASK_BLACK).all(dim=1)  # (N, S, S)
    assert torch.equal(black, pixel_mask(masks, 4)[:, 0])
    grey = (reconstruct(encoder, head, images, masks, mask_fill=MASK_GREY).masked_inputs == MASK_GREY).all(
        dim=1
    )
    assert torch.equal(grey, pixel_mask(masks, 4)[:, 0])  # k / 255 is never exactly 0.5
    visible = ~pixel_mask(masks, 4).expand(-1, 3, -1, -1)
    assert torch.equal(r.masked_inputs[visible], r.inputs[visible])


def test_bad_tensors_are_clear_errors():
    encoder, head = tiny_model()
    with pytest.raises(VinyError, match=r"\(N, 3, 32, 32\) uint8"):
        reconstruct(encoder, head, pictures(2).float(), fixed_half_masks(2, 64))
    with pytest.raises(VinyError, match=r"masks must be \(2, 64\) bool"):
        reconstruct(encoder, head, pictures(2), fixed_half_masks(3, 64))


# ---------------------------------------------------------------------------------------- checkpoints
def test_a_checkpoint_that_is_not_simmim_is_refused_with_its_regime(tmp_path):
    encoder = ViNy("tiny")
    spatial = tmp_path / "spatial.pt"
    save_checkpoint(
        spatial,
        {
            "regime": "spatial",
            "model_config": encoder.cfg.to_dict(),
            "encoder": encoder.state_dict(),
            "head": {"fc.weight": torch.zeros(3, 32), "fc.bias": torch.zeros(3)},
            "head_type": "SpatialHead",
        },
    )
    with pytest.raises(VinyError, match=r"'spatial' checkpoint with a SpatialHead.*`viny train simmim`"):
        load_simmim(spatial)
    bare = tmp_path / "bare.pt"
    save_checkpoint(
        bare, {"regime": "fresh", "model_config": encoder.cfg.to_dict(), "encoder": encoder.state_dict()}
    )
    with pytest.raises(VinyError, match=r"'fresh' checkpoint with no head"):
        reconstruct_images(bare, out=tmp_path / "x.png")


def test_image_and_output_errors_name_the_file(simmim_ckpt, tmp_path):
    bogus = tmp_path / "notes.png"
    bogus.write_text("not an image")
    with pytest.raises(VinyError, match="cannot read image file .*notes.png"):
        reconstruct_images(simmim_ckpt, [str(bogus)], out=tmp_path / "a.png")
    with pytest.raises(VinyError, match="missing.jpg.* not found.*DATASET:INDEX"):
        reconstruct_images(simmim_ckpt, [str(tmp_path / "missing.jpg")], out=tmp_path / "a.png")
    with pytest.raises(VinyError, match="test split .* holds"):
        reconstruct_images(simmim_ckpt, ["toy-pets:5000"], out=tmp_path / "a.png")
    with pytest.raises(VinyError, match=r"-o must name a \.png file"):
        reconstruct_images(simmim_ckpt, out=tmp_path / "fig2.jpg")


def test_cli_errors_print_a_message_not_a_traceback(tmp_path, monkeypatch, capsys):
    encoder = ViNy("tiny")
    bare = tmp_path / "bare.pt"
    save_checkpoint(
        bare, {"regime": "classify", "model_config": encoder.cfg.to_dict(), "encoder": encoder.state_dict()}
    )
    monkeypatch.setattr(sys, "argv", ["viny", "reconstruct", str(bare), "-o", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "'classify' checkpoint" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_draws_the_default_test_images_reproducibly(simmim_ckpt, tmp_path):
    out = tmp_path / "fig2.png"
    result = CliRunner().invoke(app, ["reconstruct", str(simmim_ckpt), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 5000 and "masked L1" in result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert [row["image"].split(" (")[0] for row in data["images"]] == [
        f"toy-pets test image {i}" for i in range(4)
    ]
    for row in data["images"]:
        assert len(row["mask"]) == 8 and "".join(row["mask"]).count("1") == 32
        assert np.isfinite(row["masked_l1"]["reconstruction"])
    assert data["mask_seed"] == 0 and data["checkpoint"] == str(simmim_ckpt)
    # The same seed draws the same masks; another seed other masks.
    again = reconstruct_images(simmim_ckpt, out=tmp_path / "again.png")
    assert [r["mask"] for r in again["images"]] == [r["mask"] for r in data["images"]]
    other = reconstruct_images(simmim_ckpt, out=tmp_path / "other.png", seed=1)
    assert [r["mask"] for r in other["images"]] != [r["mask"] for r in data["images"]]


def test_cli_takes_image_files_and_embedded_images(simmim_ckpt, tmp_path):
    picture = tmp_path / "odd.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 50, 4), dtype=np.uint8), "RGBA").save(
        picture
    )
    out = tmp_path / "two.png"
    result = CliRunner().invoke(
        app, ["reconstruct", str(simmim_ckpt), str(picture), "toy-pets:2", "--mask-seed", "7", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(out.with_suffix(".json").read_text())
    assert [r["image"] for r in data["images"]][0] == str(picture)
    assert data["images"][1]["image"].startswith("toy-pets test image 2") and data["mask_seed"] == 7
    mask = torch.tensor([[int(c) for c in "".join(r["mask"])] for r in data["images"]], dtype=torch.bool)
    assert torch.equal(mask, fixed_half_masks(2, 64, seed=7))
