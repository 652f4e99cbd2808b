"""Fleets on a GPU, in one call of a few minutes: what issue #14 asks to measure.

    PYTHONPATH=. python3 benchmarks/fleet_gpu.py OUT_DIR [BUDGET_S]

1. The device, and whether torch.func.vmap has a batching rule for the fused attention there.
2. `viny bench --fleet` figures (``perf.fleet.run_fleet_bench``): aggregate training img/s and % of the
   measured bf16 peak, for every regime at K = 1, 3, 8, 21, 32, 64 (3 and 21 are the `paper` plan's
   own fleet sizes: 3 seeds of one pre-training size, 21 fine-tunes of one train size), then a few
   variants (written-out attention, fp32, torch.compile).
3. One real `viny sweep mini --fleet auto` end to end on the GPU, timed, its results.csv kept.
4. The `paper` plan's projected time at those rates, grouped as `viny sweep --fleet` groups it.

Every part adds its JSON to OUT_DIR/results.json as soon as it ends, and each later part is skipped once the
budget (seconds, default 420) would be overrun, so a cut-short call still returns what it measured.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

T0 = time.time()
OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "fleet-gpu-out")
BUDGET = float(sys.argv[2]) if len(sys.argv) > 2 else 420.0
OUT.mkdir(parents=True, exist_ok=True)
LOG = []


def log(msg: str) -> None:
    line = f"[{time.time() - T0:6.1f}s] {msg}"
    print(line, flush=True)
    LOG.append(line)
    (OUT / "log.txt").write_text("\n".join(LOG) + "\n")


RESULTS: dict = {}


def save(name: str, obj) -> None:
    """Into OUT/results.json, rewritten whole after every part (a device call returns only 8 files)."""
    RESULTS[name] = obj
    (OUT / "results.json").write_text(json.dumps(RESULTS, indent=1, default=str))


def left() -> float:
    return BUDGET - (time.time() - T0)


def part(name: str, needs_s: float):
    """Run the decorated part now if ``needs_s`` seconds are left, recording any failure."""

    def run(fn):
        if left() < needs_s:
            log(f"skipped {name}: {left():.0f} s left, it needs about {needs_s:.0f}")
            return None
        log(f"start {name}")
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - recorded, the next part still runs
            log(f"FAILED {name}: {type(e).__name__}: {e}")
            save(f"failed-{name}", {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()})
            return None
        log(f"done {name}")
        return result

    return run


@part("env", 0)
def env():
    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "python": sys.version,
    }
    if torch.cuda.is_available():
        q = torch.randn(4, 8, 8, 64, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = torch.func.vmap(lambda x: torch.nn.functional.scaled_dot_product_attention(x, x, x))(q)
            out.float().sum().backward()
        info["sdpa_vmap_warnings"] = [str(w.message)[:300] for w in caught]
    save("env", info)
    return info


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
SIZES = (1, 3, 8, 21, 32, 64) if DEVICE == "cuda" else (1, 3)
MODEL = "viny" if DEVICE == "cuda" else "tiny"
BENCH = dict(device=DEVICE, model=MODEL, steps=5 if DEVICE == "cuda" else 1, warmup=1, repeats=3)
fleets: list[dict] = []


def bench(tag: str, **kw) -> None:
    from viny_probe.perf.fleet import run_fleet_bench

    result = run_fleet_bench(**{**BENCH, **kw})
    for row in result["fleets"]:
        row["variant"] = tag
    fleets.extend(result["fleets"])
    save(f"bench-{tag}", result)
    log(
        f"{tag}: "
        + ", ".join(
            f"{r['regime']} K={r['fleet']} {r['train_img_per_s']:.0f} img/s" for r in result["fleets"]
        )
    )
    if result["failures"]:
        log(f"{tag} failures: {result['failures']}")


for regime in ("simmim", "segment", "classify", "spatial"):
    part(f"bf16-{regime}", 40)(
        lambda regime=regime: bench(f"bf16-{regime}", sizes=SIZES, regimes=(regime,), precisions=("bf16",))
    )
part("bf16-math-attention", 40)(
    lambda: bench(
        "bf16-math", sizes=(1, 8, 64), regimes=("simmim", "segment"), precisions=("bf16",), attention="math"
    )
)
part("fp32-segment", 40)(lambda: bench("fp32", sizes=(1, 21, 64), regimes=("segment",), precisions=("fp32",)))


@part("mini-sweep", 150)
def mini_sweep():
    out = Path("/tmp/viny-mini-fleet")
    cmd = [
        sys.executable,
        "-m",
        "viny_probe",
        "sweep",
        "mini",
        "-o",
        str(out),
        "--fleet",
        "auto",
        "--device",
        DEVICE,
    ]
    cmd += ["--precision", "bf16" if DEVICE == "cuda" else "fp32", "--json", "-q"]
    t = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(30, left() - 60))
    seconds = time.time() - t
    (OUT / "mini-stderr.txt").write_text(proc.stderr[-20000:])
    summary = {"seconds": seconds, "returncode": proc.returncode, "command": " ".join(cmd)}
    try:
        summary["sweep"] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        summary["stdout_tail"] = proc.stdout[-5000:]
    if (out / "results.csv").exists():
        (OUT / "mini-results.csv").write_text((out / "results.csv").read_text())
    save("mini", summary)
    log(f"mini sweep: rc {proc.returncode} in {seconds:.1f} s")


for tag, kw in (
    ("compile-simmim-3", dict(sizes=(3,), regimes=("simmim",))),
    ("compile-segment-21", dict(sizes=(21,), regimes=("segment",))),
):
    part(tag, 90)(lambda tag=tag, kw=kw: bench(tag, precisions=("bf16",), compile=True, **kw))


@part("projection", 0)
def projection():
    from viny_probe.experiments.projection import project_fleets

    result = project_fleets(fleets)
    save("projection", result)
    log(f"paper plan projected: {result.get('total_hours')} h ({result.get('rates_from')})")


save("fleets", fleets)
log(f"finished in {time.time() - T0:.0f} s")
