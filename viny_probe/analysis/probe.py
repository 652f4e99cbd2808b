"""Linear patch probe: how linearly separable the patch classes are in frozen patch embeddings (Table 2).

Two backends fit the same model, a standardised multinomial logistic regression with C the usual
inverse regularisation strength (cross-entropy summed over patches + ||W||^2 / (2 C), intercept free):

* ``"torch"`` (``"auto"``, on a GPU and on a CPU): ``analysis.logistic.fit_logistic`` on the tokens'
  own device, every C of the sweep in one batched L-BFGS preconditioned by the channels' correlation
  (about 10-15 iterations instead of 80-280 per C on ViT tokens), then the chosen C refitted on all
  train images warm-started from its sweep solution. The tokens are read in place: no standardised,
  labelled-only or float64 copy is made (unlabelled patches get weight 0).
* ``"sklearn"``: ``StandardScaler`` + ``LogisticRegression(solver="lbfgs")``, a warm-started sweep over
  C; the reference the torch backend is tested against (tests/analysis/test_probe.py).

Both stop on the same criterion (largest gradient entry of the 1/n-scaled objective below 1e-4, or
``max_iter``) and split, select and refit identically. Measured on ViT-S/16 tokens (42,506 x 384, 3
classes, 2 loaded CPU cores: torch 3-4 s, sklearn 30-33 s): docs/performance.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from viny_probe.analysis._metrics import balanced_accuracy, per_class_accuracy
from viny_probe.analysis.options import BACKENDS, DEFAULT_BACKEND
from viny_probe.checks import UNLABELLED, ArrayLike, as_labelled_patches, check_positive_int
from viny_probe.errors import VinyError

DEFAULT_CS: tuple[float, ...] = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
# BACKENDS, DEFAULT_BACKEND (analysis.options): auto is torch, on any device.
# The registered probe diagnostics run ``LayerTokens.probe_backend`` (``ProbeOptions.backend``).


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
    # The model refitted on all train images, to predict other patches (``.predict(x)`` on ``(K, D)``
    # rows): sklearn's StandardScaler + LogisticRegression pipeline, or a ``StandardisedLinear``.
    classifier: object | None = field(repr=False, default=None)
    backend: str = DEFAULT_BACKEND

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
            "backend": self.backend,
        }


@dataclass
class StandardisedLinear:
    """The torch backend's refitted model: ``argmax(((x - mean) / scale) @ coef_.T + intercept_)``."""

    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    coef_: np.ndarray  # (K, D), sklearn's layout
    intercept_: np.ndarray  # (K,)
    classes_: np.ndarray  # (K,) the class of each row of coef_

    def predict(self, x) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.scale
        return self.classes_[np.argmax(z @ self.coef_.T + self.intercept_, axis=1)]


def _flat(emb, labels) -> tuple[np.ndarray, np.ndarray]:
    """``(N, P, D)``, ``(N, P)`` -> the labelled patches' rows ``(K, D)`` and labels ``(K,)``."""
    x, y = emb.reshape(-1, emb.shape[-1]).float().cpu().numpy(), labels.reshape(-1).cpu().numpy()
    labelled = y != UNLABELLED
    return (x, y) if labelled.all() else (x[labelled], y[labelled])


def _predict(classifier, x: np.ndarray, rows: int = 65536) -> np.ndarray:
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
    backend: str = DEFAULT_BACKEND,
) -> PatchProbeResult:
    """Fit a standardised multinomial logistic regression from patch embedding to patch class.

    train_emb: ``(N, P, D)``, train_labels: ``(N, P)`` integer classes (e.g. ``patch_majority_labels``).
    test_emb:  ``(M, P', D)``, test_labels: ``(M, P')``.
    The train IMAGES (not patches) are split with ``seed`` into a fitting part and ``val_fraction`` of
    them for validation; each C in ``Cs`` is fitted on the first and scored on the second (accuracy;
    ties go to the smaller C); the chosen C is refitted on all train images. Test images are used only
    for the reported scores. ``backend``: ``"torch"`` or ``"sklearn"`` (module docstring).
    """
    if backend not in BACKENDS:
        raise VinyError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
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
    if backend == "auto":
        backend = "torch"
    if backend == "torch":
        return _torch_probe(
            train_emb, train_labels, test_emb, test_labels, val_idx, Cs, num_classes, max_iter
        )
    return _sklearn_probe(
        train_emb, train_labels, test_emb, test_labels, val_idx, fit_idx, Cs, num_classes, max_iter
    )


