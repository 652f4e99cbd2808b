"""The report's statistics against scipy and numpy, on a hand-made results folder with known mIoU."""

import json
import math

import numpy as np
import pytest
from scipy import stats

from viny_probe.experiments.report import holm, mean_std, paired, write_report

SEEDS = range(6)
PLAIN = np.array([0.412, 0.538, 0.467, 0.621, 0.505, 0.574])  # mIoU of pre-train -> fine-tune, per seed
GAIN = np.array([3.1, 1.2, 4.7, -0.8, 2.5, 1.9])  # points added by the CLS-Intel stage, per seed
INTEL = PLAIN + GAIN / 100


def _row(seed: int, group: str, miou: float, pretrain_size: int = 1000, finetune_size: int = 100) -> dict:
    """One results.jsonl row as the sweep writes it (only the fields the report reads matter)."""
    intermediate = "cls-intel" if group == "intermediate" else ""
    return {
        "stage": f"ft-{group}-p{pretrain_size}-f{finetune_size}-s{seed}",
        "kind": "finetune",
        "group": group,
        "condition": f"pretrain={pretrain_size}" + ("+cls-intel" if intermediate else ""),
        "pretrain_size": pretrain_size,
        "intermediate": intermediate,
        "finetune_size": finetune_size,
        "seed": seed,
        "model": "tiny",
        "preset": "quick",
        "dataset": "toy-pets",
        "test_size": 8,
        "epochs": 2,
        "comparable": False,
        "not_comparable_because": "embedded data",
        "pixel_accuracy": miou + 0.3,
        "miou": miou,
        "miou_per_image": miou + 0.01,
        "all_background_pixel_accuracy": 0.5,
        "all_background_miou": 0.2,
        "position_prior_pixel_accuracy": 0.6,
        "position_prior_miou": 0.3,
    }


def _section(md: str, heading: str) -> str:
    start = md.index(heading)
    end = md.find("\n### ", start + 1)
    return md[start : end if end > 0 else len(md)]


def _table_row(section: str, first_cells: str) -> list[str]:
    lines = [line for line in section.splitlines() if line.startswith(first_cells)]
    assert len(lines) == 1, (first_cells, section)
    return [cell.strip() for cell in lines[0].strip("|").split("|")]


def test_report_statistics_match_scipy(tmp_path):
    """Six seeds of plain (pre-train -> fine-tune) and +cls-intel mIoU, known values. The report's
    Table A2 / A3 mIoU cells are mean ± sample std (numpy, ddof=1) in percent; the Fig 4 row of
    paired differences gives the mean, the 95% CI mean ± t(0.975, n-1) · sd / sqrt(n), the paired
    t-test p (scipy ttest_rel) and the Wilcoxon signed-rank p (scipy wilcoxon on the pairs), all as
    printed; mean_std and paired agree with numpy and scipy to float precision. Kills: ddof=0 in
    mean_std or in paired, an unpaired analysis (each +cls-intel run against the plain runs' mean), a
    two-sample t-test of the differences against zeros, a CI from the normal quantile, a one-sided
    Wilcoxon test, the difference taken the wrong way round."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    rows = [_row(s, "pretrain", PLAIN[s]) for s in SEEDS] + [_row(s, "intermediate", INTEL[s]) for s in SEEDS]
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    plain, intel = PLAIN * 100, INTEL * 100
    diffs = np.array([INTEL[s] * 100 - PLAIN[s] * 100 for s in SEEDS])  # as the report pairs them
    n = len(diffs)
    half = stats.t.ppf(0.975, n - 1) * np.std(diffs, ddof=1) / math.sqrt(n)
    low, high = diffs.mean() - half, diffs.mean() + half
    t_p = stats.ttest_rel(intel, plain).pvalue
    w_p = stats.wilcoxon(intel, plain).pvalue
    assert 0.001 < t_p < 0.05 and 0.001 < w_p and low > 0  # the data give an effect, printed as "0.xxx"

    # the library functions, to float precision
    m, s, count = mean_std(list(plain))
    assert count == n and math.isclose(m, plain.mean()) and math.isclose(s, np.std(plain, ddof=1))
    got = paired(list(diffs))
    assert got.n == n and math.isclose(got.mean, diffs.mean())
    assert math.isclose(got.ci_low, low) and math.isclose(got.ci_high, high)
    assert math.isclose(got.t_p, t_p) and math.isclose(got.wilcoxon_p, w_p)

    # the printed report
    md = write_report(sweep, tmp_path / "report", geometry=lambda *args: [])["markdown"].read_text()
    for heading, values in (("### Table A2 analogue", plain), ("### Table A3 analogue", intel)):
        cells = _table_row(_section(md, heading), "| 1000 | 100 |")
        assert cells[2] == "6 (seeds 0,1,2,3,4,5)"
        assert cells[4] == f"{values.mean():.2f} ± {np.std(values, ddof=1):.2f}", (heading, cells)
    fig4 = _section(md, "### Fig 4 analogue")
    cells = _table_row(fig4, "| 1000 | 100 |")
    assert cells[2:8] == [
        "6",
        f"{diffs.mean():+.2f}",
        f"[{low:+.2f}, {high:+.2f}]",
        f"{t_p:.3f}",
        f"{t_p:.3f}",  # Holm over one cell: the p itself
        f"{w_p:.3f}",
    ], cells
    assert cells[8] == "higher"
    assert f"95% CI [{low:+.2f}, {high:+.2f}] excludes 0 (paired t p = {t_p:.3f})" in fig4


def test_a_torn_last_results_line_is_skipped_and_said(tmp_path):
    """A crash mid-append leaves half a row at the end of results.jsonl: the report is written from the
    whole rows and says which line it left out, and why. Mutant: load_results parsing every line as
    before -> JSONDecodeError, no report."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    rows = [_row(s, "pretrain", PLAIN[s]) for s in SEEDS]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    torn = json.dumps(_row(0, "intermediate", INTEL[0]))[:57]
    (sweep / "results.jsonl").write_text(text + torn)
    paths = write_report(sweep, tmp_path / "report", geometry=lambda *args: [])
    md = paths["markdown"].read_text()
    assert len(paths["problems"]) == 1 and "line 7" in paths["problems"][0]
    assert "Left out of this report:" in md and "line 7 is not a whole results row" in md
    assert "6 finished stages" in md


