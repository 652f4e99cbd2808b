"""Rich tables for results printed by the CLI."""

from __future__ import annotations

from rich.table import Table


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def segmentation_table(results: dict, title: str = "segmentation on the fixed test set (%)") -> Table:
    """Model vs the two trivial baselines: pixel accuracy, mIoU (dataset), mIoU (per image), IoU per class."""
    table = Table(title=title)
    for col in ["", "pixel acc", "mIoU", "mIoU/img", "IoU pet", "IoU bg", "IoU bdry"]:
        table.add_column(col, justify="right" if col else "left", no_wrap=True)
    rows = [("model", results["test"])] + [
        (k.replace("_", "-"), v) for k, v in results.get("baselines", {}).items()
    ]
    for name, s in rows:
        iou = s["iou"]
        table.add_row(
            name,
            _pct(s["pixel_accuracy"]),
            _pct(s["miou"]),
            _pct(s["miou_per_image"]),
            _pct(iou.get("pet")),
            _pct(iou.get("background")),
            _pct(iou.get("boundary")),
            style="bold" if name == "model" else None,
        )
    return table


def history_table(history: list[dict], title: str) -> Table:
    table = Table(title=title)
    keys = [k for k in history[-1] if k not in ("seconds",)] if history else []
    for k in keys:
        table.add_column(k, justify="right")
    for h in history[-1:]:
        table.add_row(*[f"{h[k]:.4g}" if isinstance(h[k], float) else str(h[k]) for k in keys])
    return table
