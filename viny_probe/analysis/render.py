"""What ``viny diagnose`` writes besides its figures: table2.md/.json and summary.md, rendered from
results (never computing any). Table 2's columns come from the diagnostics registry."""

from __future__ import annotations

from collections.abc import Mapping

from viny_probe import published
from viny_probe.analysis.registry import TABLE2, columns, format_value, registered, table_row
from viny_probe.analysis.variance import ratio_of_variances


def table2_rows(results: Mapping[str, Mapping]) -> list[dict]:
    """One row per checkpoint: ``{"checkpoint": name, column key: number, ...}`` in column order.

    results: ``{checkpoint name: {diagnostic key: result}}`` (``registry.measure_layer``)."""
    return [{"checkpoint": name, **table_row(metrics)} for name, metrics in results.items()]


def tokens_note(token_dtype: str) -> str:
    """The sentence under every Table 2 that says how the tokens were stored."""
    return (
        f"Tokens stored as {token_dtype}; every diagnostic accumulates in float32 or float64 "
        "(`--token-dtype`, docs/performance.md)."
    )


def table2_markdown(rows: list[dict], token_dtype: str | None = None) -> str:
    """Table 2 as markdown, one row per checkpoint; with ``token_dtype``, the tokens' storage dtype in a
    line under it."""
    shown = columns(TABLE2)
    lines = [
        "| checkpoint | " + " | ".join(c.title for c in shown) + " |",
        "|---|" + "---:|" * len(shown),
    ]
    for r in rows:
        cells = [format_value(r.get(c.key), c.fmt) for c in shown]
        lines.append(f"| {r['checkpoint']} | " + " | ".join(cells) + " |")
    if token_dtype:
        lines += ["", tokens_note(token_dtype)]
    return "\n".join(lines) + "\n"


def published_table2() -> list[dict]:
    """The study's Table 2 (``viny_probe.published``) as table2.json rows."""
    return [
        {
            "checkpoint": row["model"],
            "within": row["within_image_variance"],
            "across": row["across_image_variance"],
            "probe_acc_pct": row["patch_probe_accuracy"],
        }
        for row in published.table2()
    ]


def table2_json(rows: list[dict], token_dtype: str | None = None) -> dict:
    return {
        "columns": list(rows[0]),
        "rows": rows,
        "token_dtype": token_dtype,
        "published": published_table2(),
    }


def published_markdown() -> str:
    lines = ["| study checkpoint | within | across | ratio | probe acc % |", "|---|---:|---:|---:|---:|"]
    for row in published_table2():
        w, a, p = row["within"], row["across"], row["probe_acc_pct"]
        lines.append(
            f"| {row['checkpoint']} | {w:.2f} | {a:.2f} | {ratio_of_variances(w, a):.1f} | {p:.1f} |"
        )
    return "\n".join(lines) + "\n"


def _legend(summary: dict) -> str:
    """What each Table 2 diagnostic is, for those that ran."""
    ran = [
        d
        for d in registered()
        if any(TABLE2 in c.shown for c in d.columns)
        and any(m.get(d.key) is not None for m in summary["final_layer"].values())
    ]
    return "; ".join(f"{d.label}: {d.description}" for d in ran) + "."


def _convergence(summary: dict) -> str:
    """One sentence on the final-block probe's solver: converged everywhere, or where it did not."""
    fits = {name: m.get("probe") for name, m in summary["final_layer"].items()}
    stopped = [name for name, fit in fits.items() if fit and not fit.get("converged", True)]
    if not any(fits.values()):
        return ""
    if not stopped:
        return " The probe's solver converged for every checkpoint."
    return (
        f" The probe's solver stopped at its iteration limit for {', '.join(stopped)} (not converged: its "
        "accuracy there may be a little low; table2.json's probe_converged says the same)."
    )


def _checkpoints_markdown(summary: dict) -> list[str]:
    lines = [
        "## Checkpoints",
        "",
        "| name | model | weights | regime | lineage | grid |",
        "|---|---|---|---|---|---|",
    ]
    for c in summary["checkpoints"]:
        lineage = " -> ".join(str(step.get("regime", "?")) for step in c["lineage"]) or "-"
        m = c.get("model") or {}
        grid = f"{m['grid'][0]} x {m['grid'][1]}, {m['depth']} blocks, D {m['dim']}" if m else "-"
        weights = m.get("weights", "-")
        lines.append(
            f"| {c['name']} | `{c['path']}` | {weights} | {c['regime'] or '-'} | {lineage} | {grid} |"
        )
    return lines


