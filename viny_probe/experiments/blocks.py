"""What a report is made of: headings, paragraphs, tables and figures as plain ``Block`` records
(rendered to markdown and HTML by ``report.py``), and the labels every section gives a condition."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Block:
    kind: str  # h1 | h2 | h3 | p | table | figure
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    path: Path | None = None  # figure file


def h(level: int, text: str) -> Block:
    return Block(f"h{level}", text)


def p(text: str) -> Block:
    return Block("p", text)


def table(columns: list[str], rows: list[list], caption: str = "") -> Block:
    return Block("table", caption, columns, [[str(c) for c in r] for r in rows])


def figure(path: Path, caption: str) -> Block:
    return Block("figure", caption, path=path)


def pre_label(size: int) -> str:
    """How a pre-training size is named: "no pre-training", "pre-train 45k", "pre-train 750"."""
    if size == 0:
        return "no pre-training"
    return f"pre-train {size // 1000}k" if size >= 1000 and size % 1000 == 0 else f"pre-train {size}"


def condition_label(pretrain_size: int, intermediate: str = "") -> str:
    return pre_label(int(pretrain_size)) + (f" + {intermediate}" if intermediate else "")
