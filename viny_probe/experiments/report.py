"""`viny report DIR -o REPORT_DIR`: the sweep's results set beside the study's.

Writes ``report.md`` (figures as PNG files under ``figures/``) and one self-contained ``report.html``
(every figure embedded as base64, no external resources) with:

* Table 1 / A2 / A3 analogues: mean +- std over seeds (sample std, ddof=1), n shown, the trivial
  baselines (all-background, position prior) and the published value beside each cell only when the
  run is comparable (real datasets, the paper or authors preset with its own schedules, the viny model,
  1000 test images);
  otherwise the column says "not comparable" and the caption says why.
* Fig 3: mIoU against fine-tune size (log x), one line per pre-training scale.
* Fig 4: change in mIoU from the intermediate stage, paired by run seed (every seed on the same split), with 95% t confidence
  intervals, a paired t-test and a Wilcoxon signed-rank test (scipy), the t-test p Holm-adjusted over the
  cells, and plain words when the interval contains 0 or the adjusted p does not hold. Pooled rows count
  run seeds, not cells: the cells of one seed share their upstream runs, so each seed is one unit (the
  mean of its cells' differences) and the test is a one-sample t over the seeds
  (:func:`per_seed_means`). The same paired analysis for the effect of pre-training.
* The saturating fit a + b n^-c of mIoU against fine-tune size per condition, its parameters and the
  marginal gain per doubling of fine-tune data.
* Figs A1 and A2 (per setting) and Fig 2: segmentation examples of every condition, error maps after a
  classification intermediate stage, and SimMIM reconstructions
  by the pre-training stages, on fixed test images (``examples.py``).
* Table 2 / Figs 5-6: :func:`geometry_section`, read from the diagnostics the sweep wrote into
  ``DIR/geometry/seed-<s>/`` (``geometry.py``); the report computes none.

Every log-scaled fine-tune axis is ticked at the measured sizes (:func:`size_axis`). A stage whose
checkpoint is missing is named in the text and left out of the pictures.

Results with different settings (model, preset, datasets, test size, epochs) are never averaged
together: each setting gets its own tables and figures.
"""

from __future__ import annotations

import base64
import html
import json
import math
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator
from scipy import stats

from .. import __version__, published
from ..analysis.registry import report_columns
from ..errors import VinyError
from ..registry import REGIMES
from .blocks import Block, figure, h, p, table
from .blocks import pre_label as _pre_label
from .examples import fig2_section, figA1_section, figA2_section
from .fit import fit_saturating, observed_gain_per_doubling
from .geometry import geometry_pretrain_size, geometry_seeds, published_key, read_summary
from .kinds import kind_of, role_of
from .results import load_results

TABLES = {
    "baseline": ("Table 1", "table1", "No pre-training: segmentation by number of fine-tuning images"),
    "pretrain": ("Table A2", "tableA2", "SimMIM pre-trained: by pre-training and fine-tuning images"),
    "intermediate": (
        "Table A3",
        "tableA3",
        "Pre-trained + CLS-Intel intermediate stage: by pre-training and fine-tuning images",
    ),
}
SETTING_KEYS = ("model", "preset", "dataset", "test_size", "epochs", "split_seed")


# ------------------------------------------------------------------------------------------ numbers
def pct(x) -> float:
    return float(x) * 100.0


def mean_std(values: list[float]) -> tuple[float, float, int]:
    v = np.asarray(
        [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))], float
    )
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


def fmt_ms(values: list[float], digits: int = 2) -> str:
    m, s, n = mean_std(values)
    if n == 0:
        return "-"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f} (n=1)"


def _num(x) -> float | None:
    if x in ("", None):
        return None
    return float(x)


@dataclass
class PairedStats:
    n: int
    mean: float
    ci_low: float
    ci_high: float
    t_p: float
    wilcoxon_p: float

    @property
    def verdict(self) -> str:
        if self.n < 2:
            return "one pair only: no interval, cannot tell from noise"
        if self.ci_low <= 0 <= self.ci_high:
            return "within noise (95% CI contains 0)"
        return "lower" if self.mean < 0 else "higher"


