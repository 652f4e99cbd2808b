"""Wall-clock timing for the benchmark: interleaved rounds, medians, CUDA synchronised at every read."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for queued device work, so the clock reads the work and not only its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_median(fn: Callable[[], object], device: torch.device, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs (seconds)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timed_rounds(
    measures: dict,
    device: torch.device,
    warmup: int,
    repeats: int,
    log: Callable[[str], None],
    failures: dict | None = None,
) -> dict:
    """Every closure of ``measures`` timed once per round, all in turn, for ``warmup`` untimed and then
    ``repeats`` timed rounds: on a shared machine the load then falls on every figure alike. Returns
    each key's timed seconds. With ``failures``, a closure that raises is recorded there (key -> the
    error, one line) and left out of later rounds; without it, the error propagates."""
    times: dict = {k: [] for k in measures}
    for i in range(warmup + repeats):
        log(f"round {i + 1}/{warmup + repeats}" + (" (warm-up)" if i < warmup else ""))
        for key, fn in measures.items():
            if failures is not None and key in failures:
                continue
            sync(device)
            t0 = time.perf_counter()
            try:
                fn()
                sync(device)
            except Exception as err:
                if failures is None:
                    raise
                first = next((line for line in str(err).splitlines() if line.strip()), "")
                failures[key] = f"failed: {type(err).__name__}: {first[:200]}"
                continue
            if i >= warmup:
                times[key].append(time.perf_counter() - t0)
    return times
