import pytest
import torch

from viny_probe.analysis import patch_class_fractions, patch_majority_labels
from viny_probe.errors import VinyError

PET, BG, BD = 0, 1, 2


def _trimap() -> torch.Tensor:
    """One 8x8 trimap of 2x2 patches of 4x4 pixels (16 px each), written patch by patch."""
    patches = {
        (0, 0): [PET] * 16,  # all pet -> 0
        (0, 1): [BG] * 8 + [BD] * 8,  # 8/8 tie background/boundary -> background (lower)
        (1, 0): [BD] * 6 + [PET] * 5 + [BG] * 5,  # boundary majority -> 2
        (1, 1): [PET] * 7 + [BD] * 7 + [BG] * 2,  # 7/7 tie pet/boundary -> pet (lower)
    }
    mask = torch.zeros(8, 8, dtype=torch.uint8)
    for (r, c), pixels in patches.items():
        mask[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4] = torch.tensor(pixels, dtype=torch.uint8).reshape(4, 4)
    return mask[None]


def test_majority_labels_break_ties_to_the_lower_class():
    labels = patch_majority_labels(_trimap(), patch_size=4)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [[PET, BG, BD, PET]]


def test_class_fractions_are_exact_and_row_major():
    fractions = patch_class_fractions(_trimap(), patch_size=4)
    assert fractions.shape == (1, 4, 3)
    expected = torch.tensor([[16, 0, 0], [0, 8, 8], [5, 5, 6], [7, 2, 7]], dtype=torch.float32) / 16
    torch.testing.assert_close(fractions[0], expected)


def test_row_major_order_on_a_wider_grid():
    # Patch (r, c) of a 3x3 grid of 2x2 patches filled with class (3r + c) % 3: row-major order is visible.
    mask = torch.zeros(1, 6, 6, dtype=torch.uint8)
    for r in range(3):
        for c in range(3):
            mask[0, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = (3 * r + c) % 3
    assert patch_majority_labels(mask, 2).tolist() == [[0, 1, 2, 0, 1, 2, 0, 1, 2]]


@pytest.mark.parametrize(
    ("masks", "patch_size", "message"),
    [
        (torch.zeros(8, 8, dtype=torch.uint8), 4, r"\(N, H, W\)"),
        (torch.zeros(1, 8, 12, dtype=torch.uint8), 4, "square"),
        (torch.zeros(1, 10, 10, dtype=torch.uint8), 4, "multiple of patch_size"),
        (torch.full((1, 8, 8), 3, dtype=torch.uint8), 4, "num_classes"),
        (torch.zeros(1, 8, 8), 4, "integer"),
        (torch.zeros(1, 8, 8, dtype=torch.uint8), 0, "patch_size"),
    ],
)
def test_bad_masks_raise_a_clear_error(masks, patch_size, message):
    with pytest.raises(VinyError, match=message):
        patch_majority_labels(masks, patch_size)
