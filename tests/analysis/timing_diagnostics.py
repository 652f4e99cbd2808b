"""Timing check for the final-layer diagnostics (not a test; pytest does not collect it).

    .venv/bin/python -m tests.analysis.timing_diagnostics [--images 2000] [--test-fraction 0.2]

Random (N, 64, 128) float32 embeddings and random 3-class patch labels: the cost depends only on the
shapes. Label-free diagnostics use all N images (N * 64 = 128,000 patches at N = 2000); the probe and
kNN fit on the first (1 - test_fraction) of the images and score the rest.
"""

from __future__ import annotations

import argparse
import time

import torch

from viny_probe.analysis import (
    across_image_variance,
    cka_matrix,
    effective_rank,
    knn_patch_accuracy,
    linear_cka,
    linear_patch_probe,
    similarity_map,
    similarity_vs_distance,
    similarity_vs_distance_by_class,
    within_image_variance,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--knn-max-train", type=int, default=None, help="cap the kNN train bank (patches)")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(args.images, 64, 128, generator=g)
    labels = torch.randint(0, 3, (args.images, 64), generator=g)
    n_train = round(args.images * (1 - args.test_fraction))
    train_emb, train_labels, test_emb, test_labels = (
        emb[:n_train],
        labels[:n_train],
        emb[n_train:],
        labels[n_train:],
    )
    print(
        f"torch threads: {torch.get_num_threads()}; all {tuple(emb.shape)}; "
        f"probe/kNN train {tuple(train_emb.shape)}, test {tuple(test_emb.shape)}"
    )

    steps = {
        "within_image_variance": lambda: within_image_variance(emb),
        "across_image_variance": lambda: across_image_variance(emb),
        "similarity_vs_distance (all pairs)": lambda: similarity_vs_distance(emb),
        "similarity_vs_distance_by_class": lambda: similarity_vs_distance_by_class(emb, labels),
        "effective_rank": lambda: effective_rank(emb),
        "linear_cka (final vs final)": lambda: linear_cka(emb, emb),
        "cka_matrix 13 x 13 blocks (per-block, not final-layer)": lambda: cka_matrix([emb] * 13, [emb] * 13),
        "similarity_map x 3 refs x 10 images": lambda: [
            similarity_map(emb[i], r) for i in range(10) for r in (0, 27, 63)
        ],
        "linear_patch_probe (5 Cs + refit)": lambda: linear_patch_probe(
            train_emb, train_labels, test_emb, test_labels
        ),
        "knn_patch_accuracy (k=20)": lambda: knn_patch_accuracy(
            train_emb, train_labels, test_emb, test_labels, max_train_patches=args.knn_max_train
        ),
    }
    total = 0.0
    for name, step in steps.items():
        start = time.perf_counter()
        result = step()
        seconds = time.perf_counter() - start
        total += seconds
        extra = (
            f"  test acc {result.test_accuracy:.3f}, C={result.chosen_C}"
            if name.startswith("linear_patch")
            else ""
        )
        print(f"{seconds:8.2f} s  {name}{extra}")
    print(f"{total:8.2f} s  total")


if __name__ == "__main__":
    main()
