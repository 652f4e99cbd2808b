"""Training regimes (one file each, registered by name) and the one generic loop."""

from . import classify, segment, simmim, spatial  # noqa: F401  (registration)
from .base import REGISTRY, Regime, RegimeData, register
from .loop import RunResult, train

__all__ = ["REGISTRY", "Regime", "RegimeData", "RunResult", "register", "train"]
