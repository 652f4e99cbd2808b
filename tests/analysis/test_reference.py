import numpy as np
import pytest
import torch

from viny_probe.analysis import (
    choose_reference_patches,
    parse_patch,
    parse_pixel,
    pixel_to_patch,
    similarity_map,
    similarity_maps,
)
from viny_probe.errors import VinyError

PET, BG, BD = 0, 1, 2


def test_similarity_map_of_row_one_hot_embeddings():
    g = 4
    emb = torch.nn.functional.one_hot(torch.arange(g * g) // g, g).float() * 2.0
    expected = np.zeros((g, g))
    expected[1] = 1.0  # reference on row 1: cos 1 on its row, 0 elsewhere
    np.testing.assert_allclose(similarity_map(emb, (1, 3)), expected)
    np.testing.assert_allclose(similarity_map(emb, 7), expected)  # index 7 = (1, 3)
    maps = similarity_maps(emb, {"a": (1, 3), "b": 0})
    assert maps["b"][0].tolist() == [1.0] * 4 and maps["b"][1:].sum() == 0


def test_similarity_map_of_opposite_vectors():
    emb = torch.tensor([[1.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    np.testing.assert_allclose(similarity_map(emb, 0), [[1.0, -1.0], [0.0, 2**-0.5]], atol=1e-7)


@pytest.mark.parametrize(
    ("emb", "patch", "message"),
    [
        (torch.zeros(64, 8), 64, r"patch = 64 is outside the 64 patches: it must be in 0\.\.63"),
        (torch.zeros(64, 8), (8, 0), r"patch = \(8, 0\) is outside the 8x8 patch grid.*0\.\.7"),
        (torch.zeros(64, 8), (-1, 2), "outside"),
        (torch.zeros(63, 8), 0, "not a square"),
        (torch.zeros(1, 64, 8), 0, r"\(P, D\)"),
        (torch.zeros(64, 8), "3", "patch index"),
    ],
)
def test_similarity_map_rejects_bad_input(emb, patch, message):
    with pytest.raises(VinyError, match=message):
        similarity_map(emb, patch)


def _hand_trimap() -> torch.Tensor:
    """4x4 grid of 2x2-pixel patches (8x8 px), background unless set below."""
    mask = torch.full((8, 8), BG, dtype=torch.uint8)

    def put(r, c, pixels):
        mask[2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = torch.tensor(pixels, dtype=torch.uint8).reshape(2, 2)

    put(0, 0, [PET, PET, BD, BD])  # corner, 0% background
    put(3, 3, [PET, BG, BG, BG])  # corner, 75% background; (0, 3) and (3, 0) are 100% -> (0, 3) wins the tie
    put(1, 1, [PET, PET, PET, BD])  # most pet (75%) but boundary 25% > 20%: not eligible
    put(2, 2, [PET, PET, BG, BG])  # 50% pet, no boundary: the foreground reference
    put(1, 2, [BD, BD, BD, BD])  # most boundary
    return mask


def test_reference_choice_on_a_hand_made_trimap():
    """The study's code takes patch (0, 0) as the background reference even where it is not background
    (here it is pet and boundary); the most-background corner is the option. Mutant: the option's
    default swapped (the first assertion then gets (0, 3))."""
    refs = choose_reference_patches(_hand_trimap(), patch_size=2)
    assert refs == {"background": (0, 0), "foreground": (2, 2), "boundary": (1, 2)}
    corner = choose_reference_patches(_hand_trimap(), patch_size=2, background="most-background-corner")
    assert corner == {"background": (0, 3), "foreground": (2, 2), "boundary": (1, 2)}
    with pytest.raises(VinyError, match="most-background-corner"):
        choose_reference_patches(_hand_trimap(), patch_size=2, background="darkest")


def test_boundary_fraction_of_exactly_one_fifth_is_allowed():
    # 5x5-pixel patches on a 2x2 grid: patch (1, 1) is 20 pet + 5 boundary px (boundary fraction 0.2 exactly).
    mask = torch.full((10, 10), BG, dtype=torch.uint8)
    mask[5:, 5:] = PET
    mask[9, 5:] = BD
    mask[0:5, 0:5] = torch.tensor([PET] * 13 + [BG] * 12, dtype=torch.uint8).reshape(5, 5)  # less pet
    assert choose_reference_patches(mask, patch_size=5)["foreground"] == (1, 1)


def test_default_references_without_a_mask():
    assert choose_reference_patches() == {"centre": (4, 4), "top_left_corner": (0, 0)}
    assert choose_reference_patches(grid=5) == {"centre": (2, 2), "top_left_corner": (0, 0)}


def test_reference_choice_rejects_bad_masks():
    with pytest.raises(VinyError, match=r"mask must have shape \(H, W\)"):
        choose_reference_patches(torch.zeros(1, 8, 8, dtype=torch.uint8), patch_size=2)
    with pytest.raises(VinyError, match="disagrees"):
        choose_reference_patches(torch.zeros(8, 8, dtype=torch.uint8), patch_size=2, grid=8)


def test_parse_patch_and_pixels():
    assert parse_patch("3,4") == (3, 4)
    assert parse_patch(" 7 , 0 ", grid=8) == (7, 0)
    assert pixel_to_patch(127, 0) == (7, 0)
    assert pixel_to_patch(15, 16) == (0, 1)
    assert parse_pixel("64,31") == (4, 1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: parse_patch("8,0", argument="--patch"),
            r"--patch = \(8, 0\) is outside the 8x8 patch grid.*0\.\.7",
        ),
        (lambda: parse_patch("1;2"), r"patch must be two integers 'ROW,COL'"),
        (lambda: parse_patch("1,2,3"), "two integers"),
        (lambda: pixel_to_patch(128, 0), r"pixel = \(128, 0\) is outside the 128x128 image.*0\.\.127"),
        (lambda: parse_pixel("-1,5", argument="--pixel"), r"--pixel = \(-1, 5\)"),
        (lambda: pixel_to_patch(0, 0, patch_size=16, image_size=100), "multiple of patch_size"),
    ],
)
def test_parsing_errors_name_the_argument_and_range(call, message):
    with pytest.raises(VinyError, match=message):
        call()
