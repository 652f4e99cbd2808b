"""The report's statistics against scipy and numpy, on a hand-made results folder with known mIoU."""

import json
import math

import numpy as np
from scipy import stats

from viny_probe.experiments.report import mean_std, paired, write_report

SEEDS = range(6)
PLAIN = np.array([0.412, 0.538, 0.467, 0.621, 0.505, 0.574])  # mIoU of pre-train -> fine-tune, per seed
GAIN = np.array([3.1, 1.2, 4.7, -0.8, 2.5, 1.9])  # points added by the CLS-Intel stage, per seed
INTEL = PLAIN + GAIN / 100


def _row(seed: int, group: str, miou: float) -> dict:
    """One results.jsonl row as the sweep writes it (only the fields the report reads matter)."""
    intermediate = "cls-intel" if group == "intermediate" else ""
    return {
        "stage": f"ft-{group}-s{seed}",
        "kind": "finetune",
        "group": group,
        "condition": "pretrain=1000" + ("+cls-intel" if intermediate else ""),
        "pretrain_size": 1000,
        "intermediate": intermediate,
        "finetune_size": 100,
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
    assert cells[2:7] == [
        "6",
        f"{diffs.mean():+.2f}",
        f"[{low:+.2f}, {high:+.2f}]",
        f"{t_p:.3f}",
        f"{w_p:.3f}",
    ], cells
    assert cells[7] == "higher"
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
