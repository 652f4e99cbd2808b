"""The evaluation images: which images, generated how, chosen from which lineages."""

from __future__ import annotations

import torch

from viny_probe.analysis.evaluation_data import load_probe_data
from viny_probe.data import dataset_spec, load_dataset
from viny_probe.data.protocol import make_split


def test_embedded_probe_data_generates_only_its_images_and_they_are_the_whole_sets(tmp_path, monkeypatch):
    """On a fresh cache, ``load_probe_data`` on toy-pets generates the 3 pool and 2 test images it
    uses, not the 3,000 (one cache entry of 5 images), and they are, image by image with masks, labels
    and ids, those the whole set holds at the split's indices. Mutants: ``both.masks`` ->
    ``both.masks.flip(0)`` -> the masks leave their images; ``torch.cat([train_idx, test_idx])`` ->
    ``torch.cat([test_idx, train_idx])`` -> the pool holds test images."""
    monkeypatch.setenv("VINY_CACHE_DIR", str(tmp_path))
    pool, test, info = load_probe_data("toy-pets", 32, test_size=20, probe_images=3, test_images=2)
    entries = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1
    assert len(pool) + len(test) == 5 and info["images_in_dataset"] == 3000
    whole = load_dataset("toy-pets", size=32, limit=3000, seed=0)
    split = make_split(whole.ids, 20, 0)
    for got, index in ((pool, split.pool[:3]), (test, split.test[:2])):
        assert got.ids == [whole.ids[i] for i in index.tolist()]
        assert torch.equal(got.images, whole.images[index])
        assert torch.equal(got.masks, whole.masks[index])
        assert torch.equal(got.labels, whole.labels[index])
    assert dataset_spec("toy-pets").ids(3000, 0) == whole.ids
