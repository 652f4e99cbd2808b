"""Training regimes (one file each, registered by name) and the one generic loop."""

# Registration, in the study's chain order (the order `viny train --help` and the bench list them).
from . import simmim, classify, spatial, segment  # noqa: F401, I001
from .base import REGISTRY, Regime, RegimeData, register
from .loop import RunResult, train

__all__ = ["REGISTRY", "Regime", "RegimeData", "RunResult", "register", "train"]
