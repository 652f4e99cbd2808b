import json

import numpy as np
import pytest
import torch

from viny_probe.analysis import (
    MapScale,
    plot_cka_heatmap,
    plot_depth_curves,
    plot_reference_grid,
    plot_reference_panel,
    plot_similarity_overlay,
    plot_similarity_vs_distance,
    similarity_vs_distance,
)
from viny_probe.errors import VinyError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _written(path) -> dict:
    assert path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > 5000
    return json.loads(path.with_suffix(".json").read_text())


def _image(seed: int = 0) -> torch.Tensor:
    return torch.randint(
        0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


def test_similarity_vs_distance_figure(tmp_path):
    """Fig 5 as the study draws it: every curve starts at distance 0 with cosine 1 (a patch with itself)
    and runs to the 4x4 grid's largest distance, 6; the measured points follow unchanged. Mutant
    (applied once, failed, reverted): ``from_zero`` defaulting to False -> distances start at 1."""
    g = torch.Generator().manual_seed(0)
    curves = {
        "pretrained": similarity_vs_distance(torch.randn(5, 16, 4, generator=g) + 1),
        "spatial": similarity_vs_distance(torch.randn(1, 16, 4, generator=g)),
    }  # one image: NaN band
    path = tmp_path / "fig5.png"
    returned = plot_similarity_vs_distance(curves, path)
    data = _written(path)
    assert data == returned
    assert list(data["curves"]) == ["pretrained", "spatial"]
    drawn = data["curves"]["pretrained"]
    assert drawn["distances"] == [0, 1, 2, 3, 4, 5, 6]
    assert drawn["mean"][0] == drawn["low"][0] == drawn["high"][0] == 1.0
    np.testing.assert_allclose(drawn["mean"][1:], curves["pretrained"].mean)
    np.testing.assert_allclose(drawn["high"][1:], curves["pretrained"].high)
    assert data["curves"]["spatial"]["low"] == [1.0] + [None] * 6  # NaN is written as null
    assert data["curves"]["spatial"]["distances"] == [0, 1, 2, 3, 4, 5, 6]
    cut = plot_similarity_vs_distance(curves, tmp_path / "fig5-cut.png", from_zero=False, max_distance=4)
    assert cut["curves"]["pretrained"]["distances"] == [1, 2, 3, 4]


def test_reference_grid_figure(tmp_path):
    rng = np.random.default_rng(0)
    refs = {"background": (0, 7), "foreground": (3, 4)}
    maps = {
        ckpt: {r: rng.uniform(-1, 1, (8, 8)) for r in refs} for ckpt in ("pretrained", "cls-intel", "spatial")
    }
    path = tmp_path / "sub" / "fig6.png"
    plot_reference_grid({"background": _image(0), "foreground": _image(1)}, maps, refs, path)
    data = _written(path)
    assert data["vmin"] == -0.5 and data["vmax"] == 1.0
    assert data["refs"] == {"background": [0, 7], "foreground": [3, 4]}
    assert list(data["maps"]) == ["pretrained", "cls-intel", "spatial"]
    np.testing.assert_allclose(data["maps"]["spatial"]["foreground"], maps["spatial"]["foreground"])
    with pytest.raises(VinyError, match="has no map for reference"):
        plot_reference_grid(_image(), {"x": {"foreground": np.zeros((8, 8))}}, refs, tmp_path / "bad.png")


def test_similarity_overlay_figure(tmp_path):
    grid = np.linspace(-1, 1, 16).reshape(4, 4)
    path = tmp_path / "overlay.png"
    plot_similarity_overlay(_image().numpy(), grid, (2, 1), path)
    data = _written(path)
    assert data["refs"] == {"patch": [2, 1]} and data["image_shape"] == [64, 64, 3]
    np.testing.assert_allclose(data["maps"]["patch"], grid)
    with pytest.raises(VinyError, match=r"\(3, H, W\) uint8"):
        plot_similarity_overlay(np.zeros((64, 64, 3)), grid, (0, 0), tmp_path / "x.png")
    with pytest.raises(VinyError, match="outside the 4x4 grid"):
        plot_similarity_overlay(_image(), grid, (4, 0), tmp_path / "x.png")


def test_depth_curves_figure(tmp_path):
    per_block = {
        "pretrained": {
            "within_image_variance": [0.1, 0.2, 0.3],
            "effective_rank": [10.0, 20.0, float("nan")],
        },
        "spatial": {"within_image_variance": [0.3, 0.2, 0.1]},
    }
    path = tmp_path / "depth.png"
    plot_depth_curves(per_block, path)
    data = _written(path)
    assert data["per_block"]["spatial"] == {"within_image_variance": [0.3, 0.2, 0.1]}
    assert data["per_block"]["pretrained"]["effective_rank"] == [10.0, 20.0, None]


def test_cka_heatmap_figure(tmp_path):
    matrix = np.random.default_rng(0).uniform(0, 1, (4, 3))
    path = tmp_path / "cka.png"
    plot_cka_heatmap(matrix, ("pretrained", "spatial"), path)
    data = _written(path)
    np.testing.assert_allclose(data["matrix"], matrix)
    assert data["names"] == ["pretrained", "spatial"]
    assert data["row_labels"] == ["0", "1", "2", "3"] and data["col_labels"] == ["0", "1", "2"]
    with pytest.raises(VinyError, match="must end in .png"):
        plot_cka_heatmap(matrix, ("a", "b"), tmp_path / "cka.pdf")


def test_reference_panel_is_laid_out_as_the_study(tmp_path):
    """Fig 6 in the study's layout: the input (column 0, top, the three references marked), the target
    mask under it, then one row per reference and one column per encoder in the study's order Spatial,
    Classification (CLS-Intel), Pretrained, with CLS-Pets (not in the study's figure) after them; each
    map's red square sits on its reference patch (read back from the drawn square). Mutant (applied once,
    failed, reverted): ``paper_fig6_order`` returning the given order -> encoders pretrained, cls-intel,
    cls-pets, spatial."""
    rng = np.random.default_rng(1)
    refs = {"background": (0, 0), "foreground": (3, 4), "boundary": (5, 2)}
    given = ("pretrained", "cls-intel", "cls-pets", "spatial")  # Table 2's order, as diagnose holds them
    maps = {c: {r: rng.uniform(-1, 1, (8, 8)) for r in refs} for c in given}
    target = torch.randint(0, 3, (64, 64), generator=torch.Generator().manual_seed(2))
    path = tmp_path / "fig6.png"
    plot_reference_panel(_image(3), target, maps, refs, path)
    data = _written(path)
    assert data["encoders"] == ["spatial", "cls-intel", "pretrained", "cls-pets"]
    np.testing.assert_array_equal(data["target"], target.numpy())
    where = {(p["row"], p["col"]): p for p in data["panels"]}
    assert where[0, 0]["shows"] == "input" and where[0, 0]["marks"] == [[0, 0], [3, 4], [5, 2]]
    assert where[1, 0]["shows"] == "target"
    for i, r in enumerate(refs):
        for j, c in enumerate(data["encoders"], start=1):
            panel = where[i, j]
            assert (panel["encoder"], panel["ref"], panel["marks"]) == (c, r, [list(refs[r])])
            np.testing.assert_allclose(data["maps"][c][r], maps[c][r])
    assert len(data["panels"]) == 2 + 3 * 4
    with pytest.raises(VinyError, match="target must be"):
        plot_reference_panel(_image(3), target[:32], maps, refs, tmp_path / "bad.png")


def test_maps_are_drawn_in_the_given_colour_scale(tmp_path, monkeypatch):
    """Every map of plot_reference_panel, plot_reference_grid and plot_similarity_overlay is drawn in the
    ``MapScale`` given (colour limits and colour map, as drawn, and in the JSON); the default is the
    study's -0.5..1 in viridis. Mutant seen failing: plot_reference_panel drawing with ``MapScale()``
    instead of its ``scale``."""
    from viny_probe.analysis import plots

    drawn = []
    save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path, data: drawn.append(fig) or save(fig, path, data))

    def scales(fig) -> set:
        return {
            (*im.get_clim(), im.get_cmap().name)
            for ax in fig.axes
            for im in ax.images
            if im.get_array().ndim == 2
        }

    refs = {"a": (0, 0), "b": (2, 1)}
    maps = {c: {r: np.zeros((4, 4)) for r in refs} for c in ("pretrained", "spatial")}
    target = torch.zeros(64, 64, dtype=torch.uint8)
    mine = MapScale(0.25, 0.75, "magma")
    calls = [
        lambda scale, path: plot_reference_panel(_image(), target, maps, refs, path, scale=scale),
        lambda scale, path: plot_reference_grid(_image(), maps, refs, path, scale=scale),
        lambda scale, path: plot_similarity_overlay(
            _image(), maps["spatial"]["a"], (0, 0), path, scale=scale
        ),
    ]
    for k, call in enumerate(calls):
        for scale in (MapScale(), mine):
            data = call(scale, tmp_path / f"{k}-{scale.cmap}.png")
            assert (data["vmin"], data["vmax"]) == (scale.vmin, scale.vmax)
            maps_drawn = {x for x in scales(drawn[-1]) if x[:2] != (0, 2)}  # the panel's target mask aside
            assert {(lo, hi) for lo, hi, _ in maps_drawn} == {(scale.vmin, scale.vmax)}, k
            assert {name for _, _, name in maps_drawn} == {scale.cmap}, k
    assert MapScale() == MapScale(-0.5, 1.0, "viridis")