def paired(diffs: list[float]) -> PairedStats:
    """Mean of paired differences, 95% t interval, paired t-test and Wilcoxon signed-rank p-values."""
    d = np.asarray(diffs, float)
    n = len(d)
    if n == 0:
        return PairedStats(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    mean = float(d.mean())
    if n < 2:
        return PairedStats(n, mean, math.nan, math.nan, math.nan, math.nan)
    se = float(d.std(ddof=1) / math.sqrt(n))
    half = float(stats.t.ppf(0.975, n - 1) * se)
    t_p = float(stats.ttest_1samp(d, 0.0).pvalue) if se > 0 else (0.0 if mean != 0 else 1.0)
    try:
        w_p = float(stats.wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    except ValueError:
        w_p = math.nan
    return PairedStats(n, mean, mean - half, mean + half, t_p, w_p)


ALPHA = 0.05


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: the k-th smallest of the m finite p-values
    becomes max over j <= k of min(1, (m - j + 1) p_(j)). NaN stays NaN and is not counted in m."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, out, running = len(finite), [math.nan] * len(pvalues), 0.0
    for rank, (pv, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * pv))
        out[i] = running
    return out


def per_seed_means(pairs: dict) -> dict:
    """``{cell: [(seed, difference), ...]}`` -> ``{seed: mean of that seed's differences over the cells}``:
    the independent units of a sweep, whose cells within one run seed share their upstream runs."""
    by_seed: dict = defaultdict(list)
    for items in pairs.values():
        for seed, d in items:
            by_seed[seed].append(d)
    return {seed: float(np.mean(v)) for seed, v in sorted(by_seed.items())}


def verdict(s: PairedStats, adjusted_p: float) -> str:
    """The words for a paired result: within noise unless its 95% CI excludes 0 and its multiplicity-
    adjusted p is below ALPHA."""
    if s.n < 2 or s.ci_low <= 0 <= s.ci_high:
        return s.verdict
    if not adjusted_p < ALPHA:
        return f"CI excludes 0, Holm p ≥ {ALPHA}: not established"
    return s.verdict


def _paired_row(pre, ft, count: str, s: PairedStats, adjusted_p: float) -> list:
    ci = "-" if s.n < 2 else f"[{s.ci_low:+.2f}, {s.ci_high:+.2f}]"
    return [
        pre,
        ft,
        count,
        f"{s.mean:+.2f}",
        ci,
        fmt_p(s.t_p),
        fmt_p(adjusted_p),
        fmt_p(s.wilcoxon_p),
        verdict(s, adjusted_p),
    ]


def _pooled_words(label: str, s: PairedStats, adjusted_p: float, n_cells: int, family: int) -> str:
    unit = f"over {s.n} run seeds (each seed the mean of its {n_cells} cells)"
    if s.n < 2:
        return f"{label}: one run seed only ({s.mean:+.2f} points): cannot be told from noise."
    ci = f"95% CI [{s.ci_low:+.2f}, {s.ci_high:+.2f}]"
    adj = f", Holm p = {fmt_p(adjusted_p)} over {family} scales" if family > 1 else ""
    if s.ci_low <= 0 <= s.ci_high:
        return f"{label}: mean change {s.mean:+.2f} mIoU points {unit}, {ci} contains 0, so the effect is within noise."
    if not adjusted_p < ALPHA:
        return (
            f"{label}: mean change {s.mean:+.2f} mIoU points {unit}, {ci} excludes 0 (paired t p = "
            f"{fmt_p(s.t_p)}{adj}), but not after the Holm correction: not established."
        )
    return (
        f"{label}: mean change {s.mean:+.2f} mIoU points {unit}, {ci} excludes 0 (paired t p = "
        f"{fmt_p(s.t_p)}{adj})."
    )


def fmt_p(x: float) -> str:
    return "-" if math.isnan(x) else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


# ------------------------------------------------------------------------------------------ figures
def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def size_axis(ax, sizes, label: str = "fine-tune images (log scale)") -> None:
    """A log x axis ticked at the measured ``sizes`` themselves, written as plain numbers (250, 500,
    1000, not 3x10^2), without minor ticks: the reader sees which sizes were run."""
    ticks = sorted({int(s) for s in sizes})
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{round(value)}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(label)


def _seg_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if role_of(r["kind"]) == "final" and r.get("miou") not in ("", None)]


def _by(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(r.get(k, "") for k in keys)].append(r)
    return dict(
        sorted(
            out.items(),
            key=lambda kv: tuple(str(x).zfill(12) if isinstance(x, int) else str(x) for x in kv[0]),
        )
    )


def setting_label(setting: tuple) -> str:
    d = dict(zip(SETTING_KEYS, setting, strict=False))
    data = "embedded data" if str(d["dataset"]).startswith("toy-") else "real data"
    return (
        f"model {d['model']}, {d['preset']} preset, {data} (fine-tune on {d['dataset']}), "
        f"{d['test_size']} test images, {d['epochs']} fine-tune epochs"
        + (
            f", split seed {d['split_seed']} (every run seed on the same split)"
            if d.get("split_seed") != ""
            else ""
        )
    )


