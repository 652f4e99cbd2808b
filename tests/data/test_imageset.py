import torch

from viny_probe.data.base import ImageSet


def _set(n: int = 4, masks: bool = True) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    return ImageSet(
        name="t",
        images=torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8),
        labels=torch.arange(n),
        masks=torch.randint(0, 3, (n, 8, 8), generator=g, dtype=torch.uint8) if masks else None,
        class_names=[str(i) for i in range(n)],
        ids=[f"img{i}" for i in range(n)],
    )


def test_nbytes_counts_images_labels_and_masks():
    assert _set(4).nbytes == 4 * 3 * 64 + 4 * 8 + 4 * 64
    assert _set(4, masks=False).nbytes == 4 * 3 * 64 + 4 * 8


def test_to_moves_every_tensor_and_keeps_the_rest():
    data = _set(4)
    assert data.to("cpu") is data  # already there: no copy
    moved = data.to("meta")  # a device with no storage stands in for a GPU here
    assert moved is not data
    assert {t.device.type for t in (moved.images, moved.labels, moved.masks)} == {"meta"}
    assert moved.images.shape == data.images.shape and moved.images.dtype == torch.uint8
    assert moved.ids == data.ids and moved.class_names == data.class_names and moved.name == "t"
    assert _set(4, masks=False).to("meta").masks is None


def test_subset_keeps_masks_labels_and_ids_with_their_images_under_an_unsorted_index():
    """Image i is filled with i, its mask with i, its label is i and its id img{i}: the subset at the
    unsorted index [3, 0, 2] holds 3, 0, 2 in every field. Mutant: masks taken at the sorted index
    (``self.masks[index]`` -> ``self.masks[index.sort().values]``) -> mask 0 sits with image 3."""
    n = 5
    data = ImageSet(
        name="t",
        images=torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 4, 4).clone(),
        labels=torch.arange(n),
        masks=torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 4, 4).clone(),
        class_names=[str(i) for i in range(n)],
        ids=[f"img{i}" for i in range(n)],
    )
    sub = data.subset(torch.tensor([3, 0, 2]))
    assert sub.images[:, 0, 0, 0].tolist() == [3, 0, 2]
    assert sub.masks[:, 0, 0].tolist() == [3, 0, 2]
    assert sub.labels.tolist() == [3, 0, 2]
    assert sub.ids == ["img3", "img0", "img2"]
