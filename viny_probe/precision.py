"""Whether bf16 runs natively on this CPU. Without AVX512_BF16 or AMX, torch emulates bf16 matrix
products, tens of times slower than fp32 (docs/performance.md): a bf16 run or benchmark there costs
hours and gains nothing. Read from the CPU flags where Linux lists them, else measured."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
SLOWDOWN_NATIVE = 2.0  # a measured bf16 / fp32 time above this counts as emulated


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str] | None:
    """The CPU's feature flags, or None where the system does not list them."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


@functools.lru_cache(maxsize=1)
def bf16_slowdown(n: int = 512, repeats: int = 3) -> float:
    """bf16 time / fp32 time of an n x n matrix product on this CPU (best of ``repeats``)."""
    a = torch.randn(n, n)
    times = {}
    for dtype in (torch.float32, torch.bfloat16):
        x = a.to(dtype)
        x @ x  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            x @ x
            best = min(best, time.perf_counter() - t0)
        times[dtype] = best
    return times[torch.bfloat16] / max(times[torch.float32], 1e-9)


def cpu_bf16_native() -> tuple[bool, str]:
    """(native, how it was decided): the CPU flags, else a short measurement."""
    flags = cpu_flags()
    if flags is not None:
        found = [f for f in BF16_FLAGS if f in flags]
        return bool(found), f"CPU flags: {', '.join(found) or 'no ' + ' / '.join(BF16_FLAGS)}"
    factor = bf16_slowdown()
    return factor <= SLOWDOWN_NATIVE, f"measured: a bf16 matrix product took {factor:.1f}x the fp32 time"


def resolve_precision(name: str, device: torch.device) -> str:
    """The precision a run trains in: "fp32" and "bf16" as given; "auto" is bf16 where ``device`` runs
    it natively (a CPU with AVX512_BF16 or AMX, a CUDA GPU with bf16) and fp32 elsewhere. The mini
    study agreed in every cell within its seed spread in both (docs/performance.md), so the commands
    default to "auto"; the library's TrainConfig keeps fp32, which every machine runs the same way."""
    if name != "auto":
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if cpu_bf16_native()[0] else "fp32"
    return "fp32"


def emulated_bf16_note(device: torch.device, precision: str) -> str | None:
    """The warning for ``--precision bf16`` on a CPU that would emulate it (None when it is fine),
    with the slowdown measured here."""
    if device.type != "cpu" or precision != "bf16":
        return None
    native, how = cpu_bf16_native()
    if native:
        return None
    return (
        f"--precision bf16 on this CPU is emulated ({how}; a bf16 matrix product here takes "
        f"{bf16_slowdown():.0f}x the fp32 time): use --precision fp32"
    )