# -------------------------------------------------------------------------------------------- sections
def segmentation_table(group: str, rows: list[dict]) -> list[Block]:
    name, key, title = TABLES[group]
    rows = [r for r in rows if r["group"] == group]
    if not rows:
        return []
    reasons = sorted({x for r in rows for x in str(r["not_comparable_because"]).split("; ") if x})
    comparable = all(r["comparable"] in (True, "True") for r in rows)
    out_rows = []
    for (pre, ft), cell in _by(rows, "pretrain_size", "finetune_size").items():
        acc = [pct(r["pixel_accuracy"]) for r in cell]
        miou = [pct(r["miou"]) for r in cell]
        mpi = [pct(r["miou_per_image"]) for r in cell]
        bg = (
            [pct(r["all_background_pixel_accuracy"]) for r in cell],
            [pct(r["all_background_miou"]) for r in cell],
        )
        pp = (
            [pct(r["position_prior_pixel_accuracy"]) for r in cell],
            [pct(r["position_prior_miou"]) for r in cell],
        )
        pub = published.lookup(int(pre), int(ft), cell[0]["intermediate"] or None)
        if comparable:
            pub_acc = f"{pub.accuracy:.2f} ± {pub.accuracy_std:.2f}" if pub else "not in the paper"
            pub_miou = f"{pub.miou:.2f} ± {pub.miou_std:.2f}" if pub else "not in the paper"
        else:
            pub_acc = pub_miou = "not comparable"
        seeds = ",".join(str(r["seed"]) for r in sorted(cell, key=lambda r: r["seed"]))
        out_rows.append(
            [
                pre,
                ft,
                f"{len(cell)} (seeds {seeds})",
                fmt_ms(acc),
                fmt_ms(miou),
                fmt_ms(mpi),
                pub_acc,
                pub_miou,
                f"{fmt_ms(bg[0])} / {fmt_ms(bg[1])}",
                f"{fmt_ms(pp[0])} / {fmt_ms(pp[1])}",
            ]
        )
    caption = (
        f"{name} analogue. {title}. Percent, mean ± sample std over seeds (n shown). mIoU = dataset-level "
        "(confusion-matrix) mIoU; per-image mIoU = the study's definition, the one its tables report, so "
        "the published mIoU sits beside that column. Trivial baselines: accuracy / mIoU of predicting "
        "background everywhere and of the per-pixel majority class of the training trimaps."
    )
    if not comparable:
        caption += f" Published values: not comparable ({' / '.join(reasons)})."
    cols = [
        "# Pre-train",
        "# Fine-tune",
        "n",
        "Pixel acc.",
        "mIoU",
        "Per-image mIoU",
        "Published acc.",
        "Published mIoU",
        "All-background acc. / mIoU",
        "Position prior acc. / mIoU",
    ]
    return [h(3, f"{name} analogue"), table(cols, out_rows, caption)]


def fig3(rows: list[dict], fig_dir: Path, tag: str) -> list[Block]:
    """Fig 3 analogue, like with like: the left panel is per-image mIoU (the study's definition, the one
    its figure and tables report) with the published curves beside it when comparable; the right panel
    is viny's headline, dataset-level mIoU, with the position prior. The data drawn is written beside the
    PNG (``fig3.json``)."""
    seg = [r for r in rows if r["group"] in ("baseline", "pretrain")]
    if not seg:
        return []
    comparable = all(r["comparable"] in (True, "True") for r in seg)
    fig = Figure(figsize=(11.5, 4.4), layout="constrained")
    per_image_ax, dataset_ax = fig.subplots(1, 2, sharey=True)
    data: dict = {"per_image": {}, "published": {}, "dataset": {}, "position_prior": {}}
    for (pre,), cell in _by(seg, "pretrain_size").items():
        pts = _by(cell, "finetune_size")
        ns = [int(k[0]) for k in pts]
        label = _pre_label(int(pre))
        for ax, key, panel in (
            (per_image_ax, "miou_per_image", "per_image"),
            (dataset_ax, "miou", "dataset"),
        ):
            ms = [mean_std([pct(r[key]) for r in v if r.get(key) not in ("", None)]) for v in pts.values()]
            sd = [0 if math.isnan(m[1]) else m[1] for m in ms]
            line = ax.errorbar(ns, [m[0] for m in ms], yerr=sd, marker="o", capsize=3, label=label)
            data[panel][label] = {"finetune_sizes": ns, "mean": [m[0] for m in ms], "std": sd}
            if panel == "per_image" and comparable:
                pubs = [published.lookup(int(pre), n) for n in ns]
                if all(pubs):
                    ax.plot(
                        ns,
                        [q.miou for q in pubs],
                        ls="--",
                        color=line[0].get_color(),
                        alpha=0.6,
                        label=f"{label} (published)",
                    )
                    data["published"][label] = {"finetune_sizes": ns, "miou": [q.miou for q in pubs]}
    prior = _by(seg, "finetune_size")
    prior_ns = [int(k[0]) for k in prior]
    prior_y = [float(np.mean([pct(r["position_prior_miou"]) for r in v])) for v in prior.values()]
    dataset_ax.plot(prior_ns, prior_y, ls=":", color="gray", label="position prior (trivial)")
    data["position_prior"] = {"finetune_sizes": prior_ns, "miou": prior_y}
    for ax, name in (
        (per_image_ax, "per-image mIoU (the study's definition)"),
        (dataset_ax, "dataset-level mIoU"),
    ):
        size_axis(ax, [r["finetune_size"] for r in seg])
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    per_image_ax.set_ylabel("test mIoU (%)")
    fig.suptitle("Fig 3 analogue: mIoU vs fine-tune size by pre-training scale")
    path = _save(fig, fig_dir / f"fig3{tag}.png")
    path.with_suffix(".json").write_text(json.dumps(data, indent=1))
    return [
        h(3, "Fig 3 analogue"),
        figure(
            path,
            "Left: per-image mIoU (absent class counted as 0, the study's definition), the published "
            "per-image curves dashed beside it when the run is comparable. Right: dataset-level "
            "(confusion-matrix) mIoU, viny's headline, with the position prior. One line per pre-training "
            "scale; error bars = sample std over seeds. Numbers drawn: "
            + path.with_suffix(".json").name
            + ".",
        ),
    ]


