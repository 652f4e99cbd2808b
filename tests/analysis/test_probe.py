import numpy as np
import pytest
import torch

from viny_probe.analysis import linear_patch_probe
from viny_probe.analysis._metrics import balanced_accuracy, per_class_accuracy
from viny_probe.analysis.logistic import fit_logistic
from viny_probe.analysis.probe import BACKENDS
from viny_probe.errors import VinyError


def _clusters(n: int, p: int, d: int, seed: int, spread: float = 5.0):
    """Patches whose embedding is their class centre (times ``spread``) plus unit noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, d, generator=torch.Generator().manual_seed(99)) * spread
    labels = torch.randint(0, 3, (n, p), generator=g)
    return centres[labels] + torch.randn(n, p, d, generator=g), labels


def _coef(classifier) -> np.ndarray:
    return classifier.coef_ if hasattr(classifier, "coef_") else classifier[-1].coef_


@pytest.mark.parametrize("backend", BACKENDS)
def test_separable_clusters_are_probed_near_perfectly(backend):
    """Mutants killed (each backend's selection): ties going to the larger C (``(validation[c], c)``)."""
    train_emb, train_labels = _clusters(40, 16, 8, seed=0)
    test_emb, test_labels = _clusters(20, 16, 8, seed=1)
    result = linear_patch_probe(
        train_emb, train_labels, test_emb, test_labels, Cs=(0.01, 1.0), backend=backend
    )
    assert result.test_accuracy > 0.98
    assert result.train_accuracy > 0.98
    assert result.balanced_accuracy > 0.98
    assert min(result.per_class_accuracy) > 0.95
    # both Cs score every validation patch right; the tie goes to the smaller C
    assert result.validation_accuracy == {0.01: 1.0, 1.0: 1.0} and result.chosen_C == 0.01
    assert result.num_train_patches == 640 and result.num_test_patches == 320
    assert result.converged


def _fixed_shares(n: int, seed: int):
    """Separable clusters (spread 5) where every image holds 11 class-0, 3 class-1 and 2 class-2 patches
    (in its own order): whichever images the validation split takes, predicting class 0 everywhere
    scores exactly 11/16."""
    g = torch.Generator().manual_seed(seed)
    shares = torch.tensor([0] * 11 + [1] * 3 + [2] * 2)
    labels = torch.stack([shares[torch.randperm(16, generator=g)] for _ in range(n)])
    centres = torch.randn(3, 8, generator=torch.Generator().manual_seed(99)) * 5
    return centres[labels] + torch.randn(n, 16, 8, generator=g), labels


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_the_c_that_scores_best_on_the_validation_images_is_chosen(backend):
    """C = 1e-5 shrinks the weights to nothing: the probe predicts the majority class, 11/16 of every
    image; C = 1 separates the clusters: 1.0. The validation scores are those two numbers, the chosen C is
    1 (not the smaller one) and the test accuracy is the refit's at C = 1. Mutants killed (each backend):
    the smallest C chosen whatever it scores (``min(Cs)``); the worst-scoring C chosen
    (``min(Cs, key=lambda c: (validation[c], -c))``); the refit on all train images at ``Cs[0]`` instead
    of the chosen C (sklearn ``LogisticRegression(C=Cs[0])``, torch ``torch.tensor([Cs[0]])``)."""
    train_emb, train_labels = _fixed_shares(40, seed=0)
    test_emb, test_labels = _fixed_shares(20, seed=1)
    result = linear_patch_probe(
        train_emb, train_labels, test_emb, test_labels, Cs=(1e-5, 1.0), backend=backend
    )
    assert result.validation_accuracy == {1e-5: 11 / 16, 1.0: 1.0}
    assert result.chosen_C == 1.0 and result.test_accuracy == 1.0


def test_random_labels_give_chance_accuracy():
    g = torch.Generator().manual_seed(0)
    train_emb, test_emb = torch.randn(40, 16, 8, generator=g), torch.randn(40, 16, 8, generator=g)
    train_labels, test_labels = (
        torch.randint(0, 3, (40, 16), generator=g),
        torch.randint(0, 3, (40, 16), generator=g),
    )
    result = linear_patch_probe(train_emb, train_labels, test_emb, test_labels, Cs=(0.1,))
    assert 0.25 < result.test_accuracy < 0.42  # chance is 1/3; 640 test patches -> sd ~0.02


@pytest.mark.parametrize("backend", BACKENDS)
def test_test_images_never_influence_the_fit(backend):
    train_emb, train_labels = _clusters(30, 16, 8, seed=0, spread=0.5)
    test_emb, test_labels = _clusters(10, 16, 8, seed=1, spread=0.5)
    a = linear_patch_probe(train_emb, train_labels, test_emb, test_labels, backend=backend)
    b = linear_patch_probe(train_emb, train_labels, test_emb * 10 + 3, (test_labels + 1) % 3, backend=backend)
    assert a.chosen_C == b.chosen_C
    assert a.validation_accuracy == b.validation_accuracy
    np.testing.assert_array_equal(_coef(a.classifier), _coef(b.classifier))
    assert a.train_accuracy == b.train_accuracy


@pytest.mark.parametrize("backend", BACKENDS)
def test_validation_holds_out_whole_images(backend):
    # Every patch of an image shares the image's random code and the image's random label: a linear model
    # with D > number of images memorises the fitting images but cannot generalise to new ones. Held-out
    # validation IMAGES therefore score near chance; a split by patch would put each validation patch's
    # twins in the fitting set and score ~1.
    g = torch.Generator().manual_seed(0)
    codes = torch.randn(120, 1, 128, generator=g)
    emb = codes + 0.01 * torch.randn(120, 4, 128, generator=g)
    labels = torch.randint(0, 3, (120, 1), generator=g).expand(120, 4)
    result = linear_patch_probe(
        emb, labels, emb[:5], labels[:5], Cs=(100.0,), val_fraction=0.25, backend=backend
    )
    assert result.train_accuracy > 0.95
    assert result.validation_accuracy[100.0] < 0.7


def test_metrics_on_a_hand_made_case():
    predicted = np.array([0, 0, 1, 1, 1, 2])
    target = np.array([0, 1, 1, 1, 1, 0])
    per_class = per_class_accuracy(predicted, target, num_classes=3)
    np.testing.assert_allclose(per_class[:2], [0.5, 0.75])
    assert np.isnan(per_class[2])  # class 2 never appears in the target
    assert balanced_accuracy(per_class) == pytest.approx(0.625)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"test_emb": torch.zeros(2, 4, 5)}, "same number of channels"),
        ({"train_labels": torch.zeros(6, 3, dtype=torch.long)}, r"train_labels must have shape \(N, P\)"),
        ({"train_labels": torch.zeros(6, 4)}, "integer class indices"),
        ({"train_emb": torch.zeros(6, 4)}, r"train_emb must have shape \(N, P, D\)"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"Cs": ()}, "Cs"),
        ({"train_labels": torch.zeros(6, 4, dtype=torch.long)}, "single patch class"),
        ({"backend": "jax"}, "backend must be one of auto, torch, sklearn"),
    ],
)
def test_bad_input_raises(change, message):
    g = torch.Generator().manual_seed(0)
    kwargs = {
        "train_emb": torch.randn(6, 4, 3, generator=g),
        "train_labels": torch.arange(24).reshape(6, 4) % 3,
        "test_emb": torch.randn(2, 4, 3, generator=g),
        "test_labels": torch.zeros(2, 4, dtype=torch.long),
    }
    with pytest.raises(VinyError, match=message):
        linear_patch_probe(**{**kwargs, **change})


