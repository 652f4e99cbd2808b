"""viny's example plugin: importing it registers one regime, one mask dataset and one diagnostic."""

from . import high_norm, rotation, shapes  # noqa: F401  (each registers itself)
