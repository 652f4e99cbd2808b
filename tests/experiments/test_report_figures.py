"""The report's figure helpers without a sweep: log axes ticked at the sizes, and the example sections
when there is nothing (or nothing readable) to draw."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from viny_probe.experiments.examples import fig2_section, figA1_section, figA2_section
from viny_probe.experiments.report import size_axis

PAPER_SIZES = [250, 500, 1000, 2000, 4000, 6000]


def test_size_axis_ticks_the_sizes_as_plain_numbers():
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot(PAPER_SIZES + PAPER_SIZES[:2], [1, 2, 3, 4, 5, 6, 7, 8])  # repeated sizes are ticked once
    size_axis(ax, PAPER_SIZES + [500, 250])
    FigureCanvasAgg(fig).draw()
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "fine-tune images (log scale)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["250", "500", "1000", "2000", "4000", "6000"]
    assert list(ax.get_xticks(minor=True)) == []  # no 3x10^2-style minor labels


def test_size_axis_within_one_decade_has_no_scientific_labels():
    fig = Figure()
    ax = fig.add_subplot()
    ax.plot([300, 400, 600], [1, 2, 3])
    size_axis(ax, [300, 400, 600], label="n")
    FigureCanvasAgg(fig).draw()
    labels = [t.get_text() for t in ax.get_xticklabels() + ax.get_xticklabels(minor=True)]
    assert labels == ["300", "400", "600"]


def row(kind: str, stage: str, **extra) -> dict:
    base = {"kind": kind, "stage": stage, "model": "tiny", "seed": 0, "pretrain_size": 0, "intermediate": ""}
    return {**base, **extra}


def test_fig2_says_so_plainly_when_the_sweep_has_no_pretraining(tmp_path):
    blocks = fig2_section(tmp_path, [row("finetune", "segment-a", finetune_size=8)], tmp_path)
    assert [b.kind for b in blocks] == ["h2", "p"]
    assert blocks[1].text == "This sweep has no pre-training stage, so there are no reconstructions to show."


def test_missing_checkpoints_are_named_not_fatal(tmp_path):
    pre = row("pretrain", "simmim-x", pretrain_size=16, dataset="toy-unlabeled")
    seg = row("finetune", "segment-y", finetune_size=8, dataset="toy-pets")
    text = " ".join(b.text for b in fig2_section(tmp_path, [pre, seg], tmp_path))
    assert "Left out of Fig 2 (model tiny): pre-train 16 (stage simmim-x): no final.pt" in text
    blocks = figA1_section(tmp_path, [seg], tmp_path, "")
    text = " ".join(b.text for b in blocks)
    assert "No fine-tuned checkpoint could be read" in text
    assert "no pre-training (stage segment-y): no final.pt" in text
    assert not any(b.kind == "figure" for b in blocks)


def test_held_out_reconstruction_loss_is_tabled_when_stages_report_it(tmp_path):
    rows = [
        row(
            "pretrain",
            f"simmim-{seed}",
            seed=seed,
            pretrain_size=16,
            results={"test_reconstruction_l1": value},
        )
        for seed, value in ((0, 0.5), (1, 0.7))
    ]
    tables = [b for b in fig2_section(tmp_path, rows, tmp_path) if b.kind == "table"]
    assert len(tables) == 1 and tables[0].rows == [["tiny", "16", "0.6000 ± 0.1414 (n=2)"]]


def test_fig_a2_needs_a_classification_intermediate_and_names_missing_checkpoints(tmp_path):
    """Without a classification intermediate there is no Fig A2; with one whose checkpoints are missing,
    the section says so and names each (the pre-trained-only condition at the same pre-training size
    included, the one at another size not drawn)."""
    plain = row("finetune", "segment-a", finetune_size=8, pretrain_size=16, dataset="toy-pets")
    other = row("finetune", "segment-c", finetune_size=8, pretrain_size=0, dataset="toy-pets")
    assert figA2_section(tmp_path, [plain, other], tmp_path, "") == []
    cls = row("finetune", "segment-b", finetune_size=8, pretrain_size=16, intermediate="cls-intel")
    blocks = figA2_section(tmp_path, [plain, other, cls], tmp_path, "")
    text = " ".join(b.text for b in blocks)
    assert "No classification-intermediate checkpoint could be read" in text
    assert "pre-train 16 (stage segment-a): no final.pt" in text
    assert "pre-train 16 + cls-intel (stage segment-b): no final.pt" in text
    assert "segment-c" not in text and not any(b.kind == "figure" for b in blocks)
