"""This machine's matrix-multiply peak, measured: the denominator of the benchmark's "% of peak"."""

from __future__ import annotations

import torch

from .timing import time_median

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def default_sizes(device: torch.device) -> tuple[int, ...]:
    """Square sizes large enough to reach the device's peak, small enough to time in a second or so."""
    return (4096, 8192) if device.type == "cuda" else (512, 1024, 2048)


def products_per_call(device: torch.device) -> int:
    """Square products per timed call: one GPU product is too short to time alone."""
    return 10 if device.type == "cuda" else 1


def peak_measures(
    device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...], shape: tuple[int, int, int]
) -> dict:
    """Timed closures: ``("peak", n)`` runs n x n products, ``("shaped",)`` the (m, k) x (k, n)
    ``shape`` (the model's largest product) five times as often; see ``products_per_call``."""
    reps = products_per_call(device)
    out = {}
    for n in sizes:
        a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
        out[("peak", n)] = lambda a=a, b=b: [a @ b for _ in range(reps)]
    m, k, n = shape
    a, b = torch.randn(m, k, device=device).to(dtype), torch.randn(k, n, device=device).to(dtype)
    out[("shaped",)] = lambda: [a @ b for _ in range(5 * reps)]
    return out


def peak_figures(
    seconds: dict,
    device: torch.device,
    dtype: torch.dtype,
    sizes: tuple[int, ...],
    shape: tuple[int, int, int],
) -> dict:
    """FLOP/s from the median ``seconds`` of each of ``peak_measures``' closures: the best square size
    as the peak, each size's figure, and the model-shaped product's for context."""
    reps = products_per_call(device)
    per_size = {str(n): 2 * n**3 * reps / seconds[("peak", n)] for n in sizes}
    best = max(per_size, key=per_size.get)
    m, k, n = shape
    return {
        "dtype": str(dtype).replace("torch.", ""),
        "peak_flops": per_size[best],
        "best_size": int(best),
        "per_size": per_size,
        "model_shaped": {
            "shape": f"({m}, {k}) x ({k}, {n})",
            "flops": 2 * m * k * n * 5 * reps / seconds[("shaped",)],
        },
    }


def matmul_peak(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    sizes: tuple[int, ...] | None = None,
    model_shape: tuple[int, int, int] = (64 * 64, 128, 1536),
    repeats: int = 3,
) -> dict:
    """Measured matmul FLOP/s on its own (``viny bench`` interleaves the same closures with its other
    figures): square products for a few sizes, the best taken as the peak, and one product shaped
    like the model's largest, (tokens x dim) x (dim x 3 * inner), for context."""
    device = torch.device(device)
    sizes = sizes or default_sizes(device)
    measures = peak_measures(device, dtype, sizes, model_shape)
    seconds = {k: time_median(fn, device, 1, repeats) for k, fn in measures.items()}
    return peak_figures(seconds, device, dtype, sizes, model_shape)
