"""The study's published numbers (Tables 1, A2, A3 and 2), shipped as data in
``viny_probe/resources/published_tables.json`` and transcribed by hand from the paper.

Accuracy and mIoU are percentages, mean and std over the paper's 3 runs. The paper's mIoU is the
authors' per-image variant (a class absent from an image counted as IoU 0), so the viny number to set
beside it is ``miou_per_image``, not the dataset-level headline ``miou``.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

from .errors import VinyError

SEGMENTATION_TABLES = ("table1", "tableA2", "tableA3")


@dataclass(frozen=True)
class PublishedCell:
    table: str
    pretrain: int  # pre-training images (0 = none)
    finetune: int  # fine-tuning images
    accuracy: float
    accuracy_std: float
    miou: float
    miou_std: float


@functools.lru_cache(maxsize=1)
def load() -> dict:
    """The whole JSON document (source, units, tables)."""
    text = resources.files("viny_probe").joinpath("resources/published_tables.json").read_text()
    return json.loads(text)


def table_for(pretrain: int, intermediate: str | None) -> str | None:
    """Which published segmentation table a cell belongs to (None when the paper has no such table)."""
    if intermediate in (None, "", "none"):
        return "table1" if pretrain == 0 else "tableA2"
    if intermediate == "cls-intel" and pretrain > 0:
        return "tableA3"
    return None


def cells(table: str) -> list[PublishedCell]:
    if table not in SEGMENTATION_TABLES:
        raise VinyError(f"unknown published table {table!r}; choose one of {', '.join(SEGMENTATION_TABLES)}")
    return [PublishedCell(table=table, **row) for row in load()["tables"][table]["rows"]]


def lookup(pretrain: int, finetune: int, intermediate: str | None = None) -> PublishedCell | None:
    """The published cell for (pre-train size, fine-tune size, intermediate stage), or None."""
    table = table_for(pretrain, intermediate)
    if table is None:
        return None
    for cell in cells(table):
        if cell.pretrain == pretrain and cell.finetune == finetune:
            return cell
    return None


def table2() -> list[dict]:
    """Table 2 rows: model, key (pretrained | cls-intel | cls-pets | spatial), within/across-image
    variance and patch probe accuracy (%)."""
    return [dict(row) for row in load()["tables"]["table2"]["rows"]]
