"""Stage kinds: what one stage of a plan trains (a registered regime) on what (a registered dataset),
declared once here and read by name from ``STAGE_KINDS`` by the plans, the sweep, its results rows,
the geometry diagnostics and the report.

A kind's ``role`` says where it sits in a chain (pre-training -> intermediate -> final stage); a plan
places kinds by role, and results rows read their chain through it (which stage was the pre-training,
which the intermediate one). A plugin adds a kind the same way the study's are added below::

    from viny_probe.experiments.kinds import StageKind, register_stage_kind

    register_stage_kind(StageKind("rotation", regime="rotation", dataset="pets", role="intermediate"))

after which a plan may name it (``intermediate = "rotation"``, ``geometry = [..., "rotation"]``) and
set its TrainConfig fields under ``[overrides.rotation]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..data.spec import dataset_spec
from ..errors import VinyError
from ..registry import Registry

ROLES = ("pretrain", "intermediate", "final")


@dataclass(frozen=True)
class StageKind:
    """A stage of a plan's chains: the regime it trains and the study's dataset for it (on embedded data
    the dataset's registered stand-in, ``DatasetSpec.stand_in``, takes its place).

    ``phase``: the schedule row it trains with (None: its regime's own); ``label``: its name in Table 2
    (default: the kind's name); ``table_key``: its key in the published Table 2 and in a plan's geometry
    cells (default: the kind's name)."""

    name: str
    regime: str
    dataset: str
    role: str = "intermediate"
    phase: str | None = None
    label: str | None = None
    table_key: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise VinyError(f"stage kind {self.name!r}: role {self.role!r} must be one of {', '.join(ROLES)}")

    def dataset_for(self, data: str) -> str:
        return self.dataset if data == "real" else (dataset_spec(self.dataset).stand_in or self.dataset)

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def key(self) -> str:
        return self.table_key or self.name


# Every stage kind, in chain order (results rows are sorted by it).
STAGE_KINDS: Registry[StageKind] = Registry("stage kind")


def register_stage_kind(kind: StageKind, *, replace: bool = False) -> StageKind:
    """Register ``kind`` under its name (a plugin's way to add one)."""
    return STAGE_KINDS.register(kind.name, kind, replace=replace)


def kind_of(name: str) -> StageKind | None:
    """The registered kind ``name``, or None (a results row of a plugin's kind that is not loaded)."""
    return STAGE_KINDS.get(name) if name in STAGE_KINDS else None


def role_of(name: str) -> str | None:
    kind = kind_of(name)
    return kind.role if kind else None


def first_of_role(role: str) -> str:
    """The first registered kind of ``role``: a plan's default pre-training and final stage."""
    for kind in STAGE_KINDS.values():
        if kind.role == role:
            return kind.name
    raise VinyError(f"no stage kind of role {role!r} is registered")


# ------------------------------------------------------------------------------ the study's stage kinds
register_stage_kind(
    StageKind("pretrain", "simmim", "imagenet", role="pretrain", label="Pretrained", table_key="pretrained")
)
register_stage_kind(StageKind("cls-intel", "classify", "intel", label="CLS-Intel"))
register_stage_kind(StageKind("cls-pets", "classify", "pets", label="CLS-Pets"))
register_stage_kind(StageKind("spatial", "spatial", "pets", label="Spatial"))
register_stage_kind(StageKind("finetune", "segment", "pets", role="final"))

# What the flags of a plan file written before plans listed their stages mean: ``intermediate = true``
# (Table A3's intermediate stage) and ``geometry = true`` (Table 2's intermediate stages).
STUDY_INTERMEDIATE = ("cls-intel",)
STUDY_GEOMETRY = ("cls-intel", "cls-pets", "spatial")
