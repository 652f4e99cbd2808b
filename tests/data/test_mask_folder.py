"""A mask dataset with its own value map (item 3 of issue 19): 0/1/2 values and an ignore value 255,
loaded through the built-in mask-folder dataset (its classes.json), cached and read back identically,
labelled per patch without the ignored pixels, and probed by `viny probe` under its own class names.

Mutants applied once each (the named test failed, then reverted):
- the value map ignored (``decode.load_mask`` looking values up in TRIMAP's table): test_value_map_is_applied.
- the cache not restoring the classes (``read_entry`` with ``mask_classes=TRIMAP``):
  test_cached_and_read_back_identically.
- ignored pixels voting (``patch_majority_labels`` without the UNLABELLED rule): test_ignored_pixels_label_no_patch.
- the probe's class names hard-coded again (``LayerTokens.class_names`` left at SEG_CLASSES in
  checkpoint_probe): test_viny_probe_uses_the_dataset_classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.plugins.shapes import make_shapes
from viny_probe.analysis.evaluation_data import check_dataset_name, patch_labels
from viny_probe.cli import app
from viny_probe.data import load_dataset
from viny_probe.data.base import IGNORE, MaskClasses
from viny_probe.data.cache import DecodeOptions
from viny_probe.data.masks import load_mask_folder
from viny_probe.errors import VinyError

# A map that is not the identity, so a decoder that ignores it is caught.
CLASSES = {"names": ["square", "sky", "disc"], "values": {"0": 1, "1": 2, "2": 0}, "ignore": [255]}
FILE_TO_CLASS = np.array([1, 2, 0], np.uint8)


@pytest.fixture
def shapes(tmp_path: Path) -> Path:
    root = make_shapes(tmp_path / "shapes", count=12, size=32)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    return root


def _file_mask(root: Path, image_id: str) -> np.ndarray:
    return np.asarray(Image.open(root / "masks" / f"{image_id}.png"))


def test_value_map_is_applied(shapes: Path, tmp_path: Path) -> None:
    data = load_dataset("mask-folder", size=32, data_root=shapes, cache_dir=tmp_path / "c")
    assert data.mask_classes.names == ("square", "sky", "disc")
    for i, image_id in enumerate(data.ids):
        raw = _file_mask(shapes, image_id)
        expected = np.where(raw == 255, IGNORE, FILE_TO_CLASS[np.minimum(raw, 2)])
        assert np.array_equal(data.masks[i].numpy(), expected)


def test_undeclared_value_is_refused_naming_the_file(shapes: Path, tmp_path: Path) -> None:
    narrow = MaskClasses(names=("a", "b", "c"), values={0: 0, 1: 1, 2: 2})  # 255 not declared
    with pytest.raises(VinyError, match=r"masks/shape_\d+\.png.*found values \[255\]"):
        load_mask_folder(
            shapes, narrow, size=32, cache_dir=tmp_path / "c", decoding=DecodeOptions(on_error="fail")
        )


def test_cached_and_read_back_identically(shapes: Path, tmp_path: Path) -> None:
    first = load_dataset("mask-folder", size=32, data_root=shapes, cache_dir=tmp_path / "c")
    entries = list((tmp_path / "c").iterdir())
    meta = json.loads((entries[0] / "meta.json").read_text())
    assert meta["mask_classes"]["names"] == CLASSES["names"]
    again = load_dataset("mask-folder", size=32, data_root=shapes, cache_dir=tmp_path / "c")
    assert list((tmp_path / "c").iterdir()) == entries  # a hit, no new entry
    assert np.array_equal(first.masks.numpy(), again.masks.numpy()) and first.ids == again.ids
    assert again.mask_classes == first.mask_classes and again.mask_classes.names == ("square", "sky", "disc")
    # another value map is another entry, never the stale masks of the first
    (shapes / "classes.json").write_text(json.dumps({**CLASSES, "values": {"0": 0, "1": 1, "2": 2}}))
    other = load_dataset("mask-folder", size=32, data_root=shapes, cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c").iterdir())) == 2
    assert not np.array_equal(other.masks.numpy(), first.masks.numpy())


def test_ignored_pixels_label_no_patch(shapes: Path, tmp_path: Path) -> None:
    data = load_dataset("mask-folder", size=32, data_root=shapes, cache_dir=tmp_path / "c")
    labels = patch_labels(data, patch_size=4)  # the 255 stripe is the top 4 rows: the first patch row
    assert (labels[:, :8] == -1).all() and (labels[:, 8:] >= 0).all()


def test_errors_list_the_datasets_with_masks() -> None:
    with pytest.raises(VinyError, match=r"imagenet' has no masks.*use one of") as info:
        check_dataset_name("imagenet")
    listed = str(info.value).rsplit("use one of ", 1)[1].split(", ")
    assert {"pets", "toy-pets", "mask-folder"} <= set(listed) and "imagenet" not in listed


def test_viny_probe_uses_the_dataset_classes(shapes: Path, tmp_path: Path, monkeypatch) -> None:
    from viny_probe.config import TrainConfig
    from viny_probe.trainers import train

    monkeypatch.setenv("VINY_CACHE_DIR", str(tmp_path / "c"))
    cfg = TrainConfig(
        regime="simmim", model="tiny", epochs=1, batch_size=8, train_size=8, test_size=8, device="cpu"
    )
    run = train(cfg, tmp_path / "run", progress=False)
    result = CliRunner().invoke(
        app,
        [
            "probe", str(run.final_checkpoint), "--dataset", "mask-folder", "--data-root", str(shapes),
            "--test-size", "4", "--probe-images", "8", "--test-images", "4", "--json",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    final = json.loads(result.stdout)["layers"]["final"]
    assert list(final["probe"]["per_class_accuracy"]) == ["square", "sky", "disc"]
    assert list(final["knn"]["per_class_accuracy"]) == ["square", "sky", "disc"]
