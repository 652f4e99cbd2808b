"""viny's example plugin: importing it registers one regime, its stage kind for plans, one mask dataset,
one diagnostic and one model source."""

from . import high_norm, rotation, shapes, stages, tv_source  # noqa: F401  (each registers itself)
