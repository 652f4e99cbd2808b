"""Multinomial logistic regression in torch, many problems over one token matrix at once (the probe's solver).

The objective of problem ``j`` is scikit-learn's (``LogisticRegression(C, solver="lbfgs")`` after a
``StandardScaler``), scaled by ``1 / n_j`` as sklearn's lbfgs path scales it::

    f_j(W, b) = (1 / n_j) * sum_{i in rows_j} CE(softmax(z_ij W + b), y_i) + ||W||^2 / (2 C_j n_j)

with ``z_ij = (x_i - mean_j) / scale_j`` standardised by the statistics of problem j's own rows (population
std; a constant channel has scale 1, as StandardScaler), ``W`` ``(D, K)`` over all K classes (the
over-parametrised multinomial form sklearn fits) and the intercept ``b`` unpenalised. Each problem
stops when the largest absolute entry of its gradient is at most ``tol`` (sklearn's ``gtol``, 1e-4) or at
``max_iter`` L-BFGS iterations; its line search is Armijo backtracking from a unit step.

Why all problems at once: on a CPU the cost of an iteration is reading ``x`` (here 40k-130k tokens x
384 channels) twice, for the logits and for the gradient; the logits of every problem come from one
``x @ A`` with ``A`` ``(D, J * K)``, so five values of C cost about what one does. The standardisation is
folded into ``A`` and a bias, never applied to a copy of ``x``: ``x`` is read in place, on its own device
and in its own dtype (bf16/fp16 tokens are upcast per chunk; the sums stay float32).

Why a preconditioner: a pass over ``x`` costs the same whatever the solver, so the time is the number
of passes. Token channels are strongly correlated (ViT-S/16: correlation eigenvalues from ~0 to ~108),
which made plain L-BFGS take 80-280 iterations per C. The L-BFGS here runs in variables scaled by
the inverse square root of a Kronecker approximation of the Hessian (the classes' softmax curvature
at the start x the channels' correlation, + the penalty; ``_preconditioner``): 7-15 iterations per C
on the same tokens, to the same stopping rule, which is read on the gradient in the original variables.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_HISTORY = 10  # L-BFGS memory (scipy's default)
_MAX_HALVINGS = 30  # Armijo backtracking steps before a problem is declared stalled
_ARMIJO = 1e-4
_STAT_ROWS = 1 << 13  # rows per chunk of the float64 mean / variance pass
_GRAM_ROWS = 1 << 14  # rows (at least) the preconditioner's covariance is estimated from
_COLUMN_BLOCK = 16
_HESSIAN_FLOOR = 1e-6  # smallest curvature the preconditioner assumes, relative to the largest


_UPCAST_ROWS = 1 << 14  # bf16/fp16 token rows upcast to float32 at once


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in float32 where one side is the tokens, in whatever dtype they are stored: bf16/fp16
    tokens are upcast ``_UPCAST_ROWS`` at a time (the weights and residuals stay float32, so the gradient
    keeps the precision the stopping rule needs)."""
    if a.dtype == b.dtype == torch.float32:
        return a @ b
    if a.dtype != torch.float32:  # a: (N, D) tokens
        return torch.cat([a[s : s + _UPCAST_ROWS].float() @ b for s in range(0, len(a), _UPCAST_ROWS)])
    out = torch.zeros(a.shape[0], b.shape[1], device=a.device)  # b: (N, D) tokens, a: (Q, N)
    for s in range(0, b.shape[0], _UPCAST_ROWS):
        out += a[:, s : s + _UPCAST_ROWS] @ b[s : s + _UPCAST_ROWS].float()
    return out


@dataclass
class Standardiser:
    """Per-problem ``mean`` / ``scale`` ``(J, D)`` float32: ``z = (x - mean) / scale``; and the
    eigendecomposition of the covariance of ``z`` over the problem's rows (its correlation matrix):
    ``eigvals`` ``(J, D)`` and ``eigvecs`` ``(J, D, D)`` (columns), the solver's preconditioner."""

    mean: torch.Tensor
    scale: torch.Tensor
    eigvals: torch.Tensor
    eigvecs: torch.Tensor

    def __getitem__(self, problems) -> Standardiser:
        """The statistics of the problems ``problems`` (an index or a list of them), in that order."""
        return Standardiser(*(t[problems] for t in (self.mean, self.scale, self.eigvals, self.eigvecs)))


