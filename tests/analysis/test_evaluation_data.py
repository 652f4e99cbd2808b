"""The evaluation images: which images, generated how, chosen from which lineages."""

from __future__ import annotations

import pytest
import torch

from viny_probe.analysis.checkpoint_probe import probe_checkpoint
from viny_probe.analysis.evaluation_data import load_probe_data
from viny_probe.analysis.options import DiagnoseOptions, EvalSet, ModelOptions, ProbeOptions
from viny_probe.config import TrainConfig
from viny_probe.data import dataset_spec, load_dataset
from viny_probe.data.protocol import make_split
from viny_probe.errors import VinyError


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


@pytest.fixture(scope="module")
def pre_and_seg(tmp_path_factory):
    """PRE: SimMIM on toy-pets holding out 16 test images; SEG: segmentation from PRE holding out 8,
    so SEG trained on 8 of PRE's 16 test images and PRE on none of SEG's 8 (the demo's two
    checkpoints in miniature)."""
    from viny_probe.trainers import train

    out = tmp_path_factory.mktemp("lineages")
    small = dict(model="tiny", epochs=1, batch_size=8, train_size=16, device="cpu")
    pre = train(
        TrainConfig(regime="simmim", dataset="toy-pets", test_size=16, **small), out / "pre", progress=False
    ).final_checkpoint
    seg = train(
        TrainConfig(regime="segment", init=str(pre), test_size=8, **small), out / "seg", progress=False
    ).final_checkpoint
    return pre, seg


def test_diagnose_in_either_order_evaluates_on_the_split_neither_trained_on(pre_and_seg, tmp_path):
    """``diagnose PRE SEG`` and ``diagnose SEG PRE`` both score on SEG's 8 test images (PRE's 16
    include 8 SEG trained on), say so, and give each checkpoint the same Table 2 numbers. Mutant:
    ``resolve_evaluation`` taking the first checkpoint's split (``split = splits[0]`` ordered as
    given) -> PRE SEG is refused."""
    from viny_probe.analysis.diagnose import diagnose

    pre, seg = pre_and_seg
    small = dict(data=EvalSet(probe_images=12, test_images=8), probe=ProbeOptions(knn=False))
    small.update(figures=DiagnoseOptions(depth_probe_images=6, cka_images=6, fig6_images=1))
    small.update(model=ModelOptions(use_cache=False), progress=False)
    a = diagnose([pre, seg], ["PRE", "SEG"], tmp_path / "a", **small)
    b = diagnose([seg, pre], ["SEG", "PRE"], tmp_path / "b", **small)
    for summary in (a, b):
        where = summary["data"][32]
        assert (where["dataset"], where["split_seed"], where["test_size"]) == ("toy-pets", 0, 8)
        assert (
            "SEG's lineage" in where["chosen"][0]
            and "none of the checkpoints trained on" in where["chosen"][0]
        )
        assert any(
            "PRE's lineage points to test_size 16" in n and "SEG trained on" in n for n in where["chosen"]
        )
    rows = {name: [r for r in b["table2"] if r["checkpoint"] == name][0] for name in ("PRE", "SEG")}
    for row in a["table2"]:
        assert row == rows[row["checkpoint"]]


def test_a_refusal_names_the_checkpoint_and_stage_that_trained_on_the_images(pre_and_seg):
    """Asked for PRE's 16 test images, the refusal names SEG and its segment stage (8 shared), not PRE.
    Mutant: ``_overlap_stages`` returning [] -> the stage is not named."""
    pre, seg = pre_and_seg
    data = EvalSet(test_size=16, probe_images=4, test_images=16)
    with pytest.raises(VinyError) as err:
        probe_checkpoint(seg, data=data, probe=ProbeOptions(knn=False), progress=False)
    assert "8 of the 16 evaluation images" in str(err.value)
    assert "its segment stage (split seed 0, test size 8) trained on 8" in str(err.value)
    probe_checkpoint(pre, data=data, probe=ProbeOptions(knn=False), progress=False)


def test_the_default_probe_pool_is_the_studys_patches_on_each_grid(tmp_path):
    """EvalSet.probe_images None = 128,000 pool patches on the model's grid: 2000 images on 8 x 8, 654 on
    14 x 14, 500 on 16 x 16 (checked end to end on a 32-px encoder with 2-px patches); a given count
    wins. Mutants killed: pool_images ignoring the grid (2000 for every model), probe_checkpoint not
    resolving the pool for its model (None reaches the loader)."""
    from viny_probe.analysis.checkpoint_probe import probe_checkpoint
    from viny_probe.analysis.options import EvalSet, ModelOptions, ProbeOptions
    from viny_probe.checkpoint import save_checkpoint
    from viny_probe.model import ViNy, ViTConfig

    assert [EvalSet().pool_images(p) for p in (64, 196, 256)] == [2000, 654, 500]
    assert EvalSet(probe_images=37).pool_images(196) == 37
    torch.manual_seed(0)
    model = ViNy(ViTConfig(image_size=32, patch_size=2, dim=16, depth=1, heads=2, dim_head=8, mlp_dim=32))
    path = tmp_path / "grid16.pt"
    save_checkpoint(
        path, {"regime": "fresh", "model_config": model.cfg.to_dict(), "encoder": model.state_dict()}
    )
    result = probe_checkpoint(
        path,
        model=ModelOptions(use_cache=False),
        data=EvalSet(dataset="toy-pets", test_size=20, test_images=20),
        probe=ProbeOptions(knn=False),
        progress=False,
    )
    assert result["data"]["probe_images"] == 500
