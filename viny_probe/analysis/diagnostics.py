"""The built-in per-layer diagnostics of Table 2, one ``register`` line each (see ``registry``).

Each is a pure function of this package (``variance``, ``probe``, ``knn``, ``rank``) applied to one
layer's tokens; the order of registration is the order of Table 2's columns. Formulas:
docs/diagnostics.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from threadpoolctl import threadpool_limits

from viny_probe.analysis import dense_knn as _dense
from viny_probe.analysis.knn import classes_of, knn_vote
from viny_probe.analysis.neighbours import bank_of, cosine_neighbours, queries_of
from viny_probe.analysis.probe import linear_patch_probe
from viny_probe.analysis.rank import effective_rank
from viny_probe.analysis.registry import BLOCKS, Column, Diagnostic, LayerTokens, format_value, register
from viny_probe.analysis.variance import across_image_variance, ratio_of_variances, within_image_variance
from viny_probe.checks import as_labelled_patches
from viny_probe.errors import VinyError

PROBE_SEED = 0  # the probe's and kNN's own randomness (validation split, bank); not the data split
# kNN: cost is (test patches) x (bank patches) x D, so both are capped (a random bank, the first test images).
KNN_K = 20
KNN_BANK_PATCHES = 16384
KNN_TEST_IMAGES = 500
DEPTH_PROBE_MAX_ITER = 300  # the per-block probe is a trend: capped lbfgs iterations


def _pct(fraction: float) -> str:
    return format_value(100 * fraction, ".1f")


def _named(layer: LayerTokens, per_class: Sequence[float]) -> dict[str, float]:
    return {name: value for name, value in zip(layer.class_names, per_class, strict=False)}


def _probe(layer: LayerTokens, **kwargs):
    """``linear_patch_probe`` of ``layer`` (its pool tokens fitted, its test tokens scored, with its seed,
    classes and ``probe_backend``) with BLAS/OpenMP pools at one thread
    on a CPU: on a 2-core CPU after a torch pass, sklearn's lbfgs ran 2-5x slower with the pools at 2
    threads (the 128k-patch probe 16.8 s -> 9.2 s, a 16k-patch per-block fit 2-4 s -> 0.4-1 s), and the
    torch probe of 42k ViT-S/16 tokens 20 s at 1 thread vs 27 s at 2 on the loaded machine."""
    with threadpool_limits(limits=1):
        return linear_patch_probe(
            layer.train,
            layer.train_labels,
            layer.test,
            layer.test_labels,
            seed=layer.seed,
            num_classes=len(layer.class_names),
            backend=layer.probe_backend,
            **kwargs,
        )


# ------------------------------------------------------------------------------------- label-free
def within(layer: LayerTokens) -> float:
    return layer.measure(within_image_variance)


def across(layer: LayerTokens) -> float:
    return layer.measure(across_image_variance)


def ratio(layer: LayerTokens) -> float:
    return ratio_of_variances(within(layer), across(layer))


def rank(layer: LayerTokens) -> float:
    return layer.measure(effective_rank)


# ------------------------------------------------------------------------------------- classifiers
def probe(layer: LayerTokens) -> dict:
    """The linear probe: fitted on the pool tokens, C chosen on held-out pool images, scored on test."""
    result = _probe(layer)
    return {**result.to_dict(), "per_class_accuracy": _named(layer, result.per_class_accuracy)}


def probe_per_block(layer: LayerTokens) -> float:
    """The cheaper per-block probe: one C, the one the final-block probe chose (the sweep over C was 80%
    of the run time), at most ``DEPTH_PROBE_MAX_ITER`` solver iterations; its test accuracy."""
    result = _probe(
        layer,
        Cs=(layer.final["probe"]["chosen_C"],),
        max_iter=DEPTH_PROBE_MAX_ITER,
    )
    return result.test_accuracy


def probe_rows(result: dict) -> list[tuple[str, str]]:
    rows = [
        ("probe test accuracy %", _pct(result["test_accuracy"])),
        ("probe train accuracy %", _pct(result["train_accuracy"])),
        ("probe balanced accuracy %", _pct(result["balanced_accuracy"])),
    ]
    rows += [(f"  {cls} accuracy %", _pct(acc)) for cls, acc in result["per_class_accuracy"].items()]
    converged = "" if result["converged"] else " (not converged)"
    return rows + [("probe C (chosen on validation images)", f"{result['chosen_C']:g}{converged}")]


def _search(layer: LayerTokens, ks: tuple[int, ...]) -> dict:
    """The search both kNN diagnostics run (``analysis.neighbours``), once per layer: the bank of
    ``KNN_BANK_PATCHES`` random pool patches, the first ``KNN_TEST_IMAGES`` test images' patches as
    queries, and each query's ``KNN_K`` and ``dense_knn.K`` nearest bank patches from one similarity
    product (it was two: ViT-S/16, 600 images, the two diagnostics 18 s -> 11 s, docs/performance.md).
    The same bank, queries and neighbours ``knn_patch_accuracy`` and ``dense_knn_segmentation`` find;
    ``ks``: the numbers of neighbours wanted."""
    train, train_labels, test, test_labels = as_labelled_patches(
        layer.train, layer.train_labels, layer.test[:KNN_TEST_IMAGES], layer.test_labels[:KNN_TEST_IMAGES]
    )
    bank, bank_labels = bank_of(train, train_labels, KNN_BANK_PATCHES, layer.seed)
    queries, target = queries_of(test, test_labels)
    ks = sorted(k for k in set(ks) if k <= len(bank))  # a larger k fails where it is used
    found = dict(zip(ks, cosine_neighbours(queries, bank, ks), strict=True))
    num_classes = classes_of(bank_labels, target, len(layer.class_names))
    return {"bank_labels": bank_labels, "target": target, "num_classes": num_classes, "found": found}


def _neighbours(layer: LayerTokens) -> dict:
    """The final layer's search: for kNN and dense kNN."""
    return _search(layer, (KNN_K, _dense.K))


