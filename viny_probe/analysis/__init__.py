"""Diagnostics of patch representations, as plain functions on tensors.

Embeddings are ``(N, P, D)`` float tensors (or numpy arrays): N images, P = g * g patches in row-major
order, D channels. Trimap masks are ``(N, H, W)`` uint8 with classes 0 pet, 1 background, 2 boundary.
A new diagnostic is one module here (a plain function) plus its ``register`` line in ``diagnostics.py``
(see ``registry``): every table, summary and report that shows diagnostics iterates over the registry.
"""

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
    plot_cka_panels,
    plot_depth_curves,
    plot_reference_grid,
    plot_reference_grid_stretched,
    plot_reference_panel,
    plot_similarity_by_class,
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
from viny_probe.analysis.registry import (
    DIAGNOSTICS,
    Column,
    Diagnostic,
    LayerTokens,
    measure_block,
    measure_layer,
    register,
    registered,
    temporarily,
    unregister,
)
from viny_probe.analysis.variance import (
    across_image_variance,
    ratio_of_variances,
    within_across_ratio,
    within_image_variance,
)
from viny_probe.data.patch_labels import patch_class_fractions, patch_majority_labels

__all__ = [
    "DIAGNOSTICS",
    "Column",
    "Diagnostic",
    "KnnResult",
    "LayerTokens",
    "PatchProbeResult",
    "SimilarityCurve",
    "across_image_variance",
    "choose_reference_patches",
    "cka_matrix",
    "effective_rank",
    "knn_patch_accuracy",
    "linear_cka",
    "linear_patch_probe",
    "measure_block",
    "measure_layer",
    "manhattan_distance_matrix",
    "parse_patch",
    "parse_pixel",
    "patch_class_fractions",
    "patch_majority_labels",
    "pixel_to_patch",
    "ratio_of_variances",
    "register",
    "registered",
    "plot_cka_heatmap",
    "plot_cka_panels",
    "plot_depth_curves",
    "plot_reference_grid",
    "plot_reference_panel",
    "plot_reference_grid_stretched",
    "plot_similarity_by_class",
    "plot_similarity_overlay",
    "plot_similarity_vs_distance",
    "similarity_map",
    "similarity_maps",
    "similarity_vs_distance",
    "similarity_vs_distance_by_class",
    "singular_values",
    "temporarily",
    "unregister",
    "within_across_ratio",
    "within_image_variance",
]
