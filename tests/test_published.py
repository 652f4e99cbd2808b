"""The study's tables shipped as data match numbers read off the paper."""

from __future__ import annotations

import pytest

from viny_probe import published


@pytest.mark.parametrize(
    "pre, ft, inter, acc, acc_std, miou, miou_std",
    [
        (0, 250, None, 70.33, 0.89, 43.73, 1.02),
        (0, 6000, None, 85.60, 0.03, 65.07, 0.01),
        (0, 2000, None, 80.03, 0.42, 56.87, 0.51),
        (45000, 250, None, 77.44, 0.06, 52.73, 0.25),
        (100000, 500, None, 81.62, 0.62, 58.44, 0.93),
        (200000, 6000, None, 87.93, 0.04, 68.76, 0.13),
        (45000, 2000, "cls-intel", 82.08, 0.57, 59.38, 0.88),
        (100000, 500, "cls-intel", 78.59, 0.25, 53.85, 0.44),
        (200000, 250, "cls-intel", 75.83, 0.66, 49.93, 0.56),
        (200000, 6000, "cls-intel", 87.18, 0.14, 67.47, 0.15),
    ],
)
def test_spot_checks(pre, ft, inter, acc, acc_std, miou, miou_std):
    cell = published.lookup(pre, ft, inter)
    assert (cell.accuracy, cell.accuracy_std, cell.miou, cell.miou_std) == (acc, acc_std, miou, miou_std)


def test_table_shapes():
    assert len(published.cells("table1")) == 6
    for t in ("tableA2", "tableA3"):
        cells = published.cells(t)
        assert len(cells) == 18
        assert {(c.pretrain, c.finetune) for c in cells} == {
            (p, f) for p in (45000, 100000, 200000) for f in (250, 500, 1000, 2000, 4000, 6000)
        }
    assert published.lookup(750, 250) is None and published.lookup(0, 250, "cls-intel") is None


def test_paper_claims_hold_in_the_data():
    # pre-training helps at every size; CLS-Intel hurts at every cell (the paper's Figs 3-4)
    for ft in (250, 500, 1000, 2000, 4000, 6000):
        base = published.lookup(0, ft).miou
        for pre in (45000, 100000, 200000):
            assert published.lookup(pre, ft).miou > base
            assert published.lookup(pre, ft, "cls-intel").miou < published.lookup(pre, ft).miou


def test_table2():
    rows = {r["key"]: r for r in published.table2()}
    assert rows["pretrained"]["within_image_variance"] == 0.10
    assert rows["cls-intel"]["across_image_variance"] == 0.11
    assert rows["cls-pets"]["within_image_variance"] == 0.58
    assert rows["spatial"]["patch_probe_accuracy"] == 93.3
