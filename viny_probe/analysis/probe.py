"""Linear patch probe: how linearly separable the patch classes are in frozen patch embeddings (Table 2).

Why scikit-learn's ``LogisticRegression(solver="lbfgs")``: measured on 128,000 x 128 float32 patches with
3 classes on 2 CPU cores, one fit takes about 1 s, and a warm-started sweep over five values of C about
1.2 s; a torch full-batch LBFGS of the same multinomial model took 1-3 s per fit. The sklearn solver
converges on the projected gradient, works in float32 without copying to float64, and its C is the
usual inverse regularisation strength (loss summed over patches + ||W||^2 / (2 C)).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from viny_probe.analysis._metrics import balanced_accuracy, per_class_accuracy
from viny_probe.checks import UNLABELLED, ArrayLike, as_labelled_patches, check_positive_int
from viny_probe.errors import VinyError

DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)


@dataclass
class PatchProbeResult:
    """Outcome of ``linear_patch_probe``. Accuracies are fractions in [0, 1] over patches."""

    test_accuracy: float
    train_accuracy: float
    balanced_accuracy: float
    per_class_accuracy: list[float]  # test recall of each class; NaN for a class absent from the test set
    chosen_C: float
    validation_accuracy: dict[float, float]  # C -> accuracy on the validation images
    num_train_patches: int
    num_test_patches: int
    converged: bool  # False if any fit stopped at max_iter
    # StandardScaler + LogisticRegression refitted on all train images, to predict other patches.
    classifier: Pipeline | None = field(repr=False, default=None)

    def to_dict(self) -> dict:
        """JSON-ready summary (without the fitted classifier)."""
        return {
            "test_accuracy": self.test_accuracy,
            "train_accuracy": self.train_accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "per_class_accuracy": self.per_class_accuracy,
            "chosen_C": self.chosen_C,
            "validation_accuracy": {str(c): a for c, a in self.validation_accuracy.items()},
            "num_train_patches": self.num_train_patches,
            "num_test_patches": self.num_test_patches,
            "converged": self.converged,
        }


def _flat(emb, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(N, P, D)``, ``(N, P)`` -> the labelled patches' rows ``(K, D)`` and labels ``(K,)``."""
    x, y = emb.reshape(-1, emb.shape[-1]).numpy().astype(np.float32, copy=False), labels.reshape(-1).numpy()
    labelled = y != UNLABELLED
    return (x, y) if labelled.all() else (x[labelled], y[labelled])


def _predict(classifier: Pipeline, x: np.ndarray, rows: int = 65536) -> np.ndarray:
    """``classifier.predict`` in row blocks: the scaler's standardised copy is one block, not all of x."""
    return np.concatenate([classifier.predict(x[s : s + rows]) for s in range(0, len(x), rows)])


def _check_two_classes(labels: np.ndarray, name: str) -> None:
    if np.unique(labels).size < 2:
        raise VinyError(f"{name} holds a single patch class; a probe needs at least two")


def linear_patch_probe(
    train_emb: ArrayLike,
    train_labels: ArrayLike,
    test_emb: ArrayLike,
    test_labels: ArrayLike,
    val_fraction: float = 0.2,
    Cs: Sequence[float] = DEFAULT_CS,
    seed: int = 0,
    num_classes: int | None = None,
    max_iter: int = 1000,
) -> PatchProbeResult:
    """Fit a standardised multinomial logistic regression from patch embedding to patch class.

    train_emb: ``(N, P, D)``, train_labels: ``(N, P)`` integer classes (e.g. ``patch_majority_labels``).
    test_emb:  ``(M, P', D)``, test_labels: ``(M, P')``.
    The train IMAGES (not patches) are split with ``seed`` into a fitting part and ``val_fraction`` of
    them for validation; each C in ``Cs`` is fitted on the first and scored on the second (accuracy;
    ties go to the smaller C); the chosen C is refitted on all train images. Test images are used only
    for the reported scores.
    """
    train_emb, train_labels, test_emb, test_labels = as_labelled_patches(
        train_emb, train_labels, test_emb, test_labels
    )
    n = train_emb.shape[0]
    if not 0.0 < val_fraction < 1.0:
        raise VinyError(f"val_fraction must be strictly between 0 and 1, got {val_fraction!r}")
    if n < 2:
        raise VinyError(f"train_emb needs at least 2 images to split off validation images, got N = {n}")
    Cs = sorted(float(c) for c in Cs)
    if not Cs or any(c <= 0 for c in Cs):
        raise VinyError(f"Cs must be a non-empty list of positive numbers, got {Cs!r}")
    observed = int(max(train_labels.max(), test_labels.max())) + 1
    num_classes = observed if num_classes is None else check_positive_int(num_classes, "num_classes")
    if num_classes < observed:
        raise VinyError(f"num_classes = {num_classes}, but the labels hold class {observed - 1}")

    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    val_idx, fit_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    x_fit, y_fit = _flat(train_emb[fit_idx], train_labels[fit_idx])
    x_val, y_val = _flat(train_emb[val_idx], train_labels[val_idx])
    x_train, y_train = _flat(train_emb, train_labels)
    x_test, y_test = _flat(test_emb, test_labels)
    _check_two_classes(y_fit, "train_labels (on the fitting images left after the validation split)")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        scaler = StandardScaler().fit(x_fit)
        z_fit, z_val = scaler.transform(x_fit), scaler.transform(x_val)
        # Warm-starting along increasing C: each fit starts from the last optimum and still stops on
        # lbfgs's own gradient tolerance, so it reaches the same optimum in fewer steps.
        selector = LogisticRegression(max_iter=max_iter, warm_start=True)
        validation = {}
        for c in Cs:
            selector.set_params(C=c).fit(z_fit, y_fit)
            validation[c] = float(np.mean(selector.predict(z_val) == y_val))
        chosen = max(Cs, key=lambda c: (validation[c], -c))

        classifier = make_pipeline(StandardScaler(), LogisticRegression(C=chosen, max_iter=max_iter))
        classifier.fit(x_train, y_train)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    predicted = _predict(classifier, x_test)
    per_class = per_class_accuracy(predicted, y_test, num_classes)
    return PatchProbeResult(
        test_accuracy=float(np.mean(predicted == y_test)),
        train_accuracy=float(np.mean(_predict(classifier, x_train) == y_train)),
        balanced_accuracy=balanced_accuracy(per_class),
        per_class_accuracy=per_class.tolist(),
        chosen_C=chosen,
        validation_accuracy=validation,
        num_train_patches=len(y_train),
        num_test_patches=len(y_test),
        converged=converged,
        classifier=classifier,
    )
