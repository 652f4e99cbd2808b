"""The diminishing-returns analysis the study describes only in words: a saturating fit

    y(n) = a + b * n**(-c)          (c > 0; b < 0 for a curve rising towards its asymptote a)

of a score y (e.g. mIoU in %) against fine-tune size n, with parameter standard errors, and the
marginal gain per doubling of n, f(2n) - f(n) = b * n**(-c) * (2**(-c) - 1), at each measured size.

Internally the curve is fitted as a + g * (n / n0)**(-c) with n0 the smallest size (g = the gap to the
asymptote at n0), which keeps the parameters on similar scales; b = g * n0**c and its standard error
comes from the delta method.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

C_BOUNDS = (1e-3, 4.0)


@dataclass
class SaturatingFit:
    a: float
    b: float
    c: float
    a_se: float
    b_se: float
    c_se: float
    n_points: int
    n_sizes: int
    rmse: float
    dof: int
    notes: list[str] = field(default_factory=list)

    def predict(self, n) -> np.ndarray:
        n = np.asarray(n, dtype=float)
        return self.a + self.b * n ** (-self.c)

    def gain_per_doubling(self, n) -> np.ndarray:
        """f(2n) - f(n): what doubling the fine-tune data adds at size n, by the fitted curve."""
        n = np.asarray(n, dtype=float)
        return self.b * n ** (-self.c) * (2.0 ** (-self.c) - 1.0)

    def to_dict(self) -> dict:
        return {
            k: getattr(self, k)
            for k in ("a", "b", "c", "a_se", "b_se", "c_se", "n_points", "n_sizes", "rmse", "dof", "notes")
        }


def _model(n, a, g, c, n0):
    return a + g * (n / n0) ** (-c)


def fit_saturating(n, y, upper: float | None = None) -> SaturatingFit | None:
    """Least-squares fit of y = a + b n^-c to the points (n_i, y_i) (repeated n allowed: one point per
    seed). ``upper``: bound on the asymptote a (100 for a percentage). Returns None with fewer than 3
    distinct sizes (3 parameters)."""
    n = np.asarray(n, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(n) & np.isfinite(y) & (n > 0)
    n, y = n[ok], y[ok]
    sizes = np.unique(n)
    if len(sizes) < 3:
        return None
    n0 = float(sizes.min())
    means = np.array([y[n == s].mean() for s in sizes])
    span = float(np.ptp(means)) or max(abs(float(means.mean())), 1.0) * 0.01
    rising = means[-1] >= means[0]
    a0 = float(means.max() + 0.25 * span) if rising else float(means.min() - 0.25 * span)
    g0 = float(means[0] - a0)
    lo_a, hi_a = -np.inf, (upper if upper is not None else np.inf)
    if upper is not None and a0 >= upper:
        a0 = upper - 1e-6 * max(abs(upper), 1.0)
    p0 = [a0, g0, 0.5]
    bounds = ([lo_a, -np.inf, C_BOUNDS[0]], [hi_a, np.inf, C_BOUNDS[1]])
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            popt, pcov = curve_fit(
                lambda x, a, g, c: _model(x, a, g, c, n0), n, y, p0=p0, bounds=bounds, maxfev=20000
            )
        except (RuntimeError, ValueError) as e:
            notes.append(f"fit did not converge: {e}")
            return SaturatingFit(*(math.nan,) * 6, len(n), len(sizes), math.nan, len(n) - 3, notes)
    a, g, c = (float(v) for v in popt)
    resid = y - _model(n, a, g, c, n0)
    dof = len(n) - 3
    rmse = float(np.sqrt(np.mean(resid**2)))
    if dof <= 0:
        notes.append("exactly determined (as many points as parameters): no standard errors")
        pcov = np.full((3, 3), np.nan)
    elif not np.all(np.isfinite(pcov)):
        notes.append("parameters not identifiable from these points (infinite covariance)")
    b = g * n0**c
    # delta method for b = g * n0^c: db/dg = n0^c, db/dc = g * n0^c * ln n0
    jac = np.array([0.0, n0**c, g * n0**c * math.log(n0)])
    b_var = float(jac @ pcov @ jac) if np.all(np.isfinite(pcov)) else math.nan
    se = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.all(np.isfinite(pcov)) else np.full(3, math.nan)
    if upper is not None and a >= upper - 1e-6 * max(abs(upper), 1.0):
        notes.append(f"asymptote a at its bound {upper:g}: no saturation visible in the measured range")
    if c <= C_BOUNDS[0] * 1.01:
        notes.append(
            "exponent c at its lower bound: the points look logarithmic, the asymptote is not determined"
        )
    if c >= C_BOUNDS[1] * 0.99:
        notes.append("exponent c at its upper bound: the curve is already flat over the measured range")
    if len(sizes) == 3:
        notes.append(
            "only 3 distinct sizes for 3 parameters: the fit is (nearly) determined by the size means"
        )
    return SaturatingFit(
        a,
        float(b),
        c,
        float(se[0]),
        math.sqrt(b_var) if b_var >= 0 else math.nan,
        float(se[2]),
        len(n),
        len(sizes),
        rmse,
        dof,
        notes,
    )


def observed_gain_per_doubling(sizes, means) -> list[float]:
    """Measured gain per doubling between consecutive sizes: (y_{i+1} - y_i) / log2(n_{i+1} / n_i)."""
    out = []
    for (n1, y1), (n2, y2) in zip(
        zip(sizes, means, strict=True), list(zip(sizes, means, strict=True))[1:], strict=False
    ):
        out.append((y2 - y1) / math.log2(n2 / n1))
    return out