def _data_markdown(info: dict) -> str:
    return (
        f"Data: **{info['dataset']}**, split seed {info['split_seed']}, test set {info['test_size']} images "
        f"({'; '.join(info.get('chosen', []))}). "
        f"Probe and kNN fitted on {info['probe_images']} pool images ({info['probe_patches']:,} patches), "
        f"everything scored / measured on {info['test_images']} test images ({info['test_patches']:,} patches); "
        "the probe never sees a test image."
    )


def _figures_markdown(summary: dict, info: dict) -> list[str]:
    s = summary["settings"]
    curves = ", ".join(d.label for d in registered() if d.per_block)
    reproduce = (
        f" Reproduce one with `viny similarity-map CKPT toy-pets:INDEX --split-seed {info['split_seed']} "
        f"--test-size {info['test_size']}`."
        if info["dataset"] == "toy-pets"
        else ""
    )
    lines = [
        "## Figures",
        "",
        "- [fig5_similarity_vs_distance.png](fig5_similarity_vs_distance.png): Fig 5, mean cosine between "
        "patch tokens at each Manhattan distance, 95% band over images; "
        "[fig5_by_class.png](fig5_by_class.png): the same split into same-class / different-class pairs.",
        "- [fig6_reference_patches.png](fig6_reference_patches.png): Fig 6 as the study lays it out: test "
        f"image #{s['fig6_images'][0]['test_index']} and its target mask, then rows = reference patches "
        "(background corner, most-foreground interior patch, most-boundary patch), columns = checkpoints "
        "in the study's order (Spatial, CLS-Intel, Pretrained, others after), colour range -0.5..1; "
        "[fig6_images.png](fig6_images.png): the references of test images "
        + ", ".join(f"#{f['test_index']}" for f in s["fig6_images"])
        + ", one row each, columns = checkpoints; "
        "[fig6_stretched.png](fig6_stretched.png): the same maps with the colour range stretched to the "
        "smallest cosine shown, for when every cosine sits in a narrow band." + reproduce,
        f"- [depth_curves.png](depth_curves.png): {curves} per block (test images; the probe per block "
        f"fitted on {s['depth_probe_images']} pool images with the C the final-block probe chose, at most "
        "300 solver iterations, so its last point can differ a little from Table 2). Blocks before the "
        "last are the raw residual stream, the last is after the final LayerNorm: the variances jump there "
        "by construction.",
    ]
    if "cka" in summary["files"]:
        lines.append(
            f"- [cka.png](cka.png): linear CKA block by block on the first {s['cka_images']} test images' "
            "patch tokens: " + "; ".join(f"{m['names'][0]} vs {m['names'][1]}" for m in summary["cka"]) + "."
        )
        for m in summary["cka"]:
            if m["diagonal"] is not None and m["names"][0] != m["names"][1]:
                diag = ", ".join(format_value(v, ".2f") for v in m["diagonal"])
                lines.append(f"  - {m['names'][0]} vs {m['names'][1]}, same block: {diag}")
    if "pca_rgb" in summary["files"]:
        lines.append(
            "- [pca_rgb.png](pca_rgb.png): the first three principal components of each model's final-block "
            "patch tokens as RGB (fitted over all test images, shown on the first few)."
        )
    if "explorer" in summary["files"]:
        lines.append(
            "- [explorer.html](explorer.html): open it in a browser and click any patch: its cosine "
            "similarity on every shown test image, per block and per model; a PCA view per block "
            "(docs/explore.md)."
        )
    return lines


def summary_markdown(summary: dict) -> str:
    """summary.md: checkpoints with lineage, data, Table 2 with its legend, the published values and
    links to every figure."""
    info = next(iter(summary["data"].values()))
    lines = ["# viny diagnose", "", *_checkpoints_markdown(summary), "", _data_markdown(info), ""]
    lines += [
        "## Table 2 (final block, after the final LayerNorm)",
        "",
        table2_markdown(summary["table2"], info.get("token_dtype")),
        _legend(summary)
        + _convergence(summary)
        + " This table: [table2.md](table2.md), with every number in "
        "[table2.json](table2.json).",
        "",
        "Published values (the study's Table 2, full ViNy, Oxford-IIIT Pet) for comparison:",
        "",
        published_markdown(),
        *_figures_markdown(summary, info),
    ]
    if summary.get("notes"):
        lines += ["", "## Notes", "", *(f"- {note}" for note in summary["notes"])]
    lines += ["", f"All numbers: [summary.json](summary.json). Took {summary['seconds']:.0f} s.", ""]
    return "\n".join(lines)
