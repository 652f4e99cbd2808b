"""DatasetSpec: a dataset registered from outside viny_probe/ is loaded, split and listed like a built-in one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from viny_probe.config import TrainConfig
from viny_probe.data import dataset_names, load_dataset
from viny_probe.data.base import ImageSet
from viny_probe.data.spec import DatasetSpec, dataset_spec
from viny_probe.errors import VinyError
from viny_probe.registry import DATASETS
from viny_probe.trainers import splits


def _toy_loader(calls: list):
    def load(root, *, size, limit, seed, **_):
        calls.append((root, size, limit, seed))
        n = limit or 40
        images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, size, size).clone()
        masks = torch.zeros(n, size, size, dtype=torch.uint8)
        return ImageSet(name="toy-dots", images=images, masks=masks, ids=[f"dot-{i}" for i in range(n)])

    return load


@pytest.fixture
def toy_dots():
    calls: list = []
    spec = DatasetSpec(
        name="toy-dots",
        load=_toy_loader(calls),
        description="forty grey squares",
        targets="trimaps",
        held_out="fixed",
        size=40,
        embedded=True,
    )
    with DATASETS.registered("toy-dots", spec):
        yield calls


def test_registered_dataset_loads_and_is_listed(toy_dots) -> None:
    data = load_dataset("toy-dots", size=8, limit=12, seed=3)
    assert len(data) == 12 and toy_dots == [(None, 8, 12, 3)]
    assert "toy-dots" in dataset_names(trimaps=True) and "toy-dots" in dataset_names(embedded=True)


def test_registered_dataset_takes_the_fixed_split_rule(toy_dots) -> None:
    """Mutant: held_out_size ignoring the "fixed" rule (a fifth for every set) -> 8 test images, not 10."""
    cfg = TrainConfig(regime="segment", dataset="toy-dots", test_size=10, train_size=5).resolved()
    train, test, info = splits.train_test(cfg, 8)
    assert len(test) == 10 and len(train) == 5
    assert not set(train.ids) & set(test.ids)
    # A fixed embedded set is generated at its registered size, whatever the run asks for.
    assert toy_dots[-1][2] == 40


def test_the_fifth_rule_caps_the_held_out_images(toy_dots) -> None:
    fifth = dataclasses.replace(dataset_spec("toy-dots"), held_out="fifth")
    with DATASETS.registered("toy-dots", fifth, replace=True):
        assert splits.held_out_size("toy-dots", 1000, 40) == 8
    assert splits.held_out_size("toy-dots", 1000, 40) == 1000  # the fixed rule is back


def test_unknown_names_list_the_registered_ones(toy_dots) -> None:
    with pytest.raises(VinyError, match="toy-dots"):
        load_dataset("cifar")
    with pytest.raises(VinyError, match="unknown dataset 'cifar'"):
        TrainConfig(regime="segment", dataset="cifar").resolved()


def test_a_spec_checks_its_rule() -> None:
    with pytest.raises(ValueError, match="held_out"):
        DatasetSpec(name="x", load=lambda *a, **k: None, description="", held_out="half")


def test_a_dataset_note_reaches_data_json_provenance(toy_dots) -> None:
    """Mutant: provenance without the spec's notes -> no "notes" in data.json."""
    noted = dataclasses.replace(dataset_spec("toy-dots"), notes=lambda: ["stand-in photos"])
    with DATASETS.registered("toy-dots", noted, replace=True):
        cfg = TrainConfig(regime="segment", dataset="toy-dots", test_size=10, train_size=5).resolved()
        _, _, info = splits.train_test(cfg, 8)
    assert info["notes"] == ["stand-in photos"]
    _, _, info = splits.train_test(cfg, 8)
    assert "notes" not in info  # nothing to say, nothing written
