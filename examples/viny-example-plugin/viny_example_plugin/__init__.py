"""viny's example plugin: importing it registers one regime, its stage kind for plans, one mask dataset
and one diagnostic."""

from . import high_norm, rotation, shapes, stages  # noqa: F401  (each registers itself)
