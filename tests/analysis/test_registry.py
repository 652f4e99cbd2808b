import math

import torch

import viny_probe.analysis as analysis


def test_every_public_name_is_exported():
    for name in analysis.__all__:
        assert hasattr(analysis, name), name


def test_scalar_diagnostics_take_one_embedding_set_and_return_a_float():
    emb = torch.randn(4, 16, 8, generator=torch.Generator().manual_seed(0))
    assert set(analysis.SCALAR_DIAGNOSTICS) == {
        "within_image_variance",
        "across_image_variance",
        "within_across_ratio",
        "effective_rank",
    }
    for name, fn in analysis.SCALAR_DIAGNOSTICS.items():
        value = fn(emb)
        assert isinstance(value, float) and math.isfinite(value) and value > 0, name
