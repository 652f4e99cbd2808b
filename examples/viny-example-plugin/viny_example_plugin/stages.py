"""A stage kind for plans: rotation prediction as the intermediate stage between SimMIM pre-training
and Pets segmentation (a plan then says ``intermediate = ["rotation"]``; the embedded data's stand-in
for Pets is toy-pets)."""

from viny_probe.experiments.kinds import StageKind, register_stage_kind

from . import rotation  # noqa: F401  (the regime the kind trains)

register_stage_kind(
    StageKind("rotation", regime="rotation", dataset="pets", role="intermediate", label="Rotation")
)
