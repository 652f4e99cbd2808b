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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_HISTORY = 10  # L-BFGS memory (scipy's default)
_MAX_HALVINGS = 30  # Armijo backtracking steps before a problem is declared stalled
_ARMIJO = 1e-4
_STAT_ROWS = 1 << 13  # rows per chunk of the float64 mean / variance pass
_COLUMN_BLOCK = 16


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
    """Per-problem ``mean`` / ``scale`` ``(J, D)`` float32: ``z = (x - mean) / scale``."""

    mean: torch.Tensor
    scale: torch.Tensor


def standardiser(x: torch.Tensor, masks: torch.Tensor) -> Standardiser:
    """``(N, D)`` rows and ``(J, N)`` boolean row masks -> each mask's StandardScaler statistics. Sums of
    ``x - shift`` (the first row: no cancellation when a mean dwarfs its spread) and of its square are
    float64, over chunks of ``_STAT_ROWS`` rows, so no float64 copy of ``x`` exists; identical masks are
    summed once."""
    unique, which = torch.unique(masks, dim=0, return_inverse=True)
    w = unique.double()
    count = w.sum(1).clamp_min(1)[:, None]
    shift = x[0].double()
    first = torch.zeros(len(unique), x.shape[1], dtype=torch.float64, device=x.device)
    second = torch.zeros_like(first)
    for s in range(0, len(x), _STAT_ROWS):
        chunk = x[s : s + _STAT_ROWS].double() - shift
        first += w[:, s : s + _STAT_ROWS] @ chunk
        second += w[:, s : s + _STAT_ROWS] @ chunk.square_()
    mean = first / count
    scale = (second / count - mean.square()).clamp_min(0).sqrt()
    scale = torch.where(scale < 10 * torch.finfo(torch.float64).eps, torch.ones_like(scale), scale)
    return Standardiser((mean + shift).float()[which], scale.float()[which])


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

    def objective(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = theta[:, : d * k].view(j, d, k)
        b = theta[:, d * k :]
        a = w * inv_scale[:, :, None]  # (J, D, K): the model on raw rows
        c = b - torch.einsum("jd,jdk->jk", mean, a)
        a_pad[:, :cols] = a.permute(1, 0, 2).reshape(d, cols)
        logits = _mm(x, a_pad)[:, :cols].view(n, j, k) + c  # (N, J, K)
        # log-softmax by hand: torch's kernel over a last dimension of 3 was the slowest op of a call
        top = logits.amax(-1, keepdim=True)
        shifted = logits - top
        exp = shifted.exp()
        total = exp.sum(-1, keepdim=True)
        prob = exp / total
        logp_true = (shifted.gather(-1, y_index[:, None, None].expand(n, j, 1)) - total.log()).squeeze(-1)
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
    if init is not None:
        theta[:, : d * k] = init[0].reshape(j, d * k)
        theta[:, d * k :] = init[1]
    result = _lbfgs(objective, theta, max_iter, tol)
    theta, iterations, converged = result
    return LogisticFit(theta[:, : d * k].view(j, d, k), theta[:, d * k :], scaler, iterations, converged)


def _lbfgs(objective, theta: torch.Tensor, max_iter: int, tol: float):
    """L-BFGS on a batch of independent problems ``theta`` ``(J, P)``; ``objective`` returns the ``(J,)``
    losses and ``(J, P)`` gradients of all of them from one evaluation. A finished problem's direction
    is zero, so it stays put while the others go on."""
    j, p = theta.shape
    dev = theta.device
    loss, grad = objective(theta)
    s_hist = torch.zeros(_HISTORY, j, p, device=dev)
    y_hist = torch.zeros(_HISTORY, j, p, device=dev)
    rho = torch.zeros(_HISTORY, j, device=dev)  # 0 = an empty slot: it leaves the two loops unchanged
    gamma = torch.ones(j, device=dev)
    iterations = torch.zeros(j, dtype=torch.long, device=dev)
    active = grad.abs().amax(1) > tol
    stalled = torch.zeros(j, dtype=torch.bool, device=dev)
    slot = 0
    for it in range(max_iter):
        if not bool(active.any()):
            break
        q = grad.clone()
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
        slope = (grad * direction).sum(1)
        bad = slope >= 0  # not a descent direction (should not happen): restart from steepest descent
        if bool(bad.any()):
            direction[bad], slope[bad] = -grad[bad], -(grad[bad].square().sum(1))
            rho[:, bad] = 0
        direction[~active] = 0
        step = torch.ones(j, device=dev)
        if it == 0:  # no curvature known yet: a first step of unit length (as scipy's lbfgsb)
            step = (1.0 / grad.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        pending = active.clone()
        new_theta, new_loss, new_grad = theta.clone(), loss.clone(), grad.clone()
        for _ in range(_MAX_HALVINGS):
            trial = theta + step[:, None] * direction
            t_loss, t_grad = objective(trial)
            ok = pending & (t_loss <= loss + _ARMIJO * step * slope)
            new_theta[ok], new_loss[ok], new_grad[ok] = trial[ok], t_loss[ok], t_grad[ok]
            pending &= ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        stalled |= pending  # no decrease found at any step: float32 precision is reached
        moved = active & ~pending
        s, yv = new_theta - theta, new_grad - grad
        sy = (s * yv).sum(1)
        keep = moved & (sy > 1e-10 * s.norm(dim=1) * yv.norm(dim=1))
        s_hist[slot], y_hist[slot] = s, yv
        rho[slot] = torch.where(keep, 1.0 / sy.where(keep, torch.ones_like(sy)), 0.0)  # else: slot emptied
        gamma = torch.where(keep, sy / yv.square().sum(1).clamp_min(1e-30), gamma)
        slot = (slot + 1) % _HISTORY
        theta, loss, grad = new_theta, new_loss, new_grad
        iterations += active.long()
        active = active & ~pending & (grad.abs().amax(1) > tol)
    converged = grad.abs().amax(1) <= tol
    return theta, iterations, converged
