"""Benchmark: `viny probe` against the bare forward pass of the same model on the same images, one run.

    .venv/bin/python benchmarks/diagnostics.py                                  # ViT-S/16, 401 + 199 images
    .venv/bin/python benchmarks/diagnostics.py --model runs/seg/final.pt --probe-images 1600 --test-images 400
    .venv/bin/python benchmarks/diagnostics.py --backends torch,sklearn --repeat 2

In one process, after loading the dataset (cached; not timed) and the model: the bare forward pass (the
model's ``tokens`` at its last block, eval mode, no gradients, the same batch size and preprocessing as
the extraction) over the probe + test images, then ``probe_checkpoint`` (what `viny probe` runs) with the
token cache OFF, once per probe backend, alternated ``--repeat`` times so that load on the machine hits
all of them alike. Each probe's time is split into extraction and the rest (diagnostics) by timing
``extract_patch_tokens``. The start-up (``import viny_probe.cli``) is timed in a fresh interpreter.
Report ratios (probe / bare forward), not seconds: they are what survives a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch


def _startup_seconds() -> float:
    code = "import time; t = time.perf_counter(); import viny_probe.cli; print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="timm:vit_small_patch16_224,pretrained=false")
    ap.add_argument("--dataset", default="toy-pets")
    ap.add_argument("--probe-images", type=int, default=401)
    ap.add_argument("--test-images", type=int, default=199)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--backends", default="torch,sklearn")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-knn", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from viny_probe.analysis import checkpoint_probe as cp
    from viny_probe.analysis import embeddings
    from viny_probe.analysis.embeddings import _prepare
    from viny_probe.analysis.evaluation_data import load_probe_data
    from viny_probe.analysis.options import EvalSet, ModelOptions, ProbeOptions
    from viny_probe.analysis.sources import load_model

    load_start = os.getloadavg()
    startup = _startup_seconds()
    model = load_model(args.model)
    t = time.perf_counter()
    train_set, test_set, _ = load_probe_data(
        args.dataset, model.image_size, None, 0, 1000, args.probe_images, args.test_images
    )
    data_s = time.perf_counter() - t
    images = torch.cat([train_set.images, test_set.images])
    model.module.eval()

    def bare_forward() -> float:
        t = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, len(images), args.batch_size):
                model.tokens(
                    _prepare(images[s : s + args.batch_size], model, torch.device("cpu")), [model.depth]
                )
        return time.perf_counter() - t

    extraction = [0.0]
    original = embeddings.extract_patch_tokens

    def timed_extract(*a, **k):
        t = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            extraction[0] += time.perf_counter() - t

    cp.extract_patch_tokens = timed_extract
    rows = []
    for r in range(args.repeat):
        rows.append({"what": "bare forward", "repeat": r, "seconds": bare_forward()})
        for backend in args.backends.split(","):
            extraction[0] = 0.0
            t = time.perf_counter()
            result = cp.probe_checkpoint(
                model,
                ModelOptions(use_cache=False, batch_size=args.batch_size),
                EvalSet(args.dataset, probe_images=args.probe_images, test_images=args.test_images),
                ProbeOptions(backend=backend, knn=not args.no_knn),
                progress=False,
            )
            seconds = time.perf_counter() - t
            probe = result["layers"]["final"]["probe"]
            rows.append(
                {
                    "what": f"viny probe ({backend})",
                    "repeat": r,
                    "seconds": seconds,
                    "extraction_s": extraction[0],
                    "probe_test_accuracy": probe["test_accuracy"],
                    "chosen_C": probe["chosen_C"],
                }
            )
        print(json.dumps(rows[-1 - len(args.backends.split(",")) :]), flush=True)
    forward = {r["repeat"]: r["seconds"] for r in rows if r["what"] == "bare forward"}
    print(
        f"model {args.model}, {len(images)} images at {model.image_size} px, {torch.get_num_threads()} threads, "
        f"load average {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; dataset load {data_s:.1f} s (not timed); "
        f"start-up (import viny_probe.cli) {startup:.2f} s (not in the probe times)"
    )
    print("| run | what | seconds | x bare forward | extraction s | rest s | probe acc % | C |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["seconds"] / forward[r["repeat"]]
        extra = (
            f"{r['extraction_s']:.1f} | {r['seconds'] - r['extraction_s']:.1f} | "
            f"{100 * r['probe_test_accuracy']:.2f} | {r['chosen_C']:g}"
            if "extraction_s" in r
            else " | | |"
        )
        print(f"| {r['repeat']} | {r['what']} | {r['seconds']:.1f} | {ratio:.2f} | {extra} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "startup_s": startup,
                    "load_average": {"start": load_start, "end": os.getloadavg()},  # 1, 5, 15 minutes
                    "rows": rows,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