def _pairs(rows: list[dict], treated_group: str, control_group: str, control_pre: int | None) -> dict:
    """(pretrain, finetune) -> list of (seed, treated - control mIoU in points)."""
    index = {(r["group"], r["pretrain_size"], r["finetune_size"], r["seed"]): r for r in rows}
    out: dict[tuple, list] = defaultdict(list)
    for r in rows:
        if r["group"] != treated_group:
            continue
        pre = r["pretrain_size"] if control_pre is None else control_pre
        ctrl_group = (
            control_group if control_pre is None else ("baseline" if control_pre == 0 else control_group)
        )
        c = index.get((ctrl_group, pre, r["finetune_size"], r["seed"]))
        if c is not None:
            out[(r["pretrain_size"], r["finetune_size"])].append((r["seed"], pct(r["miou"]) - pct(c["miou"])))
    return dict(sorted(out.items()))


def paired_section(pairs: dict, title: str, what: str, fig_dir: Path | None, tag: str) -> list[Block]:
    """Per cell: the paired differences over run seeds (t interval, t-test, Wilcoxon), with the t-test p
    Holm-adjusted over the section's cells. Pooled: one unit per run seed (:func:`per_seed_means`), since
    the cells of one seed share their pre-training (and intermediate, and control) runs; per pre-training
    scale (Holm over the scales) and over every cell."""
    if not pairs:
        return []
    cells = {key: paired([x for _, x in sorted(items)]) for key, items in pairs.items()}
    cell_holm = dict(zip(cells, holm([s.t_p for s in cells.values()]), strict=True))
    rows, words = [], []
    for (pre, ft), s in cells.items():
        rows.append(_paired_row(pre, ft, str(s.n), s, cell_holm[pre, ft]))
    pres = sorted({pre for pre, _ in pairs})
    pooled = {pre: per_seed_means({k: v for k, v in pairs.items() if k[0] == pre}) for pre in pres}
    pooled_stats = {pre: paired(list(units.values())) for pre, units in pooled.items()}
    pooled_holm = dict(zip(pres, holm([s.t_p for s in pooled_stats.values()]), strict=True))
    for pre in pres:
        s = pooled_stats[pre]
        n_cells = sum(1 for k in pairs if k[0] == pre)
        count = f"{s.n} seeds ({n_cells} cells)"
        rows.append(_paired_row(pre, "all (per seed)", count, s, pooled_holm[pre]))
        words.append(_pooled_words(_pre_label(pre), s, pooled_holm[pre], n_cells, len(pres)))
    everything = per_seed_means(pairs)
    s = paired(list(everything.values()))
    rows.append(_paired_row("all", "all (per seed)", f"{s.n} seeds ({len(pairs)} cells)", s, s.t_p))
    if len(pres) > 1:
        words.append(_pooled_words("All cells", s, s.t_p, len(pairs), 1))
    tested = [k for k, c in cells.items() if c.n >= 2]
    excl = [k for k in tested if not (cells[k].ci_low <= 0 <= cells[k].ci_high)]
    kept = [k for k in excl if cell_holm[k] < ALPHA]
    if tested:
        words.append(
            f"Per cell: {len(excl)} of {len(tested)} cells have a 95% CI that excludes 0; "
            f"{len(kept)} of them keep Holm-adjusted p < {ALPHA} over the {len(tested)} cells tested."
        )
    min_pairs = min(len(v) for v in pairs.values())
    caption = (
        f"{what}, in mIoU points (dataset-level mIoU), paired by run seed: every seed uses the same split (the "
        "same test set and nested training subsets), and a pair shares its run seed. 95% CI from the t "
        "distribution; p-values: paired t-test and Wilcoxon signed-rank (scipy). Holm p: the t-test p "
        "Holm-Bonferroni adjusted over the cells of this table (cell rows) or over the pre-training scales "
        "(per-seed rows); the verdict needs both the CI to exclude 0 and Holm p < "
        f"{ALPHA}. With {min_pairs} pair(s) per cell the smallest two-sided Wilcoxon p is "
        f"{2.0 ** (1 - min_pairs):.3g}. Per-seed rows: the cells of one run seed share their pre-training, "
        "intermediate and control runs, so they are not independent; each seed counts once, as the mean of "
        "its cells' differences, and the test is a one-sample t over those seed means (n = seeds)."
    )
    cols = [
        "# Pre-train",
        "# Fine-tune",
        "n",
        "mean Δ",
        "95% CI",
        "t-test p",
        "Holm p",
        "Wilcoxon p",
        "verdict",
    ]
    blocks = [h(3, title), table(cols, rows, caption), p(" ".join(words))]
    if fig_dir is not None:
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.add_subplot()
        pres = sorted({pre for pre, _ in pairs})
        for i, pre in enumerate(pres):
            keys = [k for k in pairs if k[0] == pre]
            ns = np.array([k[1] for k in keys], float) * (1 + 0.04 * (i - (len(pres) - 1) / 2))
            st = [paired([x for _, x in pairs[k]]) for k in keys]
            means = np.array([s.mean for s in st])
            err = np.array(
                [
                    [0 if math.isnan(s.ci_low) else s.mean - s.ci_low for s in st],
                    [0 if math.isnan(s.ci_high) else s.ci_high - s.mean for s in st],
                ]
            )
            line = ax.errorbar(ns, means, yerr=err, marker="o", capsize=3, label=_pre_label(pre))
            for k, x in zip(keys, ns, strict=False):
                ax.scatter(
                    [x] * len(pairs[k]), [d for _, d in pairs[k]], s=10, alpha=0.4, color=line[0].get_color()
                )
        ax.axhline(0, color="black", lw=0.8)
        size_axis(ax, [ft for _, ft in pairs])
        ax.set_ylabel("Δ mIoU (points)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        path = _save(fig, fig_dir / f"{'fig4' if 'intermediate' in what else 'pretraining-effect'}{tag}.png")
        blocks.append(
            figure(path, f"{what}: mean with 95% CI per cell; small dots are the individual seed pairs.")
        )
    return blocks


def fit_section(rows: list[dict], fig_dir: Path, tag: str) -> list[Block]:
    seg = [r for r in rows if r["group"] in ("baseline", "pretrain", "intermediate")]
    if not seg:
        return []
    conditions = _by(seg, "pretrain_size", "intermediate")
    param_rows, gain_rows, words = [], [], []
    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.add_subplot()
    for (pre, inter), cell in conditions.items():
        label = _pre_label(int(pre)) + (f" + {inter}" if inter else "")
        n = [int(r["finetune_size"]) for r in cell]
        y = [pct(r["miou"]) for r in cell]
        f = fit_saturating(n, y, upper=100.0)
        sizes = sorted(set(n))
        means = [float(np.mean([yy for nn, yy in zip(n, y, strict=False) if nn == s])) for s in sizes]
        pts = ax.scatter(n, y, s=14, alpha=0.6, label=label)
        if f is None:
            param_rows.append(
                [label, len(n), len(sizes), "-", "-", "-", "-", "fewer than 3 fine-tune sizes: no fit"]
            )
            continue
        xs = np.geomspace(min(sizes), max(sizes) * 2, 100)
        if math.isfinite(f.a):
            ax.plot(xs, f.predict(xs), color=pts.get_facecolor()[0], lw=1.2)

        def pm(v, se):
            return f"{v:.4g}" + ("" if math.isnan(se) else f" ± {se:.2g}")

        param_rows.append(
            [
                label,
                f.n_points,
                f.n_sizes,
                pm(f.a, f.a_se),
                pm(f.b, f.b_se),
                pm(f.c, f.c_se),
                f"{f.rmse:.2f}",
                "; ".join(f.notes) or "-",
            ]
        )
        observed = observed_gain_per_doubling(sizes, means) + [math.nan]
        for s, fitted, obs in zip(sizes, f.gain_per_doubling(sizes), observed, strict=False):
            gain_rows.append([label, s, f"{fitted:+.2f}", "-" if math.isnan(obs) else f"{obs:+.2f}"])
        if math.isfinite(f.a):
            g = f.gain_per_doubling([sizes[0], sizes[-1]])
            words.append(
                f"{label}: by the fit, doubling the fine-tune data adds {g[0]:+.2f} points at {sizes[0]} "
                f"images and {g[1]:+.2f} at {sizes[-1]} (asymptote a = {f.a:.1f}%)."
            )
    size_axis(ax, [r["finetune_size"] for r in seg])
    ax.set_ylabel("test mIoU (%)")
    ax.set_title("Saturating fits  mIoU = a + b·n^-c")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    path = _save(fig, fig_dir / f"fits{tag}.png")
    cols = ["condition", "points", "sizes", "a (asymptote, %)", "b", "c", "RMSE", "notes"]
    caption = (
        "Least-squares fit of mIoU (%) = a + b·n^-c to every seed's point (scipy curve_fit; a ≤ 100, "
        "0.001 ≤ c ≤ 4); ± = standard errors from the fit covariance (b by the delta method), which treat "
        "every point as independent although the sizes of one seed share their upstream runs: read them as "
        "a lower bound on the uncertainty."
    )
    gain_caption = (
        "Marginal gain per doubling of fine-tune data, in mIoU points: by the fit, f(2n) − f(n); "
        "observed, (ȳ(n_next) − ȳ(n)) / log2(n_next / n) between consecutive measured sizes."
    )
    return [
        h(3, "Diminishing returns: saturating fits"),
        table(cols, param_rows, caption),
        table(
            ["condition", "n", "fitted gain per doubling", "observed gain per doubling"],
            gain_rows,
            gain_caption,
        ),
        p(" ".join(words)),
        figure(path, "Per-seed mIoU points and the fitted curves (extrapolated to 2× the largest size)."),
    ]


GEOMETRY_FIGURES = {  # summary.json "files" key -> caption
    "fig5": "Fig 5 analogue: cosine similarity of patch tokens vs Manhattan distance on the patch grid "
    "(band: 95% t interval across images).",
    "fig6": "Fig 6 analogue, laid out as the study's: one test image and its target mask, then the cosine "
    "similarity of each reference patch (red square, one per row) to every patch, one column per encoder "
    "(Spatial, CLS-Intel, Pretrained, then CLS-Pets); colour range fixed to -0.5..1.",
    "depth_curves": "Diagnostics per block: where in the network each stage acts.",
    "cka": "Linear CKA, block by block, of each encoder against the pretrained one.",
    "pca_rgb": "The first three principal components of each encoder's final-block patch tokens as RGB.",
}


def _mean_std_text(values: list, spec: str) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "n/a"
    if len(vals) == 1:
        return format(vals[0], spec)
    return f"{format(float(np.mean(vals)), spec)} ± {format(float(np.std(vals, ddof=1)), spec)}"


def _geometry_summaries(sweep_dir: Path, seeds: dict) -> tuple[dict[int, dict], list[Block]]:
    """The current summary.json of each seed's geometry folder, and a paragraph for each seed left out
    (a missing checkpoint; no folder yet or one written for other inputs, with the command to run)."""
    summaries, missing, notes = {}, [], []
    for seed, geometry in seeds.items():
        absent = geometry.missing(sweep_dir)
        missing += absent
        summary = None if absent else read_summary(sweep_dir, geometry)
        if summary is not None:
            summaries[seed] = summary
        elif not absent:
            state = "not there" if not (geometry.out_dir(sweep_dir) / "summary.json").exists() else "stale"
            notes.append(
                p(
                    f"Seed {seed}: the diagnostics in {geometry.out_dir(sweep_dir)} are {state} (they are "
                    "written by `viny sweep` once the seed's geometry stages are trained). To write them: "
                    f"`{geometry.command(sweep_dir)}`"
                )
            )
    if missing:
        notes.insert(
            0, p("Seeds left out because a checkpoint (final.pt) is missing: " + "; ".join(missing) + ".")
        )
    return summaries, notes


def _geometry_table(summaries: dict[int, dict]) -> Block:
    results: dict[str, list[dict]] = {}
    for summary in summaries.values():
        for row in summary["table2"]:
            results.setdefault(row["checkpoint"], []).append(row)
    shown = report_columns()
    published_rows = {row["key"]: row for row in published.table2()}
    table_rows = []
    for name, vals in results.items():
        pub = published_rows.get(published_key(name), {})
        table_rows.append(
            [
                name,
                len(vals),
                *(_mean_std_text([v.get(c.key) for v in vals], c.fmt) for c in shown),
                f"{pub.get('within_image_variance', '-')} / {pub.get('across_image_variance', '-')} / "
                f"{pub.get('patch_probe_accuracy', '-')}",
            ]
        )
    return table(
        ["Encoder", "n seeds", *(c.report for c in shown), "published within / across / probe"],
        table_rows,
        "Table 2 analogue (mean ± std over seeds). Published values from the study's Table 2 are "
        "for its real-data ViNy: absolute variances depend on the model and data, so compare the "
        "ordering of the regimes, not the numbers.",
    )


def _geometry_figures(sweep_dir: Path, seed: int, summary: dict, fig_dir: Path) -> list[Block]:
    """The first diagnosed seed's figures, copied beside the report's other figures."""
    source = Path(sweep_dir) / "geometry" / f"seed-{seed}"
    blocks = []
    for key, caption in GEOMETRY_FIGURES.items():
        name = summary["files"].get(key)
        if name and (source / name).is_file():
            target = fig_dir / f"geometry-seed{seed}" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source / name, target)
            blocks.append(figure(target, caption))
    page = summary["files"].get("explorer")
    if page and (source / page).is_file():
        target = fig_dir / f"geometry-seed{seed}" / page
        shutil.copyfile(source / page, target)
        blocks.append(
            p(
                f"Interactive: {target.relative_to(fig_dir.parent)} (open it in a browser; click any patch to "
                "see its similarity on every image, per block and encoder)."
            )
        )
    return blocks