def _overlapping(n: int, p: int, d: int, seed: int):
    """Three overlapping classes in correlated, shifted, unevenly scaled channels, some patches
    unlabelled: the regularisation matters and the chosen C is not at the edge of the grid."""
    g = torch.Generator().manual_seed(seed)
    fixed = torch.Generator().manual_seed(99)
    centres = torch.randn(3, d, generator=fixed) * 0.12
    mix = torch.randn(d, d, generator=fixed) / d**0.5
    scales = torch.rand(d, generator=fixed) * 5 + 0.1
    labels = torch.randint(0, 3, (n, p), generator=g)
    emb = ((centres[labels] + torch.randn(n, p, d, generator=g)) @ mix) * scales + 7
    labels[:, 0] = -1  # unlabelled patches: in no fit, no score
    return emb, labels


def _low_rank(n: int, p: int, d: int, seed: int):
    """``_overlapping``'s patches in ``d / 2`` channels lifted into ``d`` plus a trace of noise: channels
    whose correlation matrix has eigenvalues from about 0 to tens, as ViT tokens do (ViT-S/16: 0 to 108)."""
    emb, labels = _overlapping(n, p, d // 2, seed)
    lift = torch.randn(d // 2, d, generator=torch.Generator().manual_seed(7))
    return emb @ lift + 1e-3 * torch.randn(
        n, p, d, generator=torch.Generator().manual_seed(seed + 100)
    ), labels


@pytest.mark.parametrize("make, dim", [(_overlapping, 48), (_low_rank, 96)])
def test_torch_backend_matches_scikit_learn(make, dim):
    """Same objective, split, selection and stopping rule: the same C is chosen and the scores agree to
    within a fraction of a point (not bit for bit: the solvers take different steps to the optimum).
    ``auto`` is the torch backend on this CPU. Mutants killed: the preconditioner without its penalty
    term (both data); the preconditioner the identity (``_low_rank``: the plain L-BFGS stops further from
    the optimum than sklearn's)."""
    train_emb, train_labels = make(150, 24, dim, seed=0)
    test_emb, test_labels = make(80, 24, dim, seed=1)
    torch_fit, sklearn_fit = (
        linear_patch_probe(train_emb, train_labels, test_emb, test_labels, num_classes=3, backend=b)
        for b in ("auto", "sklearn")
    )
    assert torch_fit.backend == "torch"
    assert torch_fit.chosen_C == sklearn_fit.chosen_C
    assert 1e-3 < sklearn_fit.chosen_C < 10.0  # the choice is a real one, not an edge of the grid
    assert abs(torch_fit.test_accuracy - sklearn_fit.test_accuracy) <= 0.005
    assert abs(torch_fit.train_accuracy - sklearn_fit.train_accuracy) <= 0.005
    for c, accuracy in sklearn_fit.validation_accuracy.items():
        assert abs(torch_fit.validation_accuracy[c] - accuracy) <= 0.005
    assert torch_fit.num_train_patches == sklearn_fit.num_train_patches == 150 * 23
    assert torch_fit.converged and sklearn_fit.converged
    # both stop on the gradient tolerance: the torch fit is as close to the optimum as sklearn's
    x, y = train_emb.reshape(-1, dim).double().numpy(), train_labels.reshape(-1).numpy()
    x, y = x[y >= 0], y[y >= 0]
    losses = [_objective(f.classifier, x, y, sklearn_fit.chosen_C) for f in (torch_fit, sklearn_fit)]
    assert losses[0] <= losses[1] + 1e-6
    if make is _overlapping:  # on near-degenerate channels (_low_rank) the coefficients along directions
        # the rows barely span are pinned only by the weak penalty: there the solvers' stops differ
        np.testing.assert_allclose(
            _coef(torch_fit.classifier),
            _coef(sklearn_fit.classifier),
            atol=1e-2 * np.abs(_coef(sklearn_fit.classifier)).max(),
        )


def _objective(classifier, x: np.ndarray, y: np.ndarray, c: float) -> float:
    """The probe's objective (probe.py) of a fitted classifier on the rows ``x`` it was fitted on."""
    model = classifier if hasattr(classifier, "coef_") else classifier[-1]
    z = (x - x.mean(0)) / x.std(0)
    logits = z @ model.coef_.T + model.intercept_
    top = logits.max(1, keepdims=True)
    log_total = np.log(np.exp(logits - top).sum(1)) + top[:, 0]
    cross_entropy = np.mean(log_total - logits[np.arange(len(y)), y])
    return float(cross_entropy + np.square(model.coef_).sum() / (2 * c * len(y)))


def test_batched_fits_are_the_fits_one_by_one():
    # Problems sharing the token matrix do not influence each other: two Cs together = each alone.
    x, labels = _overlapping(40, 16, 12, seed=3)
    x, y = x.reshape(-1, 12), labels.reshape(-1)
    rows = (y >= 0)[None].expand(2, -1)
    together = fit_logistic(x, y, rows, torch.tensor([0.01, 1.0]), 3)
    for j, c in enumerate((0.01, 1.0)):
        alone = fit_logistic(x, y, rows[:1], torch.tensor([c]), 3)
        torch.testing.assert_close(together.weight[j], alone.weight[0], atol=1e-4, rtol=1e-3)


def test_the_preconditioned_solver_reaches_the_plain_optimum_in_far_fewer_iterations(monkeypatch):
    """L-BFGS runs in variables preconditioned by the channels' correlation and the classes' softmax
    curvature (``logistic._preconditioner``): on correlated channels it stops on the same gradient
    tolerance, at the same optimum, in a fraction of plain L-BFGS's iterations. Mutants killed: the
    preconditioner the identity (as many iterations as the plain solver); its correlation eigenvalues
    all 1 (the channels' correlation ignored); its penalty term dropped."""
    from viny_probe.analysis import logistic

    x, labels = _overlapping(150, 24, 48, seed=0)
    x, y = x.reshape(-1, 48), labels.reshape(-1)
    rows, cs = (y >= 0)[None].expand(2, -1), torch.tensor([0.01, 1.0])
    fast = fit_logistic(x, y, rows, cs, 3)
    monkeypatch.setattr(logistic, "_preconditioner", lambda *args: lambda theta: theta)
    plain = fit_logistic(x, y, rows, cs, 3)
    assert bool(fast.converged.all() and plain.converged.all())
    assert int(fast.iterations.max()) * 3 <= int(plain.iterations.max())
    torch.testing.assert_close(fast.weight, plain.weight, atol=0.05 * float(plain.weight.abs().max()), rtol=0)


def test_bf16_tokens_are_fitted_in_float32():
    # bf16 storage rounds the tokens (that can move a close choice of C on hard data); what the solver
    # does with them is float32: the same result as the float32 copy of the rounded tokens.
    train_emb, train_labels = _overlapping(100, 16, 32, seed=0)
    test_emb, test_labels = _overlapping(50, 16, 32, seed=1)
    train_emb, test_emb = train_emb.bfloat16(), test_emb.bfloat16()
    half = linear_patch_probe(train_emb, train_labels, test_emb, test_labels, backend="torch")
    full = linear_patch_probe(train_emb.float(), train_labels, test_emb.float(), test_labels, backend="torch")
    assert half.chosen_C == full.chosen_C
    assert abs(half.test_accuracy - full.test_accuracy) <= 0.003


def test_the_refit_starts_from_the_chosen_cs_solution_and_reaches_the_same_optimum():
    """The sklearn refit on every pool image is warm-started from the chosen C's solution on the fitting
    images: it takes fewer lbfgs steps than a fit from zero of the same pipeline, and ends at the same
    optimum (coefficients and accuracy). Mutant killed: the refit built without the warm start (as
    many steps as the cold fit)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_emb, train_labels = _overlapping(150, 24, 48, seed=0)
    test_emb, test_labels = _overlapping(80, 24, 48, seed=1)
    fit = linear_patch_probe(train_emb, train_labels, test_emb, test_labels, num_classes=3, backend="sklearn")
    x = train_emb.reshape(-1, 48).numpy()
    y = train_labels.reshape(-1).numpy()
    x, y = x[y >= 0], y[y >= 0]  # labelled patches only, as the probe fits them
    cold = make_pipeline(StandardScaler(), LogisticRegression(C=fit.chosen_C, max_iter=1000)).fit(x, y)
    warm_steps, cold_steps = int(fit.classifier[-1].n_iter_[0]), int(cold[-1].n_iter_[0])
    assert warm_steps < cold_steps
    scale = np.abs(cold[-1].coef_).max()
    np.testing.assert_allclose(
        fit.classifier[-1].coef_, cold[-1].coef_, atol=1e-2 * scale
    )  # both stop on lbfgs tolerance
    assert fit.train_accuracy == pytest.approx(float(np.mean(cold.predict(x) == y)), abs=0.002)
