"""docs/fidelity.md states the presets' values stage by stage in a machine-readable table; every row must
be what config.py resolves, and every value a preset's recipe sets must have a row, so the document
cannot drift from the code."""

from pathlib import Path

import pytest

from viny_probe.config import RECIPES, TrainConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
# The study's stages as the table names them: (regime, dataset, schedule row).
STAGES = {
    "pretrain": ("simmim", "imagenet", None),
    "cls-intel-a3": ("classify", "intel", "intermediate"),
    "cls-intel-t2": ("classify", "intel", "geometry"),
    "cls-pets-t2": ("classify", "pets", "geometry"),
    "spatial-t2": ("spatial", "pets", "geometry"),
    "finetune": ("segment", "pets", None),
}


def doc_rows(text: str) -> list[tuple[str, str, str, str]]:
    """The (preset, stage, key, value) rows between the preset-table markers."""
    body = text.split("<!-- preset-table:start -->")[1].split("<!-- preset-table:end -->")[0]
    rows = []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] not in ("preset", "---"):
            rows.append(tuple(cells))
    return rows


def resolved(preset: str, stage: str) -> TrainConfig:
    regime, dataset, phase = STAGES[stage]
    return TrainConfig(regime=regime, preset=preset, dataset=dataset, phase=phase).resolved()


def check(rows) -> list[str]:
    """One line per row whose value differs from the resolved config."""
    wrong = []
    for preset, stage, key, value in rows:
        cfg = resolved(preset, stage)
        actual = cfg.regime_options[key] if key in cfg.regime_options else getattr(cfg, key)
        if isinstance(actual, bool):
            expected = {"True": True, "False": False}.get(value, value)
        else:
            expected = type(actual)(value) if isinstance(actual, (int, float)) else value
        if actual != expected:
            wrong.append(f"{preset} {stage} {key}: doc {value}, config {actual}")
    return wrong


def test_every_row_of_the_preset_table_is_what_config_resolves():
    """Mutant applied: AUTHORS' CLS-Pets weight decay 0.01 -> 0 in config.RECIPES (the doc row
    'authors | cls-pets-t2 | weight_decay | 0.01' fails)."""
    rows = doc_rows(DOC.read_text())
    assert len(rows) >= 40
    assert check(rows) == []


def test_every_recipe_value_of_a_preset_has_a_row():
    """A value added to a preset's recipe without a row in the doc fails. Mutant applied: an extra
    recipe value (authors' finetune mixup 0.2) added to RECIPES (no row: fails)."""
    documented = {(p, s, k) for p, s, k, _ in doc_rows(DOC.read_text())}
    missing = []
    for preset, recipes in RECIPES.items():
        for (regime, dataset, phase), values in recipes.items():
            stages = [
                s
                for s, (r, d, ph) in STAGES.items()
                if r == regime and dataset in (None, d) and phase in (None, ph or resolved(preset, s).phase)
            ]
            assert stages, f"RECIPES[{preset!r}] key {(regime, dataset, phase)} is no stage of the study"
            missing += [(preset, s, k) for s in stages for k in values if (preset, s, k) not in documented]
    assert missing == []


@pytest.mark.parametrize(
    "bad", ["| paper | pretrain | lr | 1e-3 |", "| authors | spatial-t2 | inputs | normalized |"]
)
def test_the_check_catches_a_wrong_row(bad):
    cells = tuple(c.strip() for c in bad.strip("|").split("|"))
    assert check([cells])
