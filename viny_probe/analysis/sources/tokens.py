"""``tokens:DIR``: patch tokens written by `viny extract` (``analysis.token_store``), read by image id
instead of running a model. The diagnostics then cost what reading the files costs; the folder must hold
every image a command asks for (the same dataset, split seed and sizes as at extraction)."""

from __future__ import annotations

from viny_probe.analysis.sources.base import (
    ModelSource,
    ModelSpec,
    SourceOptions,
    TokenModel,
    register_source,
)
from viny_probe.errors import VinyError


def load(spec: ModelSpec, options: SourceOptions) -> TokenModel:
    from viny_probe.analysis.token_store import TokenFolder

    if options.weights is not None or options.image_size is not None:
        raise VinyError(
            f"{spec.text}: a token folder's tokens are fixed; --weights and --img-size do not apply"
        )
    return TokenFolder.open(spec.target).token_model(spec.text or f"tokens:{spec.target}")


register_source(
    ModelSource(
        "tokens", load, "patch tokens written by `viny extract` (read, not computed)", "tokens:vits-tokens"
    )
)