def _block_neighbours(layer: LayerTokens) -> dict:
    """A per-block search: for dense kNN only (kNN is not measured per block)."""
    return _search(layer, (_dense.K,))


def _found(search: dict, k: int) -> tuple:
    """The ``(Q, k)`` similarities and bank indices of the ``k`` nearest bank patches of each query."""
    if k not in search["found"]:
        raise VinyError(f"k = {k} exceeds the {len(search['bank_labels'])} bank patches available")
    return search["found"][k]


def knn(layer: LayerTokens) -> dict:
    search = layer.shared(_neighbours)
    _, index = _found(search, KNN_K)
    result = knn_vote(
        search["bank_labels"][index], search["target"], search["num_classes"], len(search["bank_labels"])
    )
    return {**result.to_dict(), "per_class_accuracy": _named(layer, result.per_class_accuracy)}


def knn_rows(result: dict) -> list[tuple[str, str]]:
    return [
        (f"kNN accuracy % (k={result['k']})", _pct(result["accuracy"])),
        ("kNN balanced accuracy %", _pct(result["balanced_accuracy"])),
    ]


def dense_knn(layer: LayerTokens, search=_neighbours) -> dict:
    """Dense nearest-neighbour segmentation (the Hummingbird protocol, ``analysis.dense_knn``): a bank
    of pool patches, the first ``KNN_TEST_IMAGES`` test images as queries; ``search``: the layer's
    shared neighbour search."""
    search = layer.shared(search)
    similarity, index = _found(search, _dense.K)
    labels = search["bank_labels"]
    distribution = _dense.weighted_labels(
        similarity, labels[index], search["num_classes"], _dense.TEMPERATURE
    )
    result = _dense.segmentation_scores(
        distribution, search["target"], _dense.K, _dense.TEMPERATURE, len(labels)
    )
    return {**result.to_dict(), "per_class_iou": _named(layer, result.per_class_iou)}


def dense_knn_per_block(layer: LayerTokens) -> float:
    return dense_knn(layer, _block_neighbours)["miou"]


