"""Write warnings into output files themselves, so that no table, summary or figure produced under a
warning (e.g. ``--allow-overlap``) can be read or shared without it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from viny_probe.checkpoint import write_json

BANNER = "WARNING"


def stamp_warnings(paths: Sequence[Path], warnings: Sequence[str]) -> None:
    """Add ``warnings`` to each existing file: a ``"warnings"`` list in a JSON object, a quoted block at
    the top of Markdown, a red banner above a PNG. Other files and missing paths are left alone."""
    if not warnings:
        return
    for path in dict.fromkeys(Path(p) for p in paths):
        if not path.is_file():
            continue
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                data["warnings"] = list(dict.fromkeys([*data.get("warnings", []), *warnings]))
                write_json(path, data)
        elif path.suffix == ".md":
            lines = "".join(f"> **{BANNER}:** {w}\n" for w in warnings)
            path.write_text(lines + "\n" + path.read_text())
        elif path.suffix == ".png":
            _banner_png(path, warnings)


def _banner_png(path: Path, warnings: Sequence[str]) -> None:
    from PIL import Image, ImageDraw, ImageFont

    with Image.open(path) as opened:
        image = opened.convert("RGB")
    font = ImageFont.load_default()
    line_height = 14
    height = line_height * len(warnings) + 8
    out = Image.new("RGB", (image.width, image.height + height), (200, 30, 30))
    out.paste(image, (0, height))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(warnings):
        draw.text((6, 4 + i * line_height), f"{BANNER}: {text}", fill=(255, 255, 255), font=font)
    out.save(path)


FOOTER_LINE_PX = 12


def stamp_footer(paths: Sequence[Path], lines: Sequence[str]) -> None:
    """Add ``lines`` in a grey strip under each existing PNG (which weights a figure shows: every figure
    carries it, wherever it is copied). Other files and missing paths are left alone."""
    if not lines:
        return
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    for path in dict.fromkeys(Path(p) for p in paths):
        if not path.is_file() or path.suffix != ".png":
            continue
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        height = FOOTER_LINE_PX * len(lines) + 6
        out = Image.new("RGB", (image.width, image.height + height), (235, 235, 235))
        out.paste(image, (0, 0))
        draw = ImageDraw.Draw(out)
        for i, text in enumerate(lines):
            draw.text((6, image.height + 3 + i * FOOTER_LINE_PX), text, fill=(60, 60, 60), font=font)
        out.save(path)
