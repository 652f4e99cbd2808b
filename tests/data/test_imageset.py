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