def dense_knn_rows(result: dict) -> list[tuple[str, str]]:
    return [
        (f"dense kNN mIoU % (k={result['k']}, T={result['temperature']:g})", _pct(result["miou"])),
        ("dense kNN patch accuracy %", _pct(result["accuracy"])),
    ]


# ------------------------------------------------------------------------------------ registration
register(
    Diagnostic(
        "within_image_variance",
        "within-image variance",
        "mean over images and channels of the variance of a channel across an image's patches",
        within,
        (Column("within", "within", ".3f", report="Within-image var."),),
        per_block=True,
    )
)
register(
    Diagnostic(
        "across_image_variance",
        "across-image variance",
        "variance across images of the per-image mean token, mean over channels",
        across,
        (Column("across", "across", ".3f", report="Across-image var."),),
        per_block=True,
    )
)
register(
    Diagnostic(
        "within_across_ratio",
        "within / across",
        "how much of the variation lies inside images rather than between them",
        ratio,
        (Column("ratio", "ratio", ".2f"),),
        per_block=True,
    )
)
register(
    Diagnostic(
        "probe",
        "probe",
        "logistic regression, C chosen on held-out pool images",
        probe,
        (
            Column(
                "probe_acc_pct",
                "probe acc %",
                ".1f",
                lambda r: 100 * r["test_accuracy"],
                short="probe %",
                report="Patch probe acc. (%)",
            ),
            Column(
                "probe_train_acc_pct",
                "probe train acc %",
                ".1f",
                lambda r: 100 * r["train_accuracy"],
                short="train %",
                shown=(BLOCKS,),
            ),
            Column(
                "balanced_acc_pct",
                "balanced acc %",
                ".1f",
                lambda r: 100 * r["balanced_accuracy"],
                short="balanced %",
            ),
            Column("chosen_C", "C", "g", lambda r: r["chosen_C"], shown=()),
            # whether every lbfgs fit finished before its iteration limit (table2.json / summary.json)
            Column("probe_converged", "probe converged", "", lambda r: bool(r["converged"]), shown=()),
        ),
        per_block=True,
        block_compute=probe_per_block,
        curve_key="probe_accuracy",
        needs_labels=True,
        rows=probe_rows,
    )
)
register(
    Diagnostic(
        "knn",
        "kNN",
        f"k = {KNN_K}, cosine, bank of {KNN_BANK_PATCHES:,} random pool patches, "
        f"queries from the first {KNN_TEST_IMAGES} test images",
        knn,
        (Column("knn_acc_pct", "kNN %", ".1f", lambda r: 100 * r["accuracy"], report="kNN acc. (%)"),),
        needs_labels=True,
        switch="knn",
        settings={"k": KNN_K, "bank_patches": KNN_BANK_PATCHES, "test_images": KNN_TEST_IMAGES},
        rows=knn_rows,
    )
)
register(
    Diagnostic(
        "dense_knn",
        "dense kNN",
        f"Hummingbird retrieval: k = {_dense.K} cosine neighbours from a bank of {KNN_BANK_PATCHES:,} pool "
        f"patches, labels weighted by softmax(sim / {_dense.TEMPERATURE}); patch-level mIoU on the first "
        f"{KNN_TEST_IMAGES} test images",
        dense_knn,
        (
            Column(
                "dense_knn_miou_pct",
                "dense kNN mIoU %",
                ".1f",
                lambda r: 100 * r["miou"],
                short="dkNN mIoU %",
                report="Dense kNN mIoU (%)",
            ),
        ),
        per_block=True,
        block_compute=dense_knn_per_block,
        curve_key="dense_knn_miou",
        needs_labels=True,
        switch="knn",
        settings={
            "k": _dense.K,
            "temperature": _dense.TEMPERATURE,
            "bank_patches": KNN_BANK_PATCHES,
            "test_images": KNN_TEST_IMAGES,
            "labels": "patch majority class (one-hot); mIoU over test patches",
        },
        rows=dense_knn_rows,
    )
)
register(
    Diagnostic(
        "effective_rank",
        "effective rank",
        "RankMe",
        rank,
        (Column("effective_rank", "eff. rank", ".1f", report="Eff. rank"),),
        per_block=True,
    )
)
