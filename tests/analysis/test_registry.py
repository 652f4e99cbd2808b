"""The diagnostics registry: the built-in Table 2 diagnostics, what measuring a layer gives, the one
convention of the within/across ratio, and registering / unregistering."""

import math

import pytest
import torch

import viny_probe.analysis as analysis
from viny_probe.analysis.registry import (
    BLOCKS,
    TABLE2,
    Column,
    Diagnostic,
    LayerTokens,
    columns,
    format_value,
    measure_layer,
    register,
    registered,
    table_row,
    temporarily,
    unregister,
)
from viny_probe.errors import VinyError


def embeddings(n=6, p=16, d=8, seed=0):
    return torch.randn(n, p, d, generator=torch.Generator().manual_seed(seed))


def test_every_public_name_is_exported():
    for name in analysis.__all__:
        assert hasattr(analysis, name), name


def test_the_built_in_diagnostics_in_table_2_order():
    assert [d.key for d in registered()] == [
        "within_image_variance",
        "across_image_variance",
        "within_across_ratio",
        "probe",
        "knn",
        "dense_knn",
        "effective_rank",
    ]
    assert [c.title for c in columns(TABLE2)] == [
        "within",
        "across",
        "ratio",
        "probe acc %",
        "balanced acc %",
        "kNN %",
        "dense kNN mIoU %",
        "eff. rank",
    ]
    assert [c.terminal_title for c in columns(BLOCKS)] == [
        "within",
        "across",
        "ratio",
        "probe %",
        "train %",
        "balanced %",
        "kNN %",
        "dkNN mIoU %",
        "eff. rank",
    ]
    assert {d.curve for d in registered() if d.per_block} == {
        "within_image_variance",
        "across_image_variance",
        "within_across_ratio",
        "probe_accuracy",
        "dense_knn_miou",
        "effective_rank",
    }
    assert [d.key for d in registered() if d.needs_labels] == ["probe", "knn", "dense_knn"]


def test_label_free_diagnostics_are_the_plain_functions():
    """Measuring a layer gives exactly what the pure functions give; the ratio is within / across of
    the same tokens. Kills: the ratio computed from another layer's variances, or swapped."""
    emb = embeddings()
    label_free = [d for d in registered() if d.per_block and not d.needs_labels]
    got = {d.key: d.compute(LayerTokens(emb)) for d in label_free}
    assert got["within_image_variance"] == analysis.within_image_variance(emb)
    assert got["across_image_variance"] == analysis.across_image_variance(emb)
    assert got["effective_rank"] == analysis.effective_rank(emb)
    assert got["within_across_ratio"] == analysis.within_across_ratio(emb)
    assert got["within_across_ratio"] == got["within_image_variance"] / got["across_image_variance"]


def test_measure_computes_a_shared_quantity_once_per_layer():
    calls = []

    def counted(t):
        calls.append(1)
        return float(t.sum())

    layer = LayerTokens(embeddings())
    assert layer.measure(counted) == layer.measure(counted)
    assert len(calls) == 1


def test_the_ratio_has_one_convention_for_a_zero_across_variance():
    """Every image the same: across = 0. inf when the patches still differ, NaN when every token is the
    same; JSON writes both as null (format: n/a)."""
    assert analysis.ratio_of_variances(2.0, 4.0) == 0.5
    assert analysis.ratio_of_variances(1.0, 0.0) == math.inf
    assert math.isnan(analysis.ratio_of_variances(0.0, 0.0))
    same_images = embeddings(n=1).expand(4, -1, -1).clone()
    assert analysis.within_across_ratio(same_images) == math.inf
    assert math.isnan(analysis.within_across_ratio(torch.ones(4, 16, 8)))
    assert format_value(math.inf, ".2f") == "n/a" and format_value(None, ".2f") == "n/a"


def test_measure_layer_with_labels_and_a_switch_off():
    """Every registered diagnostic gets a result; a switched-off one (kNN) is None, and so are its
    columns. Kills: a switch ignored, a column taken from another diagnostic's result."""
    g = torch.Generator().manual_seed(1)
    train, test = embeddings(8, 16, 8, 1), embeddings(4, 16, 8, 2)
    train_labels, test_labels = (
        torch.randint(0, 3, (8, 16), generator=g),
        torch.randint(0, 3, (4, 16), generator=g),
    )
    results = measure_layer(LayerTokens(test, test_labels, train, train_labels), off=("knn",))
    assert list(results) == [d.key for d in registered()]
    assert results["knn"] is None
    row = table_row(results)
    assert row["knn_acc_pct"] is None
    assert row["probe_acc_pct"] == 100 * results["probe"]["test_accuracy"]
    assert row["chosen_C"] == results["probe"]["chosen_C"]
    assert row["within"] == results["within_image_variance"]


def test_register_refuses_clashes_and_temporarily_cleans_up():
    toy = Diagnostic("toy", "toy", "a toy", lambda layer: 1.0, (Column("toy_col", "toy", ".1f"),))
    with pytest.raises(VinyError, match="registered already"):
        register(Diagnostic("probe", "p", "p", lambda layer: 0.0))
    with pytest.raises(VinyError, match="taken"):
        register(Diagnostic("other", "o", "o", lambda layer: 0.0, (Column("within", "w", ".1f"),)))
    with pytest.raises(VinyError, match="no diagnostic 'toy'"):
        unregister("toy")
    with pytest.raises(RuntimeError), temporarily(toy):
        assert registered()[-1] is toy and columns()[-1].key == "toy_col"
        raise RuntimeError("a failing test body")
    assert "toy" not in [d.key for d in registered()]
    assert register(toy) is toy
    assert unregister("toy") is toy
