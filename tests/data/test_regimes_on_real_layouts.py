"""Every regime trains on a folder in its real published layout (tiny fixtures, tiny model)."""

import json

import pytest

from viny_probe.checkpoint import load_checkpoint
from viny_probe.config import TrainConfig
from viny_probe.errors import VinyError
from viny_probe.trainers import train


def run(tmp_path, regime, dataset, root, **kw):
    cfg = TrainConfig(
        regime=regime,
        model="tiny",
        dataset=dataset,
        data_root=str(root),
        epochs=1,
        batch_size=4,
        device="cpu",
        **kw,
    )
    return train(cfg, tmp_path / f"{regime}-{dataset}", progress=False)


def test_simmim_on_imagenet_layout(tmp_path, imagenet_root):
    r = run(tmp_path, "simmim", "imagenet", imagenet_root.parent, train_size=8)
    info = json.loads((r.run_dir / "data.json").read_text())
    assert info["train"] == 8 and load_checkpoint(r.final_checkpoint)["config"]["dataset"] == "imagenet"


def test_classify_on_intel_layout(tmp_path, make_intel):
    r = run(tmp_path, "classify", "intel", make_intel(nested=True))
    assert 0 <= r.results["test_accuracy"] <= 1


def test_spatial_patch_label_on_intel_layout(tmp_path, make_intel):
    r = run(tmp_path, "spatial", "intel", make_intel(nested=False), targets="patch-label")
    assert 0 <= r.results["test_patch_accuracy"] <= 1


def test_spatial_and_segment_on_pets_layout(tmp_path, make_pets):
    pets = make_pets()
    s = run(tmp_path, "spatial", "pets", pets.parent, test_size=2)
    seg = run(
        tmp_path, "segment", "pets", pets.folder, test_size=2, train_size=3, init=str(s.final_checkpoint)
    )
    assert seg.results["test"]["pixel_accuracy"] >= 0
    assert json.loads((seg.run_dir / "data.json").read_text())["test"] == 2


def test_classify_pets_breeds_and_too_small_message(tmp_path, make_pets):
    pets = make_pets()
    r = run(tmp_path, "classify", "pets", pets.parent, test_size=2)
    assert load_checkpoint(r.final_checkpoint)["head"]["fc.weight"].shape[0] == 3  # 3 breeds in the fixture
    with pytest.raises(VinyError, match="has 6 images"):
        run(tmp_path, "segment", "pets", pets.parent, test_size=2, train_size=10)


def test_missing_folder_names_the_layout(tmp_path):
    with pytest.raises(VinyError, match="images/"):
        run(tmp_path, "segment", "pets", tmp_path / "nowhere")


def test_workers_reach_the_decoder(tmp_path, make_intel, monkeypatch):
    """`--workers 3` decodes with 3 threads on a dataset's first read. Mutant: TrainConfig.decoding
    without self.workers -> the decoder sees 0 (one thread per core)."""
    from viny_probe.data import cache

    seen = []
    real = cache._decoded

    def recording(samples, how, *rest):
        seen.append(how.options.workers)
        return real(samples, how, *rest)

    monkeypatch.setattr(cache, "_decoded", recording)
    run(tmp_path, "classify", "intel", make_intel(nested=True), workers=3)
    assert seen and set(seen) == {3}
