"""Benchmark: patch-token extraction + every final-layer diagnostic, on the full ViNy (4.8M), CPU.

    .venv/bin/python benchmarks/bench_diagnostics.py                       # 2,000 images: 1,600 fit + 400 test
    .venv/bin/python benchmarks/bench_diagnostics.py --fit 2000 --test 1000  # `viny probe`'s defaults

A fresh (untrained) ViNy is saved as a viny checkpoint and run through the same library calls as
`viny probe` / `viny diagnose` (viny_probe.analysis.diagnose), with the embedding cache OFF so the
extraction is really timed. Images: embedded toy-pets at 128 px; fit images from the non-test pool,
test images from the fixed test set (seed 0). Loading (or, the first time, generating) the dataset is
reported separately and not part of the timed total. Timed: extraction of fit + test images, patch
labels, within/across variance + ratio, effective rank, the linear probe (5 values of C + refit),
kNN (k = 20, capped bank), the Fig 5 curves (all / same-class / different-class pairs) and the Fig 6
reference maps of 2 images. Weights do not change the cost, so untrained weights are fine.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fit", type=int, default=1600, help="pool images the probe / kNN are fitted on")
    ap.add_argument("--test", type=int, default=400, help="test images everything is scored / measured on")
    ap.add_argument("--model", default="viny")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from viny_probe.analysis import (
        choose_reference_patches,
        similarity_map,
        similarity_vs_distance_by_class,
    )
    from viny_probe.analysis import diagnostics as d
    from viny_probe.analysis.embeddings import extract_patch_tokens, load_encoder
    from viny_probe.analysis.evaluation_data import load_probe_data, patch_labels
    from viny_probe.analysis.knn import knn_patch_accuracy
    from viny_probe.analysis.registry import LayerTokens, measure_layer
    from viny_probe.checkpoint import save_checkpoint
    from viny_probe.model import ViNy, count_parameters

    torch.manual_seed(0)
    model = ViNy(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="viny-bench-"))
    ckpt = tmp / "fresh.pt"
    save_checkpoint(
        ckpt, {"regime": "fresh", "model_config": model.cfg.to_dict(), "encoder": model.state_dict()}
    )
    encoder, _ = load_encoder(ckpt)
    cfg = encoder.cfg

    start = time.perf_counter()
    train_set, test_set, info = load_probe_data(
        "toy-pets", cfg.image_size, probe_images=args.fit, test_images=args.test
    )
    load_s = time.perf_counter() - start
    print(
        f"model {args.model} ({count_parameters(encoder):,} params, {cfg.image_size} px), torch threads "
        f"{torch.get_num_threads()}, os.cpu_count {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}"
    )
    print(
        f"data: {len(train_set)} fit + {len(test_set)} test toy-pets images (load/generate {load_s:.1f} s, untimed)"
    )

    steps: dict[str, float] = {}

    def timed(name, fn):
        t = time.perf_counter()
        value = fn()
        steps[name] = time.perf_counter() - t
        print(f"{steps[name]:8.2f} s  {name}", flush=True)
        return value

    opts = dict(layers="final", batch_size=args.batch_size, use_cache=False, progress=False)
    train_tok = timed("extract fit images", lambda: extract_patch_tokens(encoder, train_set, **opts)["final"])
    test_tok = timed("extract test images", lambda: extract_patch_tokens(encoder, test_set, **opts)["final"])
    train_lab, test_lab = timed(
        "patch labels (majority trimap class)",
        lambda: (patch_labels(train_set, cfg.patch_size), patch_labels(test_set, cfg.patch_size)),
    )
    metrics = timed(
        "variance, ratio, eff. rank, linear probe",
        lambda: measure_layer(LayerTokens(test_tok, test_lab, train_tok, train_lab), off=("knn",)),
    )
    knn = timed(
        f"kNN (k={d.KNN_K}, bank {d.KNN_BANK_PATCHES} patches, first {d.KNN_TEST_IMAGES} test images)",
        lambda: knn_patch_accuracy(
            train_tok,
            train_lab,
            test_tok[: d.KNN_TEST_IMAGES],
            test_lab[: d.KNN_TEST_IMAGES],
            k=d.KNN_K,
            num_classes=3,
            max_train_patches=d.KNN_BANK_PATCHES,
        ),
    )
    timed(
        "Fig 5 curves (all, same, different pairs)",
        lambda: similarity_vs_distance_by_class(test_tok, test_lab),
    )
    timed(
        "Fig 6 reference maps (2 images x 3 refs)",
        lambda: [
            similarity_map(test_tok[i], ref)
            for i in range(2)
            for ref in choose_reference_patches(test_set.masks[i], cfg.patch_size).values()
        ],
    )
    total = sum(steps.values())
    print(
        f"{total:8.2f} s  TOTAL for {len(train_set) + len(test_set)} images "
        f"({info['probe_images'] * cfg.num_patches:,} fit patches); probe test acc "
        f"{100 * metrics['probe']['test_accuracy']:.1f}%, kNN {100 * knn.accuracy:.1f}%"
    )
    print(f"load avg after: {os.getloadavg()[0]:.1f} (the machine may be shared: compare with that)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
