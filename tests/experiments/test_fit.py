"""The saturating fit a + b n^-c recovers known parameters; gains per doubling are right."""

from __future__ import annotations

import numpy as np
import pytest

from viny_probe.experiments.fit import fit_saturating, observed_gain_per_doubling


@pytest.mark.parametrize("a, b, c", [(72.0, -420.0, 0.6), (65.0, -150.0, 0.4), (80.0, -2000.0, 0.9)])
def test_recovers_known_parameters(a, b, c):
    rng = np.random.default_rng(1)
    n = np.repeat([250, 500, 1000, 2000, 4000, 6000], 3)
    y = a + b * n ** (-c) + rng.normal(0, 0.05, len(n))
    f = fit_saturating(n, y, upper=100)
    assert f.a == pytest.approx(a, abs=1.0)
    assert f.c == pytest.approx(c, rel=0.1)
    assert f.b == pytest.approx(b, rel=0.3)
    assert f.a_se > 0 and f.c_se > 0 and f.dof == len(n) - 3
    assert abs(f.a - a) < 4 * f.a_se + 0.1  # the standard errors are of the right size


def test_exact_curve_and_gain_per_doubling():
    n = np.array([100, 200, 400, 800, 1600], float)
    f = fit_saturating(n, 50 - 100 * n**-0.5)
    assert f.a == pytest.approx(50, abs=1e-3) and f.c == pytest.approx(0.5, abs=1e-3)
    expected = (50 - 100 * (2 * n) ** -0.5) - (50 - 100 * n**-0.5)
    np.testing.assert_allclose(f.gain_per_doubling(n), expected, rtol=1e-3)
    assert np.all(np.diff(f.gain_per_doubling(n)) < 0)  # diminishing returns


def test_too_few_sizes_and_bounds():
    assert fit_saturating([250, 250, 500, 500], [40, 41, 45, 46]) is None
    f = fit_saturating([250, 500, 1000, 2000], [10, 30, 50, 70], upper=100)  # straight line in log n
    assert f.notes  # the fit says its asymptote or exponent is not determined
    assert observed_gain_per_doubling([250, 500, 2000], [40, 44, 50]) == [4.0, 3.0]
