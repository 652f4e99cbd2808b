"""Diagnostics of patch representations, as plain functions on tensors.

Embeddings are ``(N, P, D)`` float tensors (or numpy arrays): N images, P = g * g patches in row-major
order, D channels. Trimap masks are ``(N, H, W)`` uint8 with classes 0 pet, 1 background, 2 boundary.
A new diagnostic is one module here plus its line below (and, for a scalar of one embedding set,
its entry in ``SCALAR_DIAGNOSTICS``).
"""

from collections.abc import Callable

from viny_probe.analysis.cka import cka_matrix, linear_cka
from viny_probe.analysis.distance import (
    SimilarityCurve,
    manhattan_distance_matrix,
    similarity_vs_distance,
    similarity_vs_distance_by_class,
)
from viny_probe.analysis.knn import KnnResult, knn_patch_accuracy
from viny_probe.analysis.plots import (
    plot_cka_heatmap,
    plot_depth_curves,
    plot_reference_grid,
    plot_similarity_overlay,
    plot_similarity_vs_distance,
)
from viny_probe.analysis.probe import PatchProbeResult, linear_patch_probe
from viny_probe.analysis.rank import effective_rank, singular_values
from viny_probe.analysis.reference import (
    choose_reference_patches,
    parse_patch,
    parse_pixel,
    pixel_to_patch,
    similarity_map,
    similarity_maps,
)
from viny_probe.analysis.variance import across_image_variance, within_across_ratio, within_image_variance
from viny_probe.data.patch_labels import patch_class_fractions, patch_majority_labels

# Label-free scalars of one (N, P, D) embedding set: what per-block depth curves are made of.
SCALAR_DIAGNOSTICS: dict[str, Callable[..., float]] = {
    "within_image_variance": within_image_variance,
    "across_image_variance": across_image_variance,
    "within_across_ratio": within_across_ratio,
    "effective_rank": effective_rank,
}

__all__ = [
    "SCALAR_DIAGNOSTICS",
    "KnnResult",
    "PatchProbeResult",
    "SimilarityCurve",
    "across_image_variance",
    "choose_reference_patches",
    "cka_matrix",
    "effective_rank",
    "knn_patch_accuracy",
    "linear_cka",
    "linear_patch_probe",
    "manhattan_distance_matrix",
    "parse_patch",
    "parse_pixel",
    "patch_class_fractions",
    "patch_majority_labels",
    "pixel_to_patch",
    "plot_cka_heatmap",
    "plot_depth_curves",
    "plot_reference_grid",
    "plot_similarity_overlay",
    "plot_similarity_vs_distance",
    "similarity_map",
    "similarity_maps",
    "similarity_vs_distance",
    "similarity_vs_distance_by_class",
    "singular_values",
    "within_across_ratio",
    "within_image_variance",
]