def geometry_section(sweep_dir: Path, rows: list[dict], fig_dir: Path) -> list[Block]:
    """Table 2 and Figs 5-6 from the geometry stages, as the sweep's diagnostics wrote them into
    ``DIR/geometry/seed-<s>/`` (``experiments.geometry``; nothing is computed here): the table gives
    mean ± std over seeds, the figures show the first seed. Seeds without current diagnostics are named
    with the command that writes them."""
    seeds = geometry_seeds(rows)
    if not seeds:
        return []
    pre_size = geometry_pretrain_size(rows)
    blocks = [
        h(2, "Table 2 and Figs 5-6: representation geometry"),
        p(
            f"Encoders after pre-training on {pre_size} images, and after each intermediate stage on top of it. "
            "Diagnostics on final-block patch tokens of the segmentation test split; the linear probe is fitted "
            "on patches of non-test images only."
        ),
    ]
    summaries, notes = _geometry_summaries(sweep_dir, seeds)
    blocks += notes
    if not summaries:
        return blocks + [p("The geometry stages are not all finished and diagnosed yet.")]
    blocks.append(_geometry_table(summaries))
    first = min(summaries)
    return blocks + _geometry_figures(sweep_dir, first, summaries[first], fig_dir)


# --------------------------------------------------------------------------------------------- render
def render_markdown(blocks: list[Block], report_dir: Path) -> str:
    out = []
    for b in blocks:
        if b.kind.startswith("h"):
            out.append("#" * int(b.kind[1]) + " " + b.text + "\n")
        elif b.kind == "p":
            if b.text:
                out.append(b.text + "\n")
        elif b.kind == "table":
            out.append("| " + " | ".join(b.columns) + " |")
            out.append("|" + "---|" * len(b.columns))
            out.extend("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in b.rows)
            out.append("")
            if b.text:
                out.append(f"*{b.text}*\n")
        elif b.kind == "figure":
            out.append(f"![{b.text}]({b.path.relative_to(report_dir).as_posix()})\n\n*{b.text}*\n")
    return "\n".join(out)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}td,th{border:1px solid #ccc;padding:3px 6px}
th{background:#f3f3f3}caption{caption-side:bottom;text-align:left;font-size:.85em;color:#555;padding:.3em 0}
img{max-width:100%}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}"""


def render_html(blocks: list[Block], title: str) -> str:
    out = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>"
    ]
    for b in blocks:
        if b.kind.startswith("h"):
            out.append(f"<{b.kind}>{html.escape(b.text)}</{b.kind}>")
        elif b.kind == "p":
            if b.text:
                out.append(f"<p>{html.escape(b.text)}</p>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(c)}</th>" for c in b.columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in b.rows
            )
            cap = f"<caption>{html.escape(b.text)}</caption>" if b.text else ""
            out.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "figure":
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(
                f"<figure><img alt='{html.escape(b.text)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{html.escape(b.text)}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------- main
def build_blocks(
    sweep_dir: Path,
    rows: list[dict],
    fig_dir: Path,
    geometry: Callable[[Path, list[dict], Path], list[Block]] | None = None,
) -> list[Block]:
    seg = _seg_rows(rows)
    blocks = [
        h(1, "viny sweep report"),
        p(
            f"Sweep folder {sweep_dir}; {len(rows)} finished stages, {len(seg)} finished segmentation cells. "
            f"Generated {time.strftime('%Y-%m-%d %H:%M')} by viny {__version__}. Numbers are what was measured: "
            "nothing is filtered or adjusted. The published values are the study's Tables 1, A2, A3 and 2 as "
            "shipped in viny_probe/resources/published_tables.json."
        ),
    ]
    settings = _by(seg, *SETTING_KEYS)
    for i, (setting, srows) in enumerate(settings.items()):
        tag = "" if len(settings) == 1 else f"-{i + 1}"
        seeds = sorted({r["seed"] for r in srows})
        blocks.append(h(2, f"Setting{tag}: {setting_label(setting)}"))
        reasons = sorted({x for r in srows for x in str(r["not_comparable_because"]).split("; ") if x})
        blocks.append(
            p(
                "Comparable with the paper: yes (real datasets, paper or authors preset with its own "
                "schedules, viny model, 1000 test images)."
                if not reasons
                else f"Comparable with the paper: no ({' / '.join(reasons)}); published values are not set "
                "beside these numbers."
            )
        )
        if len(seeds) < 2:
            blocks.append(
                p(
                    f"Only one seed ({seeds[0]}): no standard deviations or confidence intervals; every "
                    "difference below is within unknown noise."
                )
            )
        for group in TABLES:
            blocks += segmentation_table(group, srows)
        blocks += fig3(srows, fig_dir, tag)
        blocks += paired_section(
            _pairs(srows, "intermediate", "pretrain", None),
            "Fig 4 analogue: change in mIoU from the intermediate stage",
            "Change in mIoU from adding the CLS-Intel intermediate stage (A3 − A2)",
            fig_dir,
            tag,
        )
        pre_pairs = _pairs(srows, "pretrain", "pretrain", 0)
        blocks += paired_section(
            pre_pairs,
            "Effect of pre-training (paired by run seed)",
            "Change in mIoU from SimMIM pre-training (A2 − Table 1)",
            fig_dir,
            tag,
        )
        blocks += fit_section(srows, fig_dir, tag)
        blocks += figA1_section(sweep_dir, srows, fig_dir, tag)
        blocks += figA2_section(sweep_dir, srows, fig_dir, tag)
    if not seg:
        blocks.append(p("No finished segmentation cells yet."))
    blocks += fig2_section(sweep_dir, rows, fig_dir)
    blocks += stage_results_section(rows)
    blocks += (geometry or geometry_section)(sweep_dir, rows, fig_dir)
    return blocks


def _regime_name(row: dict) -> str | None:
    configs = row.get("configs") or []
    if configs:
        return configs[-1]["config"].get("regime")
    kind = kind_of(row["kind"])
    return kind.regime if kind else None


def stage_results_section(rows: list[dict]) -> list[Block]:
    """One table per stage kind other than the final one (the segmentation tables hold those): mean ±
    std over run seeds of the columns its regime declares (``Regime.result_columns``), by pre-training
    size and schedule row. A regime's own metric reaches it with no edit here."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        name = _regime_name(r)
        if role_of(r["kind"]) != "final" and name in REGIMES and REGIMES.get(name).result_columns:
            groups[(r["kind"], name)].append(r)
    if not groups:
        return []
    blocks = [h(2, "Held-out results of the other stages")]
    for (kind, name), krows in groups.items():
        columns = list(REGIMES.get(name).result_columns)
        by_condition: dict[tuple, list[dict]] = defaultdict(list)
        for r in krows:
            by_condition[(int(r["pretrain_size"] or 0), r.get("phase") or "")].append(r)
        table_rows = [
            [
                pre,
                phase or "-",
                len(cell),
                *(
                    _mean_std_text([None if r.get(c) in ("", None) else float(r[c]) for r in cell], ".4f")
                    for c in columns
                ),
            ]
            for (pre, phase), cell in sorted(by_condition.items())
        ]
        blocks.append(
            table(
                ["pre-train images", "schedule row", "n", *columns],
                table_rows,
                f"{kind} ({name}): mean ± std over run seeds of the results its regime declares.",
            )
        )
    return blocks


def write_report(
    sweep_dir: str | Path,
    report_dir: str | Path,
    geometry: Callable[[Path, list[dict], Path], list[Block]] | None = None,
) -> dict[str, Path]:
    """Write report.md, figures/*.png and a self-contained report.html for the sweep in ``sweep_dir``."""
    sweep_dir, report_dir = Path(sweep_dir), Path(report_dir)
    if not sweep_dir.exists():
        raise VinyError(f"{sweep_dir} does not exist; run `viny sweep PLAN --out {sweep_dir}` first")
    problems: list[str] = []
    rows = load_results(sweep_dir, problems)
    fig_dir = report_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    blocks = build_blocks(sweep_dir, rows, fig_dir, geometry)
    if problems:  # said right under the title, before any number built on the rows
        blocks[2:2] = [p("Left out of this report: " + " ".join(problems))]
    md = report_dir / "report.md"
    md.write_text(render_markdown(blocks, report_dir))
    page = report_dir / "report.html"
    page.write_text(render_html(blocks, f"viny report: {sweep_dir.name}"))
    return {"markdown": md, "html": page, "figures": fig_dir, "problems": problems}
