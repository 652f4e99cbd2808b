import torch

from viny_probe.data.augment import contrast_jitter, mixup, random_hflip, random_resized_crop
from viny_probe.trainers.simmim import masked_l1, random_half_mask


def test_flip_is_joint_and_seeded():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    m = x[:, 0].clone()
    a = random_hflip(torch.Generator().manual_seed(1), x, m)
    b = random_hflip(torch.Generator().manual_seed(1), x, m)
    torch.testing.assert_close(a[0], b[0])
    for i in range(2):
        torch.testing.assert_close(a[0][i, 0], a[1][i])  # image and mask flipped together


def test_random_resized_crop_full_scale_is_identity():
    x = torch.rand(3, 3, 16, 16)
    y = random_resized_crop(x, torch.Generator().manual_seed(0), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)
    z = random_resized_crop(x, torch.Generator().manual_seed(0), scale=(0.3, 0.5))
    assert z.shape == x.shape and not torch.allclose(z, x)


def test_contrast_jitter_keeps_range():
    x = torch.rand(4, 3, 8, 8)
    y = contrast_jitter(x, 0.3, torch.Generator().manual_seed(0))
    assert y.min() >= 0 and y.max() <= 1 and not torch.allclose(x, y)


def test_mixup_soft_targets_sum_to_one():
    x, t = torch.rand(6, 3, 4, 4), torch.eye(3)[torch.tensor([0, 1, 2, 0, 1, 2])]
    xm, tm = mixup(x, t, 0.1, torch.Generator().manual_seed(0))
    torch.testing.assert_close(tm.sum(-1), torch.ones(6))
    assert xm.shape == x.shape


def test_simmim_masks_exactly_half():
    mask = random_half_mask(50, 64, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert (mask.sum(1) == 32).all()
    assert not (mask[0] == mask[1]).all()


def test_masked_l1_counts_only_masked_pixels():
    gen = torch.Generator().manual_seed(0)
    mask = random_half_mask(4, 16, gen, torch.device("cpu"))
    pred, target = torch.rand(4, 16, 12), torch.rand(4, 16, 12)
    loss = masked_l1(pred, target, mask)
    changed = pred.clone()
    changed[~mask] += 100.0  # visible patches must not matter
    torch.testing.assert_close(masked_l1(changed, target, mask), loss)
    expected = (pred - target).abs()[mask].mean()
    torch.testing.assert_close(loss, expected)


def test_authors_preset_trains_cls_intel_with_the_codes_transform_and_mixup():
    """--preset authors: CLS-Intel (toy-scenes here) gets MixUp 0.1 and flip + contrast jitter, no crop;
    viny's default crops. Mutant: Classify.prepare ignoring ``augment`` (always cropping): the
    flip-contrast images then are not flips/contrast changes of the input."""
    from viny_probe.config import TrainConfig
    from viny_probe.data.augment import normalize, to_float
    from viny_probe.trainers.classify import Classify

    cfg = TrainConfig(regime="classify", preset="authors").resolved()
    assert (cfg.mixup, cfg.augment, cfg.epochs, cfg.lr) == (0.1, "flip-contrast", 200, 8e-4)
    assert TrainConfig(regime="classify", preset="paper").resolved().augment == "crop"
    assert TrainConfig(regime="classify", preset="authors", dataset="pets").resolved().mixup == 0.0
    assert TrainConfig(regime="simmim", preset="authors").resolved().lr == 1e-3

    g = torch.Generator().manual_seed(0)
    # mid-range pixels, so the contrast factor (0.7..1.3) never clips and the fit below is exact
    images = torch.randint(64, 192, (6, 3, 16, 16), generator=g, dtype=torch.uint8)
    batch = {"images": images, "labels": torch.arange(6) % 3}
    regime = Classify()
    regime.num_classes, regime.mixup_alpha, regime.augment = 3, 0.0, "flip-contrast"
    out = regime.prepare(batch, torch.Generator().manual_seed(1))["images"]
    x = to_float(images)
    for i in range(6):
        # no crop: each output is the image or its mirror, with its contrast scaled about its grey mean
        raw = out[i] * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) + torch.tensor(
            [0.485, 0.456, 0.406]
        ).view(3, 1, 1)
        fits = []
        for candidate in (x[i], x[i].flip(-1)):
            centred, target = candidate - candidate.mean(), raw - raw.mean()
            factor = (centred * target).sum() / centred.square().sum()
            fits.append(((target - factor * centred).abs().max() < 1e-4) and 0.69 < factor < 1.31)
        assert any(fits), i
    assert not torch.allclose(out, normalize(x))  # something was applied