def _sklearn_probe(
    train_emb, train_labels, test_emb, test_labels, val_idx, fit_idx, Cs, num_classes, max_iter
):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

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
        validation, solutions = {}, {}
        for c in Cs:
            selector.set_params(C=c).fit(z_fit, y_fit)
            validation[c] = float(np.mean(selector.predict(z_val) == y_val))
            solutions[c] = (selector.coef_.copy(), selector.intercept_.copy())
        chosen = max(Cs, key=lambda c: (validation[c], -c))

        # The refit on every pool image starts from the chosen C's solution on the fitting images (the
        # same objective, its own optimum, reached in fewer lbfgs steps than from zero).
        final = LogisticRegression(C=chosen, max_iter=max_iter, warm_start=True)
        final.coef_, final.intercept_ = solutions[chosen]
        classifier = make_pipeline(StandardScaler(), final)
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
        backend="sklearn",
    )


def _torch_probe(train_emb, train_labels, test_emb, test_labels, val_idx, Cs, num_classes, max_iter):
    """The torch backend of ``linear_patch_probe`` (the module docstring): the sweep over ``Cs`` in one
    batched fit on the fitting images' patches, then the chosen C on all train patches, warm-started."""
    from viny_probe.analysis.logistic import fit_logistic, standardiser

    n, p, d = train_emb.shape
    x = train_emb.reshape(-1, d)  # a view: the tokens are never copied
    dev = x.device
    y = train_labels.reshape(-1).to(dev)
    labelled = y != UNLABELLED
    is_val = torch.zeros(n, dtype=torch.bool, device=dev)
    is_val[torch.as_tensor(val_idx, device=dev)] = True
    is_val = is_val.repeat_interleave(p)
    fit_rows = labelled & ~is_val
    _check_two_classes(
        y[fit_rows].cpu().numpy(), "train_labels (on the fitting images left after the validation split)"
    )
    # sklearn fits only the classes its rows hold (an absent class would drive its free intercept to
    # -inf): the same here, with the labels renumbered over the present classes
    sweep_classes, all_classes = torch.unique(y[fit_rows]), torch.unique(y[labelled])

    def renumbered(classes: torch.Tensor) -> torch.Tensor:
        lookup = torch.zeros(num_classes, dtype=torch.long, device=dev)
        lookup[classes] = torch.arange(len(classes), device=dev)
        return lookup[y.clamp_min(0)]

    # the statistics of the sweep's rows and of the refit's, from one read of the tokens
    scalers = standardiser(x, torch.stack([fit_rows, labelled]))
    sweep = fit_logistic(
        x,
        renumbered(sweep_classes),
        fit_rows.expand(len(Cs), -1),
        torch.tensor(Cs, device=dev),
        len(sweep_classes),
        max_iter,
        scaler=scalers[[0] * len(Cs)],
    )
    val_rows = labelled & is_val
    val_pred = sweep_classes[sweep.predict(x)][:, val_rows]  # (J, validation patches)
    val_acc = (val_pred == y[val_rows]).float().mean(1).tolist()
    validation = dict(zip(Cs, val_acc, strict=True))
    chosen = max(Cs, key=lambda c: (validation[c], -c))
    j = Cs.index(chosen)

    # warm start: the chosen sweep model as the same logits in the refit's standardised space
    scaler = scalers[[1]]
    a, c = sweep.raw()
    at = torch.searchsorted(all_classes, sweep_classes)
    weight = torch.zeros(1, d, len(all_classes), device=dev)
    bias = torch.zeros(1, len(all_classes), device=dev)
    weight[0][:, at] = a[j] * scaler.scale[0][:, None]
    bias[0][at] = c[j] + scaler.mean[0] @ a[j]
    final = fit_logistic(
        x,
        renumbered(all_classes),
        labelled[None],
        torch.tensor([chosen], device=dev),
        len(all_classes),
        max_iter,
        scaler=scaler,
        init=(weight, bias),
    )
    y_train = y[labelled].cpu().numpy()
    train_pred = all_classes[final.predict(x)[0]][labelled].cpu().numpy()
    y_test_all = test_labels.reshape(-1).to(dev)
    test_rows = y_test_all != UNLABELLED
    predicted = all_classes[final.predict(test_emb.reshape(-1, d))[0]][test_rows].cpu().numpy()
    y_test = y_test_all[test_rows].cpu().numpy()
    per_class = per_class_accuracy(predicted, y_test, num_classes)
    classifier = StandardisedLinear(
        scaler.mean[0].cpu().numpy(),
        scaler.scale[0].cpu().numpy(),
        final.weight[0].T.cpu().numpy(),
        final.bias[0].cpu().numpy(),
        all_classes.cpu().numpy(),
    )
    return PatchProbeResult(
        test_accuracy=float(np.mean(predicted == y_test)),
        train_accuracy=float(np.mean(train_pred == y_train)),
        balanced_accuracy=balanced_accuracy(per_class),
        per_class_accuracy=per_class.tolist(),
        chosen_C=chosen,
        validation_accuracy=validation,
        num_train_patches=len(y_train),
        num_test_patches=len(y_test),
        converged=bool(sweep.converged.all() and final.converged.all()),
        classifier=classifier,
        backend="torch",
    )
