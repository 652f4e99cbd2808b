"""Fleets on a GPU, in one call of a few minutes: what issue #14 asks to measure.

    PYTHONPATH=. python3 benchmarks/fleet_gpu.py OUT_DIR [BUDGET_S]

1. The device, and whether torch.func.vmap has a batching rule for the fused attention there.
2. Three members as one fleet against each trained alone on the GPU (losses, weights, non-finite),
   with and without CUDA graphs, in bf16 and fp32, with written-out and fused attention.
3. `viny bench --fleet` figures (``perf.fleet.run_fleet_bench``): aggregate training img/s and % of the
   measured bf16 peak, for every regime at K = 1, 3, 8, 21, 32, 64 (the `paper` plan's own fleets
   have 3 members, the seeds of one pre-training size, or 9, one wave's fine-tunes of one train size
   or its CLS-Intel stages; `viny sweep paper --dry-run --fleet auto` lists them) under CUDA
   graphs, then fp32 and eager for comparison.
4. One real `viny sweep mini --fleet auto` end to end on the GPU, timed, its results.csv kept.
5. The `paper` plan's projected time at those rates, grouped as `viny sweep --fleet` groups it.

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
# Which parts to run (prefixes of their names, comma-separated; default all): e.g. "env,compile,profile".
ONLY = tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else None
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
        if ONLY is not None and not name.startswith(ONLY):
            return None
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


def same_as_alone(
    tag: str, regime: str, precision: str, graphs: bool, attention: str, compile: bool = False
) -> dict:
    """Three members trained as one fleet and each alone on this device: the largest differences of
    the per-epoch losses and of the final weights, and whether anything went non-finite."""
    import shutil

    from viny_probe.checkpoint import load_checkpoint
    from viny_probe.config import TrainConfig
    from viny_probe.trainers import fleet, train

    root = Path(f"/tmp/viny-same/{tag}")
    shutil.rmtree(root, ignore_errors=True)
    model = "demo" if DEVICE == "cuda" else "tiny"
    cfgs = [
        TrainConfig(
            regime=regime,
            model=model,
            seed=s,
            epochs=2,
            train_size=320,
            test_size=64,
            device=DEVICE,
            precision=precision,
            compile=compile,
        )
        for s in range(3)
    ]
    fleet.Stack.attention = attention
    try:
        alone = [train(c, root / f"alone{i}", progress=False) for i, c in enumerate(cfgs)]
        out = fleet.train_fleet(
            [(c, root / f"fleet{i}", False) for i, c in enumerate(cfgs)], progress=False, cuda_graphs=graphs
        )
    finally:
        fleet.Stack.attention = "math"
    row = {"tag": tag, "regime": regime, "precision": precision, "graphs": graphs, "attention": attention}
    row["errors"] = [None if m.error is None else f"{type(m.error).__name__}: {m.error}"[:300] for m in out]
    if any(m.error for m in out):
        return row
    loss_diff, weight_diff = 0.0, 0.0
    for a, m in zip(alone, out, strict=True):
        for x, y in zip(a.history, m.result.history, strict=True):
            loss_diff = max(loss_diff, abs(x["loss"] - y["loss"]) / abs(x["loss"]))
        wa, wb = (
            load_checkpoint(a.final_checkpoint)["encoder"],
            load_checkpoint(m.result.final_checkpoint)["encoder"],
        )
        va = torch.cat([v.flatten().float() for v in wa.values()])
        vb = torch.cat([wb[k].flatten().float() for k in wa])
        weight_diff = max(weight_diff, float((va - vb).norm() / va.norm()))  # relative, all weights
    row.update(
        max_rel_loss_diff=loss_diff,
        max_rel_weight_diff=weight_diff,
        losses_alone=[[h["loss"] for h in a.history] for a in alone],
        losses_fleet=[[h["loss"] for h in m.result.history] for m in out],
    )
    return row


@part("same-as-alone", 60)
def same():
    rows = []
    for args in (
        ("seg-bf16-graphs", "segment", "bf16", True, "math"),
        ("seg-fp32-graphs", "segment", "fp32", True, "math"),
        ("simmim-bf16-graphs", "simmim", "bf16", True, "math"),
        ("seg-bf16-eager", "segment", "bf16", False, "math"),
        ("seg-bf16-eager-sdpa", "segment", "bf16", False, "auto"),
        ("simmim-bf16-eager-sdpa", "simmim", "bf16", False, "auto"),
    ):
        try:
            rows.append(same_as_alone(*args))
        except Exception as e:  # noqa: BLE001
            rows.append({"tag": args[0], "failed": f"{type(e).__name__}: {e}"[:500]})
        r = rows[-1]
        log(
            f"same-as-alone {args[0]}: "
            + json.dumps({k: v for k, v in r.items() if not k.startswith("losses")})[:400]
        )
        save("same_as_alone", rows)


def bench(tag: str, **kw) -> None:
    from viny_probe.perf.fleet import run_fleet_bench
    from viny_probe.perf.options import BenchOptions, FleetOptions

    fleet = FleetOptions(**{k: kw.pop(k) for k in ("sizes", "attention", "graphs") if k in kw})
    result = run_fleet_bench(fleet, BenchOptions(**{**BENCH, **kw}))
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
    part(f"graphs-bf16-{regime}", 40)(
        lambda regime=regime: bench(
            f"graphs-bf16-{regime}", sizes=SIZES, regimes=(regime,), precisions=("bf16",)
        )
    )
part("graphs-fp32-segment", 40)(
    lambda: bench("graphs-fp32", sizes=(1, 21, 64), regimes=("segment",), precisions=("fp32",))
)
part("eager-bf16-simmim", 40)(
    lambda: bench("eager-bf16", sizes=(1, 3, 64), regimes=("simmim",), precisions=("bf16",), graphs=False)
)


def same_compiled():
    rows = []
    for tag, precision in (("seg-fp32-graphs-compile", "fp32"), ("seg-bf16-graphs-compile", "bf16")):
        try:
            rows.append(same_as_alone(tag, "segment", precision, True, "math", compile=True))
        except Exception as e:  # noqa: BLE001
            rows.append({"tag": tag, "failed": f"{type(e).__name__}: {e}"[:500]})
        log(
            f"same-as-alone {tag}: "
            + json.dumps({k: v for k, v in rows[-1].items() if not k.startswith("losses")})[:400]
        )
        save("same_as_alone_compiled", rows)


part("compile-same-as-alone", 60)(same_compiled)
for tag, kw in (
    ("compile-simmim", dict(sizes=(3, 21), regimes=("simmim",))),
    ("compile-segment", dict(sizes=(64,), regimes=("segment",))),
):
    part(tag, 60)(lambda tag=tag, kw=kw: bench(tag, precisions=("bf16",), compile=True, **kw))


@part("debug-compile", 60)
def debug_compile():
    """A compiled fleet in a fresh process, its full traceback kept if it fails, timed if it runs."""
    from viny_probe.model import model_config
    from viny_probe.perf.fleet import make_fleet
    from viny_probe.perf.harness import TrainerSetup, bench_data
    from viny_probe.perf.timing import time_median

    cfg = model_config(MODEL)
    data = bench_data(cfg, 64).to(DEVICE)
    rows = []
    for regime, k in (("simmim", 3), ("segment", 64)):
        row = {"regime": regime, "fleet": k}
        try:
            t = time.time()
            fleet = make_fleet(regime, cfg, data, torch.device(DEVICE), k, TrainerSetup("bf16", compile=True))
            for _ in range(5):
                fleet.step()
            row["first_steps_s"] = time.time() - t
            seconds = time_median(
                lambda fleet=fleet: [fleet.step() for _ in range(5)], torch.device(DEVICE), 1, 3
            )
            row["train_img_per_s"] = k * 64 * 5 / seconds
            del fleet
        except Exception:  # noqa: BLE001
            row["traceback"] = traceback.format_exc()[-6000:]
        rows.append(row)
        log(
            f"debug-compile {regime} K={k}: " + json.dumps({a: b for a, b in row.items() if a != "traceback"})
        )
        save("debug_compile", rows)


@part("profile", 30)
def profile():
    """Where a large fleet's eager step spends the GPU's time: the top kernels of one K = 64 step."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from viny_probe.model import model_config
    from viny_probe.perf.fleet import make_fleet
    from viny_probe.perf.harness import TrainerSetup, bench_data

    cfg = model_config(MODEL)
    data = bench_data(cfg, 64).to(DEVICE)
    size = 64 if DEVICE == "cuda" else 2
    fleet = make_fleet("segment", cfg, data, torch.device(DEVICE), size, TrainerSetup("bf16"), graphs=False)
    for _ in range(2):
        fleet.step()
    torch.cuda.synchronize() if DEVICE == "cuda" else None
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        fleet.step()
        torch.cuda.synchronize() if DEVICE == "cuda" else None
    key = "self_cuda_time_total" if DEVICE == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=key, row_limit=25, max_name_column_width=60)
    (OUT / "profile.txt").write_text(table)
    save("profile", {"sorted_by": key, "rows": 25})


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


@part("projection", 0)
def projection():
    from viny_probe.experiments.projection import project_fleets

    result = project_fleets(fleets)
    save("projection", result)
    log(f"paper plan projected: {result.get('total_hours')} h ({result.get('rates_from')})")


save("fleets", fleets)
log(f"finished in {time.time() - T0:.0f} s")