# Δ mIoU (points) from the CLS-Intel stage: [pre-train size][fine-tune size index][run seed]. Seeds 1 and 3
# sit low in every cell of their pre-training (the cells of a seed share their upstream runs).
SIZES = (100, 200, 400)
DELTA = {
    1000: np.array([[1.9, 0.4, 2.6, 1.1], [1.6, 0.2, 2.9, 0.8], [2.2, 0.5, 2.4, 1.4]]),
    2000: np.array([[0.9, -0.6, 1.8, 0.3], [1.2, -0.2, 1.5, -0.4], [0.7, -0.9, 2.0, 0.1]]),
}


def _holm_reference(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni written out from its definition, independently of the report's loop: p_i is
    rejected at level alpha iff every p_(j) <= p_i passes alpha / (m - j + 1); the adjusted p_i is the
    largest (m - j + 1) p_(j) over those j, capped at 1."""
    m = len(pvalues)
    order = sorted(pvalues)
    return [
        min(
            1.0, max((m - j) * order[j] for j in range(m) if order[j] <= pv)
        )  # j is 0-based: m - j = m - rank + 1
        for pv in pvalues
    ]


def test_pooled_rows_count_run_seeds_not_cells_and_cells_are_holm_adjusted(tmp_path):
    """Two pre-training sizes x three fine-tune sizes x four run seeds, known Δ per seed. The pooled rows
    take one unit per run seed (the mean of that seed's Δ over its cells) and test those with a one-sample
    t (scipy ttest_1samp) and Wilcoxon (scipy wilcoxon) over the seeds: n = 4, not 12; the per-cell t-test
    p-values are Holm-adjusted over the 6 cells and the per-seed rows over the 2 pre-training scales,
    checked against Holm written out from its definition. The words follow the corrected numbers: the
    1000 cell at 400 images has a CI that excludes 0 (p 0.033) but is "not established" after Holm; the
    per-seed pooled 1000 row is within noise although the 12 cells pooled as independent give p = 0.0001.
    Mutant (applied once, failed, reverted): paired_section pooling the cells as independent
    (``paired(all Δ of the scale)`` instead of per-seed means) -> the pooled row says n 12 and p 0.000.
    Also kills (checked): Bonferroni (m p) instead of Holm."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    rng = np.random.default_rng(7)
    rows, diffs = [], {}
    for pre, delta in DELTA.items():
        for k, ft in enumerate(SIZES):
            for seed in range(4):
                plain = float(rng.uniform(0.35, 0.6))
                rows += [
                    _row(seed, "pretrain", plain, pre, ft),
                    _row(seed, "intermediate", plain + delta[k, seed] / 100, pre, ft),
                ]
                diffs[pre, ft, seed] = (
                    plain + delta[k, seed] / 100
                ) * 100 - plain * 100  # as the report pairs
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = write_report(sweep, tmp_path / "report", geometry=lambda *args: [])["markdown"].read_text()
    fig4 = _section(md, "### Fig 4 analogue")

    cell_p = {
        (pre, ft): stats.ttest_1samp([diffs[pre, ft, s] for s in range(4)], 0).pvalue
        for pre, ft in [(pre, ft) for pre in DELTA for ft in SIZES]
    }
    cell_holm = dict(zip(cell_p, _holm_reference(list(cell_p.values())), strict=True))
    assert holm(list(cell_p.values())) == pytest.approx(list(cell_holm.values()))
    for (pre, ft), pv in cell_p.items():
        cells = _table_row(fig4, f"| {pre} | {ft} |")
        assert cells[2] == "4" and cells[5] == f"{pv:.3f}" and cells[6] == f"{cell_holm[pre, ft]:.3f}", cells
    cells = _table_row(fig4, "| 1000 | 400 |")
    assert cell_p[1000, 400] < 0.05 <= cell_holm[1000, 400]
    assert cells[8].startswith("CI excludes 0") and "not established" in cells[8]

    units = {pre: [np.mean([diffs[pre, ft, s] for ft in SIZES]) for s in range(4)] for pre in DELTA}
    scale_p = {pre: stats.ttest_1samp(u, 0).pvalue for pre, u in units.items()}
    scale_holm = dict(zip(scale_p, _holm_reference(list(scale_p.values())), strict=True))
    for pre, u in units.items():
        u = np.asarray(u)
        half = stats.t.ppf(0.975, 3) * u.std(ddof=1) / math.sqrt(4)
        cells = _table_row(fig4, f"| {pre} | all (per seed) |")
        assert cells[2:8] == [
            "4 seeds (3 cells)",
            f"{u.mean():+.2f}",
            f"[{u.mean() - half:+.2f}, {u.mean() + half:+.2f}]",
            f"{scale_p[pre]:.3f}",
            f"{scale_holm[pre]:.3f}",
            f"{stats.wilcoxon(u).pvalue:.3f}",
        ], cells
        assert cells[8] == "within noise (95% CI contains 0)"
    naive = stats.ttest_1samp([diffs[1000, ft, s] for ft in SIZES for s in range(4)], 0).pvalue
    assert naive < 0.001 < 0.05 < scale_p[1000]  # what pooling the cells as independent would have claimed
    everything = np.mean([units[pre] for pre in DELTA], axis=0)
    cells = _table_row(fig4, "| all | all (per seed) |")
    assert cells[2] == "4 seeds (6 cells)" and cells[5] == f"{stats.ttest_1samp(everything, 0).pvalue:.3f}"
    assert "over 4 run seeds (each seed the mean of its 3 cells)" in fig4
    assert "significant" not in md


def test_fig3_sets_the_published_per_image_miou_beside_viny_per_image_miou(tmp_path):
    """Fig 3 compares like with like: its left panel draws viny's per-image mIoU (mean and sample std
    over seeds, numpy) with the published per-image curve (published.lookup) beside it on a comparable
    run, its right panel the dataset-level mIoU alone with the position prior; fig3.json holds what was
    drawn. Mutant (applied once, failed, reverted): the left panel reading ``miou`` instead of
    ``miou_per_image`` -> its means are the dataset-level ones."""
    from viny_probe import published

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    rng = np.random.default_rng(3)
    rows, values = [], {}
    for group, pre in (("baseline", 0), ("pretrain", 45000)):
        for ft in (250, 500):
            for seed in range(3):
                row = _row(seed, group, float(rng.uniform(0.4, 0.6)), pre, ft)
                row.update(
                    comparable=True, not_comparable_because="", miou_per_image=float(rng.uniform(0.3, 0.7))
                )
                rows.append(row)
                values.setdefault((pre, ft), []).append(row)
    (sweep / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    write_report(sweep, tmp_path / "report", geometry=lambda *args: [])
    drawn = json.loads((tmp_path / "report" / "figures" / "fig3.json").read_text())
    for pre, label in ((0, "no pre-training"), (45000, "pre-train 45k")):
        for panel, key in (("per_image", "miou_per_image"), ("dataset", "miou")):
            got = drawn[panel][label]
            assert got["finetune_sizes"] == [250, 500]
            want = [np.array([r[key] * 100 for r in values[pre, ft]]) for ft in (250, 500)]
            np.testing.assert_allclose(got["mean"], [w.mean() for w in want])
            np.testing.assert_allclose(got["std"], [w.std(ddof=1) for w in want])
        assert drawn["published"][label]["miou"] == [published.lookup(pre, ft).miou for ft in (250, 500)]
    assert set(drawn["dataset"]) == set(drawn["per_image"]) and "published" not in json.dumps(
        drawn["dataset"]
    )
    np.testing.assert_allclose(drawn["position_prior"]["miou"], [30.0, 30.0])
