"""Experiment plans: the study's grids of runs as stages (one training run each) and cells (one grid
entry = the final stage of a chain, with its labels).

A chain is pre-training (SimMIM, optional) -> intermediate stage (optional) -> final stage. Stages are
identified by a hash of their resolved config and their parent's id, so the same pre-training (pre-train
size, seed) feeds every fine-tune size, every plan and every re-run, and is trained once.

A plan is data: which stage kinds (``kinds.STAGE_KINDS``: a registered regime on a registered dataset
with a schedule row and a role) form its chains, on which sizes and seeds, written as a TOML file
(:func:`load_plan_file`). The study's plans (``PLANS``) are such files, shipped in
``viny_probe/resources/plans/``: ``baseline`` (Table 1), ``pretrain`` (Table A2), ``intermediate``
(Table A3), ``geometry`` (Table 2 / Figs 5-6), ``paper`` (all of them) and ``mini`` (a miniature study on
the embedded data with the demo model and the quick preset). A plan can be narrowed or scaled with
:func:`with_options` (the CLI flags).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path

from ..config import (
    ADDED_FIELDS,
    HASHED_BEFORE,
    PHASES,
    SCHEDULE_PRESETS,
    TrainConfig,
    check_regime_options,
    not_an_option,
    option_defaults,
)
from ..data.spec import dataset_spec
from ..errors import VinyError
from ..registry import REGIMES
from .kinds import STAGE_KINDS, STUDY_GEOMETRY, STUDY_INTERMEDIATE, first_of_role

FINETUNE_SIZES = (250, 500, 1000, 2000, 4000, 6000)
SHARED_ROLES = ("pretrain", "intermediate")  # the roles a grid's cells may share (Plan.shared)


# Fields a plan's per-stage overrides may not set: the plan itself decides them.
FORBIDDEN_OVERRIDES = {
    "regime",
    "draw",
    "seed",
    "split_seed",
    "train_size",
    "init",
    "test_size",
    "model",
    "preset",
    "data_root",
}
# Left out of a stage's id: where files are, and how fast the run goes, do not change what it computes.
ID_EXCLUDED = set(TrainConfig.EXECUTION) | {"init", "data_root"}


@dataclass(frozen=True)
class Stage:
    """One training run. ``id`` = regime + hash of (resolved config without paths/execution, parent id)."""

    id: str
    kind: str  # a registered stage kind (kinds.STAGE_KINDS)
    config: TrainConfig  # resolved; ``init`` is filled at run time from the parent's final.pt
    parent: str | None
    labels: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def regime(self) -> str:
        return self.config.regime

    def train_images(self) -> int:
        return estimate_train_images(self.config)

    def cost(self) -> int:
        """Estimated image-steps: epochs x training images."""
        return self.config.epochs * self.train_images()

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "kind": self.kind,
            "parent": self.parent,
            "labels": self.labels,
            "config": self.config.to_dict(),
        }


@dataclass(frozen=True)
class Cell:
    """One grid entry: its labels and the id of its final stage."""

    plan: str
    group: str  # baseline | pretrain | intermediate | geometry
    pretrain_size: int
    seed: int
    stage: str
    finetune_size: int | None = None  # segmentation cells
    intermediate: str | None = None  # the intermediate stage kind, or None
    regime: str | None = None  # geometry cells: the diagnosed stage kind's key (StageKind.key)

    @property
    def condition(self) -> str:
        """The line/row a cell belongs to, e.g. 'pretrain=3000' or 'pretrain=3000+cls-intel'."""
        if self.group == "geometry":
            return self.regime or ""
        return f"pretrain={self.pretrain_size}" + (f"+{self.intermediate}" if self.intermediate else "")


@dataclass(frozen=True)
class Plan:
    name: str
    description: str = ""
    preset: str = "paper"
    model: str = "viny"
    data: str = "real"  # real (imagenet / intel / pets) | embedded (toy-*)
    data_root: str | None = None
    seeds: tuple[int, ...] = (0, 1, 2)  # run seeds: init, order, masking, augmentation
    split_seed: int = 0  # one fixed split for every run seed (the study's "fixed data splits")
    pretrain_sizes: tuple[int, ...] = (0,)  # 0 = no pre-training (Table 1)
    finetune_sizes: tuple[int, ...] = FINETUNE_SIZES
    plain: bool = True  # final-stage cells without an intermediate stage (Tables 1 / A2)
    # Stage kinds between pre-training and the final stage: one set of cells per kind (Table A3: cls-intel)
    intermediate: tuple[str, ...] = ()
    intermediate_without_pretrain: bool = False  # also intermediate -> final from scratch (not in the paper)
    # Stage kinds trained on the geometry pre-training to be diagnosed beside it (Table 2, Figs 5-6)
    geometry: tuple[str, ...] = ()
    pretrain_kind: str | None = None  # the pre-training stage's kind (None: the first of role pretrain)
    final_kind: str | None = None  # every cell's final stage's kind (None: the first of role final)
    geometry_pretrain_size: int | None = (
        None  # None: the largest pre-train size of the plan (else 200k / 3000)
    )
    test_size: int = 1000
    epochs_scale: float = 1.0
    # stage kind -> {TrainConfig field or option of the kind's regime (Regime.Options): value}
    overrides: dict = field(default_factory=dict, hash=False)
    # The roles whose stages a chain's cells share: the study's grid trains one pre-training and one
    # intermediate stage per (size, seed) for all fine-tune sizes; without "intermediate" each cell gets
    # its own intermediate stage, an independent draw (TrainConfig.draw), as the authors' code trained
    # CLS-Intel inside every fine-tune run; without "pretrain" its own pre-training too.
    shared: tuple[str, ...] = SHARED_ROLES
    # A free stage graph ([[stages]] tables, see GraphStage); when given, the grid keys above are unused.
    stages: tuple = field(default=(), hash=False)

    def describe(self) -> str:
        if self.stages:
            graph = ", ".join(
                f"{g.name}={g.kind}" + (f"<-{g.parent}" if g.parent else "") for g in self.stages
            )
            return (
                f"{self.name}: preset {self.preset}, model {self.model}, {self.data} data, seeds "
                f"{list(self.seeds)} (split seed {self.split_seed}), stages {graph}"
                + (f", epochs x{self.epochs_scale:g}" if self.epochs_scale != 1 else "")
            )
        return (
            f"{self.name}: preset {self.preset}, model {self.model}, {self.data} data, seeds {list(self.seeds)} "
            f"(split seed {self.split_seed}), "
            f"pre-train sizes {list(self.pretrain_sizes)}, fine-tune sizes {list(self.finetune_sizes)}, "
            f"plain={self.plain}, intermediate={_kinds_text(self.intermediate)}, "
            f"geometry={_kinds_text(self.geometry)}"
            + (f", epochs x{self.epochs_scale:g}" if self.epochs_scale != 1 else "")
            + (f", shared={list(self.shared)}" if tuple(self.shared) != SHARED_ROLES else "")
        )


def _kinds_text(kinds: tuple[str, ...]) -> str:
    return "/".join(kinds) or "none"


# A plan's datasets: the real ones (imagenet / intel / pets) or their embedded stand-ins (toy-*).
DATA_KINDS = ("real", "embedded")

PLAN_FIELDS = {f.name for f in dataclasses.fields(Plan)}

# What each plan key holds, checked (with_options) before a plan is built: one line per bad value,
# naming the key and where it came from. "counts": a list of whole numbers; "seeds": a count or a list.
PLAN_VALUE_KINDS = {
    "name": "text",
    "description": "text",
    "preset": "text",
    "model": "text",
    "data": "text",
    "data_root": "text",
    "seeds": "seeds",
    "split_seed": "whole",
    "pretrain_sizes": "counts",
    "finetune_sizes": "counts",
    "plain": "flag",
    "intermediate": "kinds",
    "intermediate_without_pretrain": "flag",
    "geometry": "kind list",
    "pretrain_kind": "text",
    "final_kind": "text",
    "geometry_pretrain_size": "whole",
    "test_size": "whole",
    "epochs_scale": "number",
    "overrides": "tables",
    "stages": "stage tables",
    "shared": "roles",
}
assert set(PLAN_VALUE_KINDS) == PLAN_FIELDS, "every Plan field needs its kind of value here"
_KIND_WORDS = {
    "text": "a string in quotes",
    "whole": "a whole number, e.g. 1000",
    "flag": "true or false",
    "number": "a number, e.g. 0.5",
    "counts": "a list of whole numbers, e.g. [250, 500, 1000]",
    "seeds": "a list of whole numbers, e.g. [0, 1, 2], or a count of seeds, e.g. 3",
    "tables": "tables of settings per stage kind, e.g. [overrides.finetune] with lr = 0.001",
    "roles": 'a list of the roles whose stages the cells share: [], ["pretrain"] or ["pretrain", "intermediate"]',
    "stage tables": '[[stages]] tables, each with name = "..." and kind = "...", e.g. [[stages]] name = "pre" '
    'kind = "pretrain" sizes = [3000]',
    "kinds": 'true or false, or a stage kind or a list of them, e.g. ["cls-intel"]',
    "kind list": 'true or false, or a list of stage kinds, e.g. ["cls-intel", "cls-pets", "spatial"]',
}
# What ``true`` means for these keys in a plan file written before plans listed their stage kinds.
_STUDY_KINDS = {"intermediate": STUDY_INTERMEDIATE, "geometry": STUDY_GEOMETRY}
# A plan's name goes into file names (DIR/plan-NAME.json): letters, digits, '_' and '-' only.
_PLAN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")


def _is_whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fits(kind: str, value) -> bool:
    if kind == "text":
        return isinstance(value, str)
    if kind == "whole":
        return _is_whole(value)
    if kind == "flag":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "counts":
        return isinstance(value, list | tuple) and all(_is_whole(v) for v in value)
    if kind == "seeds":
        return _is_whole(value) or (isinstance(value, list | tuple) and all(_is_whole(v) for v in value))
    if kind in ("kinds", "kind list"):
        names = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        return isinstance(value, bool) or names or (kind == "kinds" and isinstance(value, str))
    if kind == "roles":
        return isinstance(value, list | tuple) and all(v in SHARED_ROLES for v in value)
    if kind == "stage tables":
        return isinstance(value, list | tuple) and all(isinstance(v, dict | GraphStage) for v in value)
    return isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())  # tables


def check_plan_values(values: dict, where: str) -> None:
    """Each value of ``values`` (plan keys) of the kind its key holds; a VinyError naming the key,
    the value and ``where`` it came from otherwise. A float where a whole number belongs is refused,
    never truncated."""
    for key, value in values.items():
        kind = PLAN_VALUE_KINDS.get(key)
        if kind is not None and value is not None and not _fits(kind, value):
            raise VinyError(f"{where}: {key} = {value!r} must be {_KIND_WORDS[kind]}")


def get_plan(name: str) -> Plan:
    if name not in PLANS:
        raise VinyError(f"unknown plan {name!r}; choose one of {', '.join(PLANS)} or pass --plan-file x.toml")
    return PLANS[name]


class ShippedPlans(Mapping):
    """The plan files of a folder by name (the file's stem), each read when first asked for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._plans: dict[str, Plan] = {}

    def _names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.toml"))

    def __getitem__(self, name: str) -> Plan:
        if name not in self._plans:
            if name not in self._names():
                raise KeyError(name)
            self._plans[name] = load_plan_file(self.folder / f"{name}.toml", check_cells=False)
        return self._plans[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (self.folder / f"{name}.toml").is_file()


# The study's plans, one TOML file each: a new file there is a new named plan.
PLAN_FOLDER = Path(__file__).resolve().parent.parent / "resources" / "plans"
PLANS = ShippedPlans(PLAN_FOLDER)


def parse_sizes(text: str | None, what: str) -> tuple[int, ...] | None:
    """'0,500,3000' or '45k,100k' -> (0, 500, 3000) / (45000, 100000)."""
    if text is None:
        return None
    out = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        scale = 1000 if part.lower().endswith("k") else 1
        try:
            out.append(int(float(part[:-1] if scale > 1 else part) * scale))
        except ValueError:
            raise VinyError(
                f"{what} must be comma-separated counts like 0,500,3000 or 45k,100k; got {text!r}"
            ) from None
    if not out or any(v < 0 for v in out):
        raise VinyError(f"{what} must be non-negative counts; got {text!r}")
    return tuple(sorted(set(out)))


def with_options(plan: Plan, where: str | None = None, **options) -> Plan:
    """Narrow or scale a plan. ``seeds`` may be a count (seeds 0..N-1) or a sequence of seeds; every
    option left as None keeps the plan's value. ``where`` names the options' source in errors
    (default: "plan NAME")."""
    where = where or f"plan {plan.name}"
    changes = {k: v for k, v in options.items() if v is not None}
    unknown = set(changes) - PLAN_FIELDS
    if unknown:
        raise VinyError(f"{where}: unknown plan options {sorted(unknown)}")
    check_plan_values(changes, where)
    if "seeds" in changes:
        s = changes["seeds"]
        changes["seeds"] = tuple(range(s)) if isinstance(s, int) else tuple(int(x) for x in s)
    for key in ("pretrain_sizes", "finetune_sizes"):
        if key in changes:
            changes[key] = tuple(sorted({int(v) for v in changes[key]}))
    for key, study in _STUDY_KINDS.items():
        if key in changes:
            value = changes[key]
            value = (study if value else ()) if isinstance(value, bool) else value
            changes[key] = (value,) if isinstance(value, str) else tuple(value)
    if "shared" in changes:
        changes["shared"] = tuple(r for r in SHARED_ROLES if r in changes["shared"])
    if "stages" in changes:
        changes["stages"] = tuple(graph_stage(s, where) for s in changes["stages"])
    grid = sorted(set(changes) & GRID_KEYS)
    if grid and (changes.get("stages") or plan.stages):
        raise VinyError(
            f"{where}: {', '.join(grid)} belong to grid plans; a plan with [[stages]] lists its stages, "
            "with their sizes, itself (leave these keys out, or drop [[stages]])"
        )
    if "overrides" in changes:
        merged = {k: dict(v) for k, v in plan.overrides.items()}
        for kind, values in changes["overrides"].items():
            merged.setdefault(kind, {}).update(values)
        changes["overrides"] = merged
    new = dataclasses.replace(plan, **changes)
    validate_plan(new, where)
    return new


def load_plan_file(path: str | Path, *, check_cells: bool = True, **cli_options) -> Plan:
    """A plan written as TOML. Keys are Plan fields; ``base = "mini"`` starts from a named plan (default:
    an empty plan named after the file); ``intermediate`` and ``geometry`` list stage kinds;
    ``[overrides.KIND]`` sets TrainConfig fields and the regime's options (by name) of a stage kind. CLI options given beside
    ``--plan-file`` win over the file. ``check_cells``: refuse a plan without cells (it would run
    nothing)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, as a package (a dependency on Python 3.10)
        import tomli as tomllib
    path = Path(path)
    where = f"plan file {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise VinyError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise VinyError(f"{where} is a folder; give a TOML file (see docs/experiments.md)") from None
    except OSError as e:
        raise VinyError(f"cannot read {where} ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise VinyError(
            f"{where} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise VinyError(f"{where} is not valid TOML: {e}") from None
    if not doc:
        raise VinyError(
            f'{where} is empty (no keys), so its plan would run nothing; give at least base = "mini" or '
            "the plan's keys (docs/experiments.md)"
        )
    base_name = doc.pop("base", None)
    if base_name is not None and not isinstance(base_name, str):
        raise VinyError(f"{where}: base = {base_name!r} must be a named plan in quotes: {', '.join(PLANS)}")
    base = get_plan(base_name) if base_name else Plan(name=path.stem, pretrain_sizes=())
    unknown = set(doc) - PLAN_FIELDS
    if unknown:
        raise VinyError(
            f"{where}: unknown keys {sorted(unknown)}; known: base, {', '.join(sorted(PLAN_FIELDS))}"
        )
    doc.setdefault("name", path.stem if base_name is None else base.name)
    plan = with_options(base, where, **doc)
    plan = with_options(plan, where, **cli_options)
    if check_cells and plan.stages and not expand(plan)[1]:
        raise VinyError(
            f"{where}: its [[stages]] make no cells, so it would run nothing; a stage of role final is a cell "
            "(or set cell = true, or diagnose = true, on a stage)"
        )
    if check_cells and not expand(plan)[1]:
        raise VinyError(
            f"{where}: its plan has no cells, so it would run nothing (pretrain_sizes = "
            f"{list(plan.pretrain_sizes)}, finetune_sizes = {list(plan.finetune_sizes)}, plain = "
            f"{str(plan.plain).lower()}, intermediate = {list(plan.intermediate)}, geometry = "
            f"{list(plan.geometry)}); e.g. set pretrain_sizes = [0] for Table 1's cells"
        )
    return plan


def validate_plan(plan: Plan, where: str | None = None) -> None:
    """Values of the right range (their kinds: ``check_plan_values``); ``where`` names their source in
    errors (default: "plan NAME")."""
    repeated = sorted({s for s in plan.seeds if list(plan.seeds).count(s) > 1})
    checks = [
        (
            bool(_PLAN_NAME.fullmatch(plan.name)),
            f"name = {plan.name!r} is not a plan name: use letters, digits, '_' and '-' only (at most 64; "
            'it names the sweep\'s plan-NAME.json), e.g. name = "small-study"',
        ),
        (
            plan.preset in SCHEDULE_PRESETS,
            f"unknown preset {plan.preset!r}; choose one of {', '.join(SCHEDULE_PRESETS)}",
        ),
        (plan.data in DATA_KINDS, f"data must be 'real' or 'embedded', not {plan.data!r}"),
        (len(plan.seeds) >= 1, "a plan needs at least one seed"),
        (all(s >= 0 for s in plan.seeds), "seeds must be >= 0"),
        (not repeated, f"seeds {list(plan.seeds)} repeat {repeated}; give each seed once"),
        (plan.split_seed >= 0, "--split-seed must be >= 0"),
        (all(n >= 1 for n in plan.finetune_sizes), "fine-tune sizes must be >= 1"),
        (all(n >= 0 for n in plan.pretrain_sizes), "pre-train sizes must be >= 0"),
        (plan.epochs_scale > 0, "--epochs-scale must be > 0"),
        (plan.test_size >= 1, "test_size must be >= 1"),
        (
            plan.geometry_pretrain_size is None or plan.geometry_pretrain_size >= 1,
            f"geometry_pretrain_size = {plan.geometry_pretrain_size} must be >= 1 (the images the diagnosed "
            "encoders are pre-trained on; leave it out for the plan's largest pre-train size)",
        ),
    ]
    where = where or f"plan {plan.name}"
    for ok, message in checks:
        if not ok:
            raise VinyError(f"{where}: {message}")
    placed = [(k, "intermediate", "intermediate") for k in plan.intermediate]
    placed += [(k, "geometry", "intermediate") for k in plan.geometry]
    placed += [(plan.pretrain_kind, "pretrain_kind", "pretrain"), (plan.final_kind, "final_kind", "final")]
    for kind, key, role in placed:
        if kind is None:
            continue
        if kind not in STAGE_KINDS:
            raise VinyError(
                f"{where}: {key} names the unknown stage kind {kind!r}; choose from {', '.join(STAGE_KINDS)} "
                "(a plugin registers its own: kinds.register_stage_kind)"
            )
        if STAGE_KINDS.get(kind).role != role:
            raise VinyError(
                f"{where}: {key} names {kind!r}, a stage kind of role {STAGE_KINDS.get(kind).role}; "
                f"{key} takes kinds of role {role}"
            )
    _validate_graph(plan.stages, where)
    for kind, values in plan.overrides.items():
        if kind not in STAGE_KINDS:
            raise VinyError(
                f"{where}: overrides for unknown stage kind {kind!r}; choose from {', '.join(STAGE_KINDS)}"
            )
        _check_override_keys(values, STAGE_KINDS.get(kind).regime, f"{where}: overrides.{kind}")


def _check_override_keys(values: dict, regime: str, what: str) -> None:
    """Settings a plan may give a stage of ``regime``: TrainConfig fields it does not decide itself, and
    the regime's options by their own names, each of the right kind."""
    settable = {f.name for f in dataclasses.fields(TrainConfig)} - FORBIDDEN_OVERRIDES - {"regime_options"}
    options = set(option_defaults(regime))
    bad = set(values) & (FORBIDDEN_OVERRIDES | {"regime_options"})
    if bad:
        raise VinyError(
            f"{what} cannot set {sorted(bad)} (the plan decides regime, seed, sizes, init, model, preset and "
            "data_root; a regime option is set by its own name, e.g. mixup = 0.1)"
        )
    for name in sorted(set(values) - settable - options):
        raise VinyError(f"{what}: {not_an_option(regime, name)}")
    try:
        check_regime_options(regime, {k: v for k, v in values.items() if k in options})
    except VinyError as e:
        raise VinyError(f"{what}: {e}") from None


def describe_labels(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items() if v is not None)


def geometry_pretrain_size(plan: Plan) -> int:
    if plan.geometry_pretrain_size is not None:
        return plan.geometry_pretrain_size
    positive = [n for n in plan.pretrain_sizes if n > 0]
    if positive:
        return max(positive)
    return 200_000 if plan.data == "real" else 3000


def stage_id(cfg: TrainConfig, parent: str | None) -> str:
    identity = {k: v for k, v in cfg.to_dict().items() if k not in ID_EXCLUDED and k != "regime_options"}
    # Every stage id stays what it was when the field did not exist (and so every sweep folder planned
    # before): TrainConfig once had an always-empty ``extra`` field, hashed still; the regime's options
    # are hashed flat, as when they were fields of every config: the two every config held then
    # (config.HASHED_BEFORE) always, at their old value for a regime without them; every other option
    # only where it is not its default (the value runs trained with before it existed, so a regime that
    # gains an option keeps its ids); and a regime's own default augmentation is hashed as the "crop"
    # every config recorded then.
    identity["extra"] = {}
    for key, before in ADDED_FIELDS.items():  # TrainConfig fields added later, at their old value
        if identity.get(key) == before:
            del identity[key]
    defaults = option_defaults(cfg.regime)
    identity.update(HASHED_BEFORE)
    identity.update(
        {k: v for k, v in cfg.regime_options.items() if k in HASHED_BEFORE or v != defaults.get(k, MISSING)}
    )
    if identity.get("augment") == REGIMES.get(cfg.regime).augments[0]:
        identity["augment"] = "crop"
    blob = json.dumps({"config": identity, "parent": parent}, sort_keys=True, default=str)
    return f"{cfg.regime}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def scaled(cfg: TrainConfig, scale: float) -> TrainConfig:
    """Epochs and milestones multiplied by ``scale`` (rounded, at least 1)."""
    if scale == 1:
        return cfg
    return dataclasses.replace(
        cfg,
        epochs=max(1, round(cfg.epochs * scale)),
        milestones=tuple(max(1, round(m * scale)) for m in cfg.milestones),
    )


def make_stage(
    plan: Plan,
    kind: str,
    seed: int,
    parent: Stage | None,
    train_size: int | None,
    labels: dict,
    phase: str | None = None,
    config: dict | None = None,
) -> Stage:
    """One stage of ``kind``: the plan's settings, its overrides for the kind, then ``config`` (a graph
    stage's own TrainConfig values)."""
    stage_kind = STAGE_KINDS.get(kind)
    values = {
        "dataset": stage_kind.dataset_for(plan.data),
        "phase": phase or stage_kind.phase,
        **plan.overrides.get(kind, {}),
        **(config or {}),
    }
    if "milestones" in values and values["milestones"] is not None:
        values["milestones"] = tuple(values["milestones"])
    cfg = TrainConfig(
        regime=stage_kind.regime,
        preset=plan.preset,
        model=plan.model,
        data_root=plan.data_root,
        seed=seed,
        split_seed=plan.split_seed,
        train_size=train_size,
        test_size=plan.test_size,
        **values,
    ).resolved()
    cfg = scaled(cfg, plan.epochs_scale)
    cfg.validate()
    parent_id = parent.id if parent else None
    return Stage(id=stage_id(cfg, parent_id), kind=kind, config=cfg, parent=parent_id, labels=labels)


def _check_embedded_sizes(plan: Plan) -> None:
    stream = dataset_spec(
        STAGE_KINDS.get(plan.pretrain_kind or first_of_role("pretrain")).dataset_for("embedded")
    )
    pets_name = STAGE_KINDS.get(plan.final_kind or first_of_role("final")).dataset_for("embedded")
    unlabeled, pets = stream.max_size - plan.test_size, dataset_spec(pets_name).fixed_size
    too_big = [n for n in plan.pretrain_sizes if n > unlabeled]
    if plan.geometry and geometry_pretrain_size(plan) > unlabeled:
        too_big.append(geometry_pretrain_size(plan))
    if too_big:
        raise VinyError(
            f"plan {plan.name}: pre-train sizes {too_big} exceed the {unlabeled} training images the embedded "
            f"{stream.name} stream allows; scale them down (e.g. --pretrain-sizes 0,3000,30000) or use --data real"
        )
    pool = pets - plan.test_size
    if max(plan.finetune_sizes, default=0) > pool:
        raise VinyError(
            f"plan {plan.name}: fine-tune sizes up to {max(plan.finetune_sizes)} exceed the {pool} {pets_name} images "
            f"left after the {plan.test_size}-image test set; use e.g. --finetune-sizes 250,500,1000"
        )


def expand(plan: Plan) -> tuple[list[Stage], list[Cell]]:
    """All stages the plan needs, each once, parents before children, and its cells."""
    validate_plan(plan)
    if plan.stages:
        return _expand_graph(plan)
    if plan.data == "embedded":
        _check_embedded_sizes(plan)
    stages: dict[str, Stage] = {}
    cells: list[Cell] = []
    pretrain_kind = plan.pretrain_kind or first_of_role("pretrain")
    final_kind = plan.final_kind or first_of_role("final")

    def add(stage: Stage) -> Stage:
        return stages.setdefault(stage.id, stage)

    def chain(seed: int, pretrain_size: int, intermediate: str | None, cell: int = 0) -> Stage | None:
        """The upstream stages of a chain; ``cell`` (a fine-tune size) draws its own copy of each stage
        of a role the plan does not share (``Plan.shared``)."""
        parent = None
        labels = {"pretrain_size": pretrain_size, "seed": seed}

        def draw(role: str) -> dict | None:
            return None if role in plan.shared or not cell else {"draw": cell}

        if pretrain_size > 0:
            parent = add(
                make_stage(
                    plan, pretrain_kind, seed, None, pretrain_size, dict(labels), config=draw("pretrain")
                )
            )
        if intermediate:
            parent = add(
                make_stage(plan, intermediate, seed, parent, None, dict(labels), config=draw("intermediate"))
            )
        return parent

    for seed in plan.seeds:
        for pretrain_size in plan.pretrain_sizes:
            variants: list[str | None] = [None] if plan.plain else []
            if pretrain_size > 0 or plan.intermediate_without_pretrain:
                variants += plan.intermediate
            for intermediate in variants:
                group = "intermediate" if intermediate else ("baseline" if pretrain_size == 0 else "pretrain")
                for n in plan.finetune_sizes:
                    parent = chain(seed, pretrain_size, intermediate, cell=n)  # shared stages: one id
                    labels = {
                        "pretrain_size": pretrain_size,
                        "seed": seed,
                        "intermediate": intermediate,
                        "finetune_size": n,
                    }
                    stage = add(make_stage(plan, final_kind, seed, parent, n, labels))
                    cells.append(Cell(plan.name, group, pretrain_size, seed, stage.id, n, intermediate))
        if plan.geometry:
            size = geometry_pretrain_size(plan)
            pre = chain(seed, size, None)
            cells.append(
                Cell(plan.name, "geometry", size, seed, pre.id, regime=STAGE_KINDS.get(pretrain_kind).key)
            )
            for kind in plan.geometry:
                # The stages trained to be diagnosed run the geometry schedule (config.GEOMETRY: the
                # study's code trains them 20 epochs without a scheduler), apart from Table A3's CLS-Intel.
                labels = {"pretrain_size": size, "seed": seed, "geometry": True}
                stage = add(make_stage(plan, kind, seed, pre, None, labels, phase="geometry"))
                cells.append(
                    Cell(plan.name, "geometry", size, seed, stage.id, regime=STAGE_KINDS.get(kind).key)
                )
    return list(stages.values()), cells


# Plan keys that shape a grid; a plan with [[stages]] lists its stages instead.
GRID_KEYS = {
    "pretrain_sizes",
    "finetune_sizes",
    "plain",
    "intermediate",
    "intermediate_without_pretrain",
    "geometry",
    "pretrain_kind",
    "final_kind",
    "geometry_pretrain_size",
    "shared",
}


@dataclass(frozen=True)
class GraphStage:
    """One ``[[stages]]`` table of a plan file: a stage kind trained on top of ``parent`` (the name of an
    earlier table; none: from scratch), once per run seed and per entry of ``sizes`` (training images;
    none: the kind's whole training split). ``config``: its own TrainConfig values, over the plan's
    ``[overrides.KIND]``; ``phase``: its schedule row (default: the kind's). ``cell``: its runs are results
    cells (default: the kinds of role final); ``diagnose``: they are geometry cells, diagnosed beside the
    pre-training they descend from (Table 2, Figs 5-6)."""

    name: str
    kind: str
    parent: str | None = None
    sizes: tuple[int | None, ...] = (None,)
    phase: str | None = None
    config: dict = field(default_factory=dict, hash=False)
    cell: bool | None = None
    diagnose: bool = False


_GRAPH_KEYS = {f.name for f in dataclasses.fields(GraphStage)}


def graph_stage(table, where: str) -> GraphStage:
    """A GraphStage from one ``[[stages]]`` table, each key of the kind it holds."""
    if isinstance(table, GraphStage):
        return table
    what = f"{where}: [[stages]] {table.get('name', '(no name)')!r}"
    unknown = set(table) - _GRAPH_KEYS
    if unknown:
        raise VinyError(f"{what}: unknown keys {sorted(unknown)}; known: {', '.join(sorted(_GRAPH_KEYS))}")
    for key in ("name", "kind"):
        if not isinstance(table.get(key), str):
            raise VinyError(f'{what}: {key} = "..." (a string in quotes) is required')
    checks = {
        "parent": lambda v: isinstance(v, str),
        "phase": lambda v: isinstance(v, str),
        "sizes": lambda v: isinstance(v, list) and v and all(_is_whole(n) and n >= 1 for n in v),
        "config": lambda v: isinstance(v, dict),
        "cell": lambda v: isinstance(v, bool),
        "diagnose": lambda v: isinstance(v, bool),
    }
    for key, ok in checks.items():
        if key in table and not ok(table[key]):
            raise VinyError(
                f"{what}: {key} = {table[key]!r} is not valid (see docs/experiments.md, graph plans)"
            )
    values = dict(table)
    if "sizes" in values:
        values["sizes"] = tuple(values["sizes"])
    return GraphStage(**values)


def _validate_graph(stages: tuple, where: str) -> None:
    """Unique names, registered kinds, parents named before their children, valid config keys."""
    seen: set[str] = set()
    for g in stages:
        what = f"{where}: [[stages]] {g.name!r}"
        if not _PLAN_NAME.fullmatch(g.name) or g.name in seen:
            raise VinyError(f"{what}: a stage name must be unique and use letters, digits, '_' and '-' only")
        if g.kind not in STAGE_KINDS:
            raise VinyError(
                f"{what}: unknown stage kind {g.kind!r}; choose from {', '.join(STAGE_KINDS)} "
                "(a plugin registers its own: kinds.register_stage_kind)"
            )
        if g.parent is not None and g.parent not in seen:
            raise VinyError(
                f"{what}: parent {g.parent!r} is not a stage named above it; list a stage after its parent"
            )
        if g.phase is not None and g.phase not in PHASES:
            raise VinyError(f"{what}: phase {g.phase!r} is not one of {', '.join(PHASES)}")
        _check_override_keys(g.config, STAGE_KINDS.get(g.kind).regime, what)
        seen.add(g.name)


def _expand_graph(plan: Plan) -> tuple[list[Stage], list[Cell]]:
    """The stages and cells of a plan with [[stages]]: each table once per seed, per size and per run of
    its parent. A run's labels read its chain as a grid's do (the pre-training's size, the intermediate
    kind, its own size), so results rows and the report treat both kinds of plans alike, and a graph
    that spells out a grid plan gives the grid's stage ids."""
    stages: dict[str, Stage] = {}
    cells: list[Cell] = []
    for seed in plan.seeds:
        # per table: (its run, what its children inherit: the pre-train size and the intermediate kind)
        runs: dict[str, list[tuple[Stage, int, str | None]]] = {}
        for g in plan.stages:
            role = STAGE_KINDS.get(g.kind).role
            parents = runs[g.parent] if g.parent else [(None, 0, None)]
            runs[g.name] = []
            for parent, pretrain_size, intermediate in parents:
                for size in g.sizes:
                    if role == "pretrain":
                        pretrain_size = size or estimate_train_images(
                            make_stage(plan, g.kind, seed, parent, None, {}, g.phase, g.config).config
                        )
                    labels = {"pretrain_size": pretrain_size, "seed": seed}
                    if role == "final":
                        labels.update(intermediate=intermediate, finetune_size=size)
                    elif g.diagnose and role != "pretrain":
                        labels["geometry"] = True
                    stage = make_stage(plan, g.kind, seed, parent, size, labels, g.phase, g.config)
                    stage = stages.setdefault(stage.id, stage)
                    inherited = intermediate or (g.kind if role == "intermediate" else None)
                    runs[g.name].append((stage, pretrain_size, inherited))
                    if g.diagnose:
                        regime = STAGE_KINDS.get(g.kind).key
                        cells.append(
                            Cell(plan.name, "geometry", pretrain_size, seed, stage.id, regime=regime)
                        )
                    elif g.cell if g.cell is not None else role == "final":
                        group = "intermediate" if inherited else ("pretrain" if pretrain_size else "baseline")
                        cells.append(Cell(plan.name, group, pretrain_size, seed, stage.id, size, inherited))
    return list(stages.values()), cells


def estimate_train_images(cfg: TrainConfig) -> int:
    """How many training images a stage sees per epoch (real datasets: approximate)."""
    if cfg.train_size is not None:
        return cfg.train_size
    spec = dataset_spec(cfg.dataset)
    if spec.held_out == "stream":
        return spec.size
    total = spec.size
    if total is None:
        return 0  # a folder of unknown size: counted as 0 in estimates
    if spec.held_out == "own":
        return total  # its training split; the test split is separate
    if spec.held_out == "fixed":
        return max(total - cfg.test_size, 0)
    return total - min(cfg.test_size, total // 5)
