import torch

from viny_probe.data.augment import contrast_jitter, mixup, random_hflip, random_resized_crop
from viny_probe.trainers.simmim import masked_l1, random_half_mask


def test_flip_is_joint_and_seeded():
    """16 images whose pixels are 100 * index + column, their masks the column: each image is either
    as it was with its mask, or both are mirrored; both happen; the same seed flips the same ones.
    Mutants: masks flipped on the other axis (``t.flip(-1)`` -> ``t.flip(-2)``) -> a mirrored image
    with an upside-down mask; nothing flipped (``< 0.5`` -> ``< 0.0``) -> no image is mirrored."""
    column = torch.arange(4.0).expand(4, 4)
    x = (100 * torch.arange(16.0).view(16, 1, 1, 1) + column).expand(16, 3, 4, 4).clone()
    m = column.expand(16, 4, 4).clone() + torch.arange(4.0).view(4, 1) * 10  # rows differ too
    a = random_hflip(torch.Generator().manual_seed(1), x, m)
    b = random_hflip(torch.Generator().manual_seed(1), x, m)
    torch.testing.assert_close(a[0], b[0])
    mirrored = []
    for i in range(16):
        if torch.equal(a[0][i], x[i]):
            assert torch.equal(a[1][i], m[i]), i
            mirrored.append(False)
        else:
            assert torch.equal(a[0][i], x[i].flip(-1)) and torch.equal(a[1][i], m[i].flip(-1)), i
            mirrored.append(True)
    assert any(mirrored) and not all(mirrored)


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


def test_mixup_mixes_each_image_with_the_target_of_the_same_partner():
    """Image i is filled with the value i, its target is one-hot i: after MixUp, image i is
    lam * i + (1 - lam) * j for one partner j, and its soft target puts exactly lam on i and 1 - lam
    on that same j (the pairing of images and targets survives). Mutant: targets mixed with another
    permutation (``targets[perm]`` -> ``targets[perm.flip(0)]``) -> the target's partner is not the
    image's."""
    n = 8
    x = torch.arange(n, dtype=torch.float64).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
    t = torch.eye(n, dtype=torch.float64)
    xm, tm = mixup(x, t, 0.4, torch.Generator().manual_seed(3))
    moved = 0
    for i in range(n):
        partners = [j for j in range(n) if j != i and tm[i, j] > 0]
        j = partners[0] if partners else i
        lam = tm[i, i].item() if partners else 1.0
        assert len(partners) <= 1
        torch.testing.assert_close(xm[i], lam * x[i] + (1 - lam) * x[j])
        moved += bool(partners)
    assert moved >= n // 2  # most images got a partner (a permutation leaves few in place)


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
    assert (cfg.options.mixup, cfg.augment, cfg.epochs, cfg.lr) == (0.1, "flip-contrast", 200, 8e-4)
    assert TrainConfig(regime="classify", preset="paper").resolved().augment == "crop"
    assert TrainConfig(regime="classify", preset="authors", dataset="pets").resolved().options.mixup == 0.0
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