def standardiser(x: torch.Tensor, masks: torch.Tensor) -> Standardiser:
    """``(N, D)`` rows and ``(J, N)`` boolean row masks -> each mask's StandardScaler statistics and the
    eigendecomposition of its standardised rows' covariance. Sums of ``x - shift`` (the first row: no
    cancellation when a mean dwarfs its spread) and of its square are float64, over chunks of
    ``_STAT_ROWS`` rows, so no float64 copy of ``x`` exists; identical masks are summed once. The
    covariance is a preconditioner's: from every ``N // _GRAM_ROWS``-th row, summed in float32 chunks."""
    unique, which = torch.unique(masks, dim=0, return_inverse=True)
    w = unique.double()
    count = w.sum(1).clamp_min(1)[:, None]
    shift = x[0].double()
    d = x.shape[1]
    first = torch.zeros(len(unique), d, dtype=torch.float64, device=x.device)
    second = torch.zeros_like(first)
    for s in range(0, len(x), _STAT_ROWS):
        chunk = x[s : s + _STAT_ROWS].double() - shift
        first += w[:, s : s + _STAT_ROWS] @ chunk
        second += w[:, s : s + _STAT_ROWS] @ chunk.square_()
    mean = first / count
    scale = (second / count - mean.square()).clamp_min(0).sqrt()
    scale = torch.where(scale < 10 * torch.finfo(torch.float64).eps, torch.ones_like(scale), scale)

    step = max(1, len(x) // _GRAM_ROWS)
    sample, sample_w = x[::step], w[:, ::step]
    sample_first = torch.zeros_like(first)
    gram = torch.zeros(len(unique), d, d, dtype=torch.float64, device=x.device)
    for s in range(0, len(sample), _STAT_ROWS):
        chunk = sample[s : s + _STAT_ROWS].float() - shift.float()
        rows = sample_w[:, s : s + _STAT_ROWS].float()
        sample_first += (rows @ chunk).double()
        for u in range(len(unique)):
            gram[u] += (chunk.T @ (chunk * rows[u, :, None])).double()
    sample_count = sample_w.sum(1).clamp_min(1)[:, None, None]
    sample_mean = sample_first[:, :, None] / sample_count
    covariance = gram / sample_count - sample_mean * sample_mean.transpose(1, 2)
    eigvals, eigvecs = torch.linalg.eigh(covariance / (scale[:, :, None] * scale[:, None, :]))
    return Standardiser(
        (mean + shift).float()[which],
        scale.float()[which],
        eigvals.clamp_min(0).float()[which],
        eigvecs.float()[which],
    )


@dataclass
class LogisticFit:
    """``weight`` ``(J, D, K)`` and ``bias`` ``(J, K)`` in the standardised space of each problem;
    ``iterations`` ``(J,)`` L-BFGS iterations; ``converged`` ``(J,)`` gradient below ``tol``."""

    weight: torch.Tensor
    bias: torch.Tensor
    scaler: Standardiser
    iterations: torch.Tensor
    converged: torch.Tensor

    def raw(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The same models on unstandardised rows: ``x @ A[j] + c[j]``, ``A`` ``(J, D, K)``, ``c`` ``(J, K)``."""
        a = self.weight / self.scaler.scale[:, :, None]
        c = self.bias - torch.einsum("jd,jdk->jk", self.scaler.mean, a)
        return a, c

    def predict(self, x: torch.Tensor, rows: int = 1 << 16) -> torch.Tensor:
        """``(N, D)`` raw rows -> ``(J, N)`` predicted classes (first maximum on a tie)."""
        a, c = self.raw()
        j, d, k = a.shape
        flat = a.permute(1, 0, 2).reshape(d, j * k)
        out = []
        for s in range(0, len(x), rows):
            logits = x[s : s + rows].float() @ flat + c.reshape(-1)
            out.append(logits.view(-1, j, k).argmax(-1).T)
        return torch.cat(out, 1)


def fit_logistic(
    x: torch.Tensor,
    y: torch.Tensor,
    masks: torch.Tensor,
    Cs: torch.Tensor,
    num_classes: int,
    max_iter: int = 1000,
    tol: float = 1e-4,
    scaler: Standardiser | None = None,
    init: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> LogisticFit:
    """Fit J standardised multinomial logistic regressions (the objective in the module docstring).

    x: ``(N, D)`` rows, any float dtype, on any device; y: ``(N,)`` classes in ``0..num_classes - 1``
    (any value where no mask holds the row); masks: ``(J, N)`` bool, the rows of each problem;
    Cs: ``(J,)`` inverse regularisation strengths; scaler: the problems' statistics (default: those of
    their rows); init: ``(weight (J, D, K), bias (J, K))`` to start from (default zeros).
    """
    device = x.device
    j, n = masks.shape
    d, k = x.shape[1], num_classes
    scaler = scaler or standardiser(x, masks)
    counts = masks.sum(1).clamp_min(1).float()
    row_weight = masks.T.float() / counts  # (N, J): 1 / n_j on problem j's rows, 0 elsewhere
    one_hot = torch.nn.functional.one_hot(torch.where(masks.any(0), y, 0).long(), k).float()
    penalty = 1.0 / (Cs.to(device).float() * counts)  # (J,): ||W||^2 * penalty / 2
    inv_scale, mean = 1.0 / scaler.scale, scaler.mean

    cols = j * k
    padded = (
        -(-cols // _COLUMN_BLOCK) * _COLUMN_BLOCK
    )  # MKL's skinny GEMMs: 16 columns ran 2-3x faster than 15
    a_pad = torch.zeros(d, padded, device=device)
    y_index = torch.where(masks.any(0), y, 0).long()

    def softmax(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``theta`` -> the softmax ``(N, J, K)`` of every row under every problem, the logits minus
        their row maximum and the log of the softmax's denominator (one read of ``x``)."""
        w = theta[:, : d * k].view(j, d, k)
        a = w * inv_scale[:, :, None]  # (J, D, K): the model on raw rows
        c = theta[:, d * k :] - torch.einsum("jd,jdk->jk", mean, a)
        a_pad[:, :cols] = a.permute(1, 0, 2).reshape(d, cols)
        logits = _mm(x, a_pad)[:, :cols].view(n, j, k) + c  # (N, J, K)
        # log-softmax by hand: torch's kernel over a last dimension of 3 was the slowest op of a call
        shifted = logits - logits.amax(-1, keepdim=True)
        exp = shifted.exp()
        total = exp.sum(-1, keepdim=True)
        return exp / total, shifted, total.log()

    def objective(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = theta[:, : d * k].view(j, d, k)
        prob, shifted, log_total = softmax(theta)
        logp_true = (shifted.gather(-1, y_index[:, None, None].expand(n, j, 1)) - log_total).squeeze(-1)
        loss = -(row_weight * logp_true).sum(0)
        residual = torch.zeros(n, padded, device=device)
        prob = prob - one_hot[:, None, :]
        residual[:, :cols] = (prob * row_weight[:, :, None]).view(n, cols)
        g_raw = _mm(residual.T, x)[:cols].view(j, k, d).transpose(1, 2)  # d/dA (J, D, K)
        g_c = residual[:, :cols].sum(0).view(j, k)  # d/dc = d/db
        g_w = (g_raw - mean[:, :, None] * g_c[:, None, :]) * inv_scale[:, :, None]
        loss = loss + 0.5 * penalty * w.square().sum((1, 2))
        g_w = g_w + penalty[:, None, None] * w
        return loss, torch.cat([g_w.reshape(j, d * k), g_c], 1)

    theta = torch.zeros(j, (d + 1) * k, device=device)
    if init is None:  # every row's softmax is uniform: no read of x needed for the curvature
        curvature = (torch.eye(k, device=device) - 1.0 / k).expand(j, k, k) / k
    else:
        theta[:, : d * k] = init[0].reshape(j, d * k)
        theta[:, d * k :] = init[1]
        prob = softmax(theta)[0]  # (N, J, K)
        weighted = prob * row_weight[:, :, None]  # each problem's rows weighted 1 / n_j
        curvature = torch.diag_embed(weighted.sum(0)) - torch.einsum("njk,njl->jkl", weighted, prob)
    precondition = _preconditioner(scaler, curvature, penalty)
    theta, iterations, converged = _lbfgs(objective, theta, max_iter, tol, precondition)
    return LogisticFit(theta[:, : d * k].view(j, d, k), theta[:, d * k :], scaler, iterations, converged)


def _preconditioner(scaler: Standardiser, curvature: torch.Tensor, penalty: torch.Tensor):
    """The change of variables the L-BFGS runs in: ``theta = M v`` with ``M`` the inverse square root of
    a Kronecker approximation of the objective's Hessian in ``W`` (``(D, K)``, standardised space),
    ``curvature (x) correlation + penalty * I``, and of ``curvature`` for the intercept. ``curvature``
    ``(J, K, K)``: the mean over a problem's rows of ``diag(p) - p p^T`` at the start; the correlation:
    ``scaler.eigvals`` / ``eigvecs``. Why: the tokens' channels are strongly correlated (ViT-S/16 tokens:
    correlation eigenvalues from ~0 to ~100), which made plain L-BFGS take 80-280 iterations per C; in
    these variables it takes about 10 (docs/performance.md). ``M`` is symmetric and costs two ``(D, D)``
    products per problem: nothing against a read of the tokens. Returns ``theta (J, P) -> M theta``."""
    beta, q = torch.linalg.eigh(curvature.double())  # class space: (J, K), (J, K, K)
    beta, q = beta.clamp_min(0).float(), q.float()
    u, qt, ut = scaler.eigvecs, q.transpose(1, 2), scaler.eigvecs.transpose(1, 2)
    j, d, k = u.shape[0], u.shape[1], q.shape[1]
    hessian = beta[:, None, :] * scaler.eigvals[:, :, None] + penalty[:, None, None]  # (J, D, K)
    # the floors keep a direction the rows do not span (a constant channel, the classes' common shift)
    # from a step of 1 / 0; such a direction carries at most penalty * W, below any tolerance
    weight_scale = hessian.clamp_min(_HESSIAN_FLOOR * hessian.amax((1, 2), keepdim=True)).rsqrt()
    bias_scale = beta.clamp_min(_HESSIAN_FLOOR * beta.amax(1, keepdim=True).clamp_min(1e-12)).rsqrt()

    def apply(theta: torch.Tensor) -> torch.Tensor:
        w = theta[:, : d * k].view(j, d, k)
        w = u @ (((ut @ w @ q) * weight_scale) @ qt)
        b = q @ ((qt @ theta[:, d * k :, None]) * bias_scale[:, :, None])
        return torch.cat([w.reshape(j, d * k), b.squeeze(-1)], 1)

    return apply


def _lbfgs(objective, theta: torch.Tensor, max_iter: int, tol: float, precondition):
    """L-BFGS on a batch of independent problems ``theta`` ``(J, P)``; ``objective`` returns the ``(J,)``
    losses and ``(J, P)`` gradients of all of them from one evaluation. The iteration runs in the
    variables ``v`` with ``theta = precondition(v)`` (a symmetric linear map): its gradient there is
    ``precondition(grad)``; the stopping rule reads the gradient in ``theta``. A finished problem's
    direction is zero, so it stays put while the others go on."""
    j, p = theta.shape
    dev = theta.device
    loss, grad = objective(theta)
    grad_v = precondition(grad)
    s_hist = torch.zeros(_HISTORY, j, p, device=dev)
    y_hist = torch.zeros(_HISTORY, j, p, device=dev)
    rho = torch.zeros(_HISTORY, j, device=dev)  # 0 = an empty slot: it leaves the two loops unchanged
    gamma = torch.ones(j, device=dev)
    iterations = torch.zeros(j, dtype=torch.long, device=dev)
    active = grad.abs().amax(1) > tol
    stalled = torch.zeros(j, dtype=torch.bool, device=dev)
    slot = 0
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        q = grad_v.clone()
        alphas = []
        for back in range(_HISTORY):
            i = (slot - 1 - back) % _HISTORY
            alpha = rho[i] * (s_hist[i] * q).sum(1)
            q -= alpha[:, None] * y_hist[i]
            alphas.append((i, alpha))
        r = gamma[:, None] * q
        for i, alpha in reversed(alphas):
            beta = rho[i] * (y_hist[i] * r).sum(1)
            r += (alpha - beta)[:, None] * s_hist[i]
        direction = -r
        slope = (grad_v * direction).sum(1)
        bad = slope >= 0  # not a descent direction (should not happen): restart from steepest descent
        if bool(bad.any()):
            direction[bad], slope[bad] = -grad_v[bad], -(grad_v[bad].square().sum(1))
            rho[:, bad] = 0
        direction[~active] = 0
        move = precondition(direction)  # the direction in theta
        # the first step is a unit one: in the preconditioned variables that is about a Newton step
        step = torch.ones(j, device=dev)
        pending = active.clone()
        new_theta, new_loss, new_grad = theta.clone(), loss.clone(), grad.clone()
        for _ in range(_MAX_HALVINGS):
            trial = theta + step[:, None] * move
            t_loss, t_grad = objective(trial)
            ok = pending & (t_loss <= loss + _ARMIJO * step * slope)
            new_theta[ok], new_loss[ok], new_grad[ok] = trial[ok], t_loss[ok], t_grad[ok]
            pending &= ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        stalled |= pending  # no decrease found at any step: float32 precision is reached
        moved = active & ~pending
        new_grad_v = precondition(new_grad)
        s, yv = step[:, None] * direction * moved[:, None], new_grad_v - grad_v
        sy = (s * yv).sum(1)
        keep = moved & (sy > 1e-10 * s.norm(dim=1) * yv.norm(dim=1))
        s_hist[slot], y_hist[slot] = s, yv
        rho[slot] = torch.where(keep, 1.0 / sy.where(keep, torch.ones_like(sy)), 0.0)  # else: slot emptied
        gamma = torch.where(keep, sy / yv.square().sum(1).clamp_min(1e-30), gamma)
        slot = (slot + 1) % _HISTORY
        theta, loss, grad, grad_v = new_theta, new_loss, new_grad, new_grad_v
        iterations += active.long()
        active = active & ~pending & (grad.abs().amax(1) > tol)
    converged = grad.abs().amax(1) <= tol
    return theta, iterations, converged
