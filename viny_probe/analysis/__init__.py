"""Diagnostics of patch representations, as plain functions on tensors.

Embeddings are ``(N, P, D)`` float tensors (or numpy arrays): N images, P = g * g patches in row-major
order, D channels. Trimap masks are ``(N, H, W)`` uint8 with classes 0 pet, 1 background, 2 boundary.
A new diagnostic is one module here (a plain function) plus its ``register`` line in ``diagnostics.py``
(see ``registry``): every table, summary and report that shows diagnostics iterates over the registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

# Where each public name lives. Imported on first use (PEP 562), so `import viny_probe.analysis.probe` or
# `viny --help` does not pull in matplotlib (plots) or scikit-learn with it.
_HOMES = {
    "cka_matrix": "viny_probe.analysis.cka",
    "linear_cka": "viny_probe.analysis.cka",
    "SimilarityCurve": "viny_probe.analysis.distance",
    "manhattan_distance_matrix": "viny_probe.analysis.distance",
    "similarity_vs_distance": "viny_probe.analysis.distance",
    "similarity_vs_distance_by_class": "viny_probe.analysis.distance",
    "KnnResult": "viny_probe.analysis.knn",
    "knn_patch_accuracy": "viny_probe.analysis.knn",
    "MapScale": "viny_probe.analysis.plots",
    "plot_cka_heatmap": "viny_probe.analysis.plots",
    "plot_cka_panels": "viny_probe.analysis.plots",
    "plot_depth_curves": "viny_probe.analysis.plots",
    "plot_reference_grid": "viny_probe.analysis.plots",
    "plot_reference_grid_stretched": "viny_probe.analysis.plots",
    "plot_reference_panel": "viny_probe.analysis.plots",
    "plot_similarity_by_class": "viny_probe.analysis.plots",
    "plot_similarity_overlay": "viny_probe.analysis.plots",
    "plot_similarity_vs_distance": "viny_probe.analysis.plots",
    "PatchProbeResult": "viny_probe.analysis.probe",
    "linear_patch_probe": "viny_probe.analysis.probe",
    "effective_rank": "viny_probe.analysis.rank",
    "singular_values": "viny_probe.analysis.rank",
    "choose_reference_patches": "viny_probe.analysis.reference",
    "parse_patch": "viny_probe.analysis.reference",
    "parse_pixel": "viny_probe.analysis.reference",
    "pixel_to_patch": "viny_probe.analysis.reference",
    "similarity_map": "viny_probe.analysis.reference",
    "similarity_maps": "viny_probe.analysis.reference",
    "DIAGNOSTICS": "viny_probe.analysis.registry",
    "Column": "viny_probe.analysis.registry",
    "Diagnostic": "viny_probe.analysis.registry",
    "LayerTokens": "viny_probe.analysis.registry",
    "measure_block": "viny_probe.analysis.registry",
    "measure_layer": "viny_probe.analysis.registry",
    "register": "viny_probe.analysis.registry",
    "registered": "viny_probe.analysis.registry",
    "temporarily": "viny_probe.analysis.registry",
    "unregister": "viny_probe.analysis.registry",
    "across_image_variance": "viny_probe.analysis.variance",
    "ratio_of_variances": "viny_probe.analysis.variance",
    "within_across_ratio": "viny_probe.analysis.variance",
    "within_image_variance": "viny_probe.analysis.variance",
    "patch_class_fractions": "viny_probe.data.patch_labels",
    "patch_majority_labels": "viny_probe.data.patch_labels",
}

if TYPE_CHECKING:  # the names for type checkers and IDEs
    from viny_probe.analysis.cka import cka_matrix, linear_cka  # noqa: F401
    from viny_probe.analysis.distance import (
        SimilarityCurve,
        manhattan_distance_matrix,
        similarity_vs_distance,
        similarity_vs_distance_by_class,
    )  # noqa: F401
    from viny_probe.analysis.knn import KnnResult, knn_patch_accuracy  # noqa: F401
    from viny_probe.analysis.plots import (
        MapScale,
        plot_cka_heatmap,
        plot_cka_panels,
        plot_depth_curves,
        plot_reference_grid,
        plot_reference_grid_stretched,
        plot_reference_panel,
        plot_similarity_by_class,
        plot_similarity_overlay,
        plot_similarity_vs_distance,
    )  # noqa: F401
    from viny_probe.analysis.probe import PatchProbeResult, linear_patch_probe  # noqa: F401
    from viny_probe.analysis.rank import effective_rank, singular_values  # noqa: F401
    from viny_probe.analysis.reference import (
        choose_reference_patches,
        parse_patch,
        parse_pixel,
        pixel_to_patch,
        similarity_map,
        similarity_maps,
    )  # noqa: F401
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
    )  # noqa: F401
    from viny_probe.analysis.variance import (
        across_image_variance,
        ratio_of_variances,
        within_across_ratio,
        within_image_variance,
    )  # noqa: F401
    from viny_probe.data.patch_labels import patch_class_fractions, patch_majority_labels  # noqa: F401


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))


__all__ = [
    "DIAGNOSTICS",
    "MapScale",
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
