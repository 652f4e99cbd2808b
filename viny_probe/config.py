"""Typed run configuration with presets: `paper` is Table A1 exactly, `authors` the values of the study's
own code where they differ from Table A1, `quick` a short CPU schedule (docs/fidelity.md)."""

from __future__ import annotations

import dataclasses
import hashlib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields

from .checks import check_range, max_workers
from .data.cache import DecodeOptions
from .data.decode import RESIZE_FILTERS
from .data.spec import dataset_spec
from .errors import VinyError
from .registry import REGIMES

# The schedule rows of a preset. Each regime names its own by default (``Regime.phase``); "geometry"
# is the schedule of the intermediate stages trained only to be diagnosed (Table 2, Figs 5-6): plans
# ask for it by name.
PHASES = ("pretrain", "intermediate", "geometry", "finetune")
# Batch augmentations a regime may offer (each regime lists its own in ``Regime.augments``, its default
# first): crop = RandomResizedCrop(0.67-1) + flip; flip = horizontal flip only; flip-contrast = flip +
# contrast jitter 0.3 (the study's code on Intel, Pets segmentation and its Spatial stage).
AUGMENTS = ("crop", "flip", "flip-contrast")
CLASSIFY_AUGMENTS = AUGMENTS  # the CLI's --augment choices (kept under its old name)
INPUTS = ("normalized", "raw")  # ImageNet-normalised pixels, or raw [0, 1] (the code's Pets stages)
SPATIAL_TARGETS = ("trimap", "patch-label")  # spatial: the trimap class of each patch, or the image's class
# SimMIM's crops: from the cached square (the image squashed to the model's size, viny's) or from the
# image with its aspect ratio kept at up to SOURCE_SIDE px (the study's code crops the original JPEG).
CROP_SOURCES = ("square", "original")
SOURCE_SIDE = 192
PRECISIONS = ("fp32", "bf16")
PRECISION_CHOICES = ("auto", *PRECISIONS)  # auto: resolved by the run for its device (precision.py)


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    weight_decay: float
    gamma: float
    milestones: tuple[int, ...]
    batch_size: int = 64


# The geometry stages (CLS-Intel, CLS-Pets and Spatial trained to be diagnosed for Table 2): the
# study's code trains these variants for 20 epochs without a scheduler, and its Table 2 came from
# them; the paper's text gives no schedule for them. viny uses the code's in every full preset.
GEOMETRY = Schedule(epochs=20, lr=8e-4, weight_decay=0.0, gamma=1.0, milestones=())

# Table A1. Batch size is not given in the paper; 64 is viny's choice (documented in docs/).
PAPER = {
    "pretrain": Schedule(epochs=100, lr=1e-4, weight_decay=0.05, gamma=0.1, milestones=(50, 85)),
    "intermediate": Schedule(epochs=200, lr=8e-4, weight_decay=0.0, gamma=0.1, milestones=(180, 190)),
    "geometry": GEOMETRY,
    "finetune": Schedule(epochs=100, lr=2e-3, weight_decay=1e-4, gamma=0.5, milestones=(70, 90, 95)),
}

# The study's code where it differs from Table A1 (reference-notes.md): pre-training at lr 1e-3 with
# gamma 0.5. Its other recipe differences are in RECIPES below.
AUTHORS = {
    **PAPER,
    "pretrain": Schedule(epochs=100, lr=1e-3, weight_decay=0.05, gamma=0.5, milestones=(50, 85)),
}

# Short CPU schedules: same optimiser family, milestones at the same fractions of training, learning
# rates raised where a handful of epochs would otherwise barely move the weights (pre-training uses the
# authors' code value 1e-3 instead of Table A1's 1e-4).
QUICK = {
    "pretrain": Schedule(epochs=12, lr=1e-3, weight_decay=0.05, gamma=0.1, milestones=(6, 10)),
    "intermediate": Schedule(epochs=10, lr=8e-4, weight_decay=0.0, gamma=0.1, milestones=(9,)),
    "finetune": Schedule(epochs=30, lr=2e-3, weight_decay=1e-4, gamma=0.5, milestones=(21, 27, 29)),
    "geometry": Schedule(epochs=10, lr=8e-4, weight_decay=0.0, gamma=1.0, milestones=()),
}

SCHEDULE_PRESETS = {"paper": PAPER, "authors": AUTHORS, "quick": QUICK}

# Recipe values beyond the schedule row: viny's own by default (the defaults of the regime's options
# dataclass, ``Regime.Options``, and its first ``Regime.augments``); a preset may set others per
# (regime, dataset, phase), None matching every dataset or phase, and a dataset matching its embedded
# stand-in (DatasetSpec.stand_in) too. A recipe may also set schedule values (lr, weight_decay): the
# study's code trains each of Table 2's stages with its own optimiser settings. docs/fidelity.md states
# every value below in a table that tests/test_fidelity_doc.py checks against these dictionaries.
RECIPES: dict[str, dict[tuple[str, str | None, str | None], dict]] = {
    "authors": {
        # SimMIM: the mask token drawn from a standard normal (viny: std 0.02); the crop cut from the
        # original's aspect ratio (the code's RandomResizedCrop on the decoded JPEG; torchvision's
        # default bilinear filter resizes it, so the filter stays bilinear).
        ("simmim", None, None): {"mask_token_std": 1.0, "crop_source": "original"},
        # Table A3's CLS-Intel (main pipeline): MixUp 0.1 and the code's Intel transform (nearest
        # resize, issue 21), no crop.
        ("classify", "intel", "intermediate"): {
            "mixup": 0.1,
            "augment": "flip-contrast",
            "resize": "nearest",
        },
        # Table 2's CLS-Intel (main_intermediates.py): the same transform but torchvision's default
        # bilinear Resize, no MixUp, Adam lr 8e-4.
        ("classify", "intel", "geometry"): {"mixup": 0.0, "augment": "flip-contrast", "resize": "bilinear"},
        # Table 2's CLS-Pets: AdamW lr 1e-3 with torch's default weight decay 0.01, (bilinear) resize + flip.
        ("classify", "pets", None): {
            "lr": 1e-3,
            "weight_decay": 0.01,
            "augment": "flip",
            "resize": "bilinear",
        },
        # Table 2's Spatial: Adam lr 5e-4, raw [0, 1] inputs, flip + contrast jitter 0.3, images and
        # trimaps resized together with nearest.
        ("spatial", "pets", None): {
            "lr": 5e-4,
            "augment": "flip-contrast",
            "inputs": "raw",
            "resize": "nearest",
        },
        # Segmentation fine-tuning: raw [0, 1] inputs (flip + contrast jitter 0.3 in every preset),
        # images and trimaps resized together with nearest, and the code's scores: log_softmax over each
        # class map's pixel positions, in the loss and the prediction alike.
        ("segment", "pets", None): {"inputs": "raw", "position_softmax": True, "resize": "nearest"},
    },
}
SCHEDULE_KEYS = ("lr", "weight_decay")  # schedule values a recipe may set
# TrainConfig fields (not a regime's options) a recipe sets, with viny's value: every regime decodes its
# images with this filter.
RECIPE_FIELDS = {"resize": "bilinear"}


def recipe(preset: str, regime: str, dataset: str, phase: str | None = None) -> dict:
    """The recipe values of ``preset`` for ``regime`` on ``dataset`` (or on the dataset it stands in
    for) in schedule row ``phase``: ``augment`` and every option of the regime (``Regime.Options``),
    plus the schedule values it sets."""
    values = {"augment": REGIMES.get(regime).augments[0], **RECIPE_FIELDS, **option_defaults(regime)}
    for (r, d, p), override in RECIPES.get(preset, {}).items():
        if r == regime and (d is None or dataset in (d, dataset_spec(d).stand_in)) and p in (None, phase):
            values.update(override)
    return values


# ---- A regime's own options ----------------------------------------------------------------------
# Each regime declares its options as a dataclass (``Regime.Options``): one typed field per option with
# its default (viny's; a preset's recipe may set another) and ``metadata={"help": ...}`` (the line `viny
# train REGIME -h` shows), optionally ``"range": (low, high, low_open)`` for a number. `viny train
# REGIME` builds its flags from it (``--mask-token-std``; a bool is ``--flag/--no-flag``, a Literal a
# choice), TrainConfig.regime_options holds the values, config.json records them, --resume compares
# them and a plan's ``[overrides.KIND]`` sets them. A config.json written before an option existed reads
# as its default (so an option added later must default to what the regime did before it).


@dataclass(frozen=True)
class NoOptions:
    """The options of a regime that declares none."""


@dataclass(frozen=True)
class OptionSpec:
    """One field of a regime's options dataclass, as the CLI and the checks read it."""

    name: str
    kind: type  # bool, int, float or str (the annotation without its None)
    default: object
    help: str
    choices: tuple | None = None  # a Literal's values
    range: tuple | None = None  # (low, high, low_open) for check_range

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def options_class(regime: str) -> type:
    """The options dataclass of a registered regime (NoOptions where it declares none)."""
    return getattr(REGIMES.get(regime), "Options", NoOptions)


def option_specs(options: type) -> list[OptionSpec]:
    """The fields of an options dataclass, typed (string annotations resolved). A field that is not one
    bool, int, float, str or Literal of them, or has no default, is a VinyError naming it: `viny train`
    could not offer it as a flag."""
    hints = typing.get_type_hints(options)
    specs = []
    for f in fields(options):
        kind, choices = hints[f.name], None
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = args[0] if len(args) == 1 else kind
        if typing.get_origin(kind) is typing.Literal:
            choices = typing.get_args(kind)
            kind = type(choices[0])
        default = f.default if f.default is not MISSING else MISSING
        if kind not in (bool, int, float, str) or default is MISSING:
            raise VinyError(
                f"option {f.name!r} of {options.__name__} must be a bool, int, float, str or Literal with a "
                "default, so that `viny train` can offer it as a flag"
            )
        if f.name in TRAIN_CONFIG_FIELDS:
            raise VinyError(f"option {f.name!r} of {options.__name__} has the name of a TrainConfig field")
        specs.append(
            OptionSpec(f.name, kind, default, f.metadata.get("help", ""), choices, f.metadata.get("range"))
        )
    return specs


def option_defaults(regime: str) -> dict:
    """A regime's options at their declared defaults, by name."""
    return {s.name: s.default for s in option_specs(options_class(regime))}


def check_option(spec: OptionSpec, value) -> None:
    """One option's value of its kind (and range, or among its choices); else a VinyError naming its
    flag, as `viny train` spells it."""
    if spec.choices is not None:
        if type(value) is not spec.kind or value not in spec.choices:
            raise VinyError(f"{spec.flag} must be {' or '.join(str(c) for c in spec.choices)}")
    elif spec.kind is bool:
        if not isinstance(value, bool):
            raise VinyError(f"{spec.flag} must be true or false")
    elif spec.kind in (int, float):
        whole = isinstance(value, int) and not isinstance(value, bool)
        number = whole or isinstance(value, float)
        if not number or (spec.kind is int and not whole):
            raise VinyError(f"{spec.flag} must be {'a whole number' if spec.kind is int else 'a number'}")
        low, high, low_open = spec.range or (None, None, False)
        check_range(value, spec.flag, low, high, low_open)
    elif not isinstance(value, str):
        raise VinyError(f"{spec.flag} must be a string")


def check_regime_options(regime: str, values: dict) -> None:
    """Every value in ``values`` an option of ``regime`` and of the right kind: a VinyError naming the
    first one that is not (an option of another regime: which regimes take it)."""
    specs = {s.name: s for s in option_specs(options_class(regime))}
    for name, value in values.items():
        if name not in specs:
            raise VinyError(not_an_option(regime, name))
        check_option(specs[name], value)


def regimes_taking(name: str) -> list[str]:
    """The registered regimes whose options include ``name``."""
    return [r for r in REGIMES.names() if any(s.name == name for s in option_specs(options_class(r)))]


def not_an_option(regime: str, name: str) -> str:
    """The line that refuses option ``name`` for ``regime``: which regimes take it, or that none does."""
    flag = "--" + name.replace("_", "-")
    takers = regimes_taking(name)
    if not takers:
        own = ", ".join(s.flag for s in option_specs(options_class(regime))) or "none"
        return f"{flag} is no option of any regime (`viny train {regime}` takes {own})"
    listed = " and ".join([", ".join(takers[:-1]), takers[-1]] if len(takers) > 1 else takers)
    verb = "takes" if len(takers) == 1 else "take"
    return f"{flag} does not apply to `viny train {regime}`: only {listed} {verb} it; leave it out"


# TrainConfig fields added after runs were written, with the value those runs trained with: a
# config.json without them resumes and compares as the run it was, and a stage id leaves them out while
# they hold it (experiments.plans.stage_id). A regime's options need no entry: one left out of an old
# config.json reads as its default.
ADDED_FIELDS = {"resize": "bilinear", "draw": 0}

# Options every config held (and hashed into stage ids) before the regimes owned their options, with the
# value a regime without them held: experiments.plans.stage_id hashes them still, for every regime.
HASHED_BEFORE = {"targets": "trimap", "mixup": 0.0}
# The options of the built-in regimes that config.json held as flat keys of every config (each regime
# read its own; the others held their default).
FLAT_OPTION_KEYS = ("targets", "mixup", "mask_token_std", "inputs", "position_softmax")


def is_legacy_config(fields: dict) -> bool:
    """A config.json written by viny before checkpoint format 2 (CLS token in every stage, the split
    drawn from the run seed): it has no ``split_seed``."""
    return "split_seed" not in fields


@dataclass
class TrainConfig:
    """Everything that decides a run's result. Written resolved to ``config.json`` in its run folder."""

    regime: str
    preset: str = "quick"
    model: str = "viny"
    dataset: str | None = None
    data_root: str | None = None
    epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    gamma: float | None = None
    milestones: tuple[int, ...] | None = None
    batch_size: int | None = None
    seed: int = 0  # the run seed: initialisation, batch order, masking, augmentation
    split_seed: int = 0  # which images are the test set and the training subsets (fixed by default)
    # Which independent draw of a stage this is: 0 = the run seed as is. A plan that does not share a
    # stage across its cells (Plan.shared) gives each cell's copy its own draw: a run of its own, with
    # its own initialisation, order, masking and augmentation (``random_seed``).
    draw: int = 0
    train_size: int | None = None
    test_size: int = 1000
    init: str | None = None
    phase: str | None = (
        None  # schedule row: pretrain | intermediate | geometry | finetune (None: the regime's)
    )
    augment: str | None = None  # the regime's batch augmentation (Regime.augments; None: the preset's)
    # The regime's own options (its ``Regime.Options`` fields: e.g. classify's mixup, spatial's targets),
    # by name; one left out or None is the preset's. Resolved: every option of the regime. The
    # constructor also takes them flat, as before: TrainConfig(regime="classify", mixup=0.1).
    regime_options: dict = field(default_factory=dict)
    # the decode's image filter: bilinear (antialiased) | nearest (the code on Pets, joint with the
    # trimaps, and Intel) (None: the preset's)
    resize: str | None = None
    cls_in_sequence: bool = False  # the CLS token in the blocks in every stage (not the study's path)
    on_error: str = DecodeOptions.on_error
    # Execution settings: they change speed, not (beyond float noise) results; resume ignores them.
    device: str = "auto"
    precision: str = "fp32"
    workers: int = DecodeOptions.workers
    compile: bool = False
    micro_batch: int = 0  # images per forward/backward inside a batch (gradients accumulate); 0 = auto
    streams: int = 0  # micro-batches trained side by side on a CPU (trainers/streams.py); 0 = auto

    EXECUTION = ("device", "precision", "workers", "compile", "micro_batch", "streams")

    @property
    def random_seed(self) -> int:
        """The seed of the run's randomness: the run seed, or for a later draw of the same stage a seed
        in [2^30, 2^31) hashed from (seed, draw), above any run seed in use. (torch's CPU generator keeps
        only a seed's low 32 bits, so a draw must change those.)"""
        if self.draw == 0:
            return self.seed
        digest = hashlib.sha256(f"viny-draw:{self.seed}:{self.draw}".encode()).digest()
        return (1 << 30) + int.from_bytes(digest[:4], "big") % (1 << 30)

    def decoding(self, keep_aspect: bool = False) -> DecodeOptions:
        """How this run decodes its dataset's files (``load_dataset``'s ``decoding``): its image filter
        (``resize``; None, unresolved, is the default), threads and ``on_error``."""
        resize = self.resize or DecodeOptions.resize
        return DecodeOptions(resize, keep_aspect, self.workers, self.on_error)

    def resolved(self) -> TrainConfig:
        """Fill every schedule value left as None from the preset and validate."""
        regime = REGIMES.get(self.regime)  # an unknown name is a VinyError listing the registered ones
        if self.preset not in SCHEDULE_PRESETS:
            raise VinyError(f"unknown preset {self.preset!r}; choose one of {', '.join(SCHEDULE_PRESETS)}")
        phase = self.phase or regime.phase
        if phase not in PHASES:
            raise VinyError(f"unknown phase {phase!r}; choose one of {', '.join(PHASES)}")
        dataset = self.dataset or regime.default_dataset
        dataset_spec(dataset)  # an unknown dataset is a VinyError listing the registered ones
        values = recipe(self.preset, self.regime, dataset, phase)
        base = dataclasses.replace(
            SCHEDULE_PRESETS[self.preset][phase], **{k: values.pop(k) for k in SCHEDULE_KEYS if k in values}
        )
        check_regime_options(self.regime, {k: v for k, v in self.regime_options.items() if v is not None})
        options = {k: values.pop(k) for k in option_defaults(self.regime)}
        options.update({k: v for k, v in self.regime_options.items() if v is not None})
        values.update({f.name: getattr(base, f.name) for f in fields(Schedule)})
        filled = {k: (values[k] if getattr(self, k) is None else getattr(self, k)) for k in values}
        filled["milestones"] = tuple(int(m) for m in filled["milestones"])
        cfg = dataclasses.replace(self, **filled, regime_options=options, dataset=dataset, phase=phase)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Every option in its range, each check named by the `viny train` flag that sets it (one home:
        the CLI, sweeps and plan files all reach it)."""
        ranges = [
            ("--epochs", self.epochs, 1, None, False),
            ("--lr", self.lr, 0, None, True),
            ("--weight-decay", self.weight_decay, 0, None, False),
            ("--gamma", self.gamma, 0, 1, True),
            ("--batch-size", self.batch_size, 1, None, False),
            ("--micro-batch", self.micro_batch, 0, None, False),
            ("--streams", self.streams, 0, None, False),
            ("--test-size", self.test_size, 1, None, False),
            ("--seed", self.seed, 0, None, False),
            ("--split-seed", self.split_seed, 0, None, False),
            ("draw", self.draw, 0, None, False),
            ("--workers", self.workers, 0, max_workers(), False),
        ]
        if self.train_size is not None:
            ranges.append(("--train-size", self.train_size, 1, None, False))
        for flag, number, low, high, low_open in ranges:
            check_range(number, flag, low, high, low_open)
        checks = [
            (self.precision in PRECISION_CHOICES, "--precision must be auto, fp32 or bf16"),
            (
                self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"),
                "--device must be cpu, cuda or auto",
            ),
            (
                self.augment in REGIMES.get(self.regime).augments,
                f"--augment must be {' or '.join(REGIMES.get(self.regime).augments)} for {self.regime}",
            ),
            (self.resize in RESIZE_FILTERS, f"--resize must be {' or '.join(RESIZE_FILTERS)}"),
            (self.on_error in ("skip", "fail"), "--on-error must be skip or fail"),
            (list(self.milestones) == sorted(self.milestones), "--milestones must be increasing"),
        ]
        for ok, message in checks:
            if not ok:
                raise VinyError(message)
        check_regime_options(self.regime, self.regime_options)

    @property
    def options(self):
        """The regime's options as its typed dataclass (``Regime.Options``) of a resolved config."""
        return options_class(self.regime)(**self.regime_options)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(d["milestones"]) if d["milestones"] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config as config.json records it; also one an older viny wrote, with every regime's options
        as flat keys (each regime's own are read; the others, which it ignored, are dropped)."""
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if not (k == "extra" and not v)}  # a removed, always-empty field
        registered = d.get("regime") in REGIMES
        takes = set(option_defaults(d["regime"])) if registered else set()
        options = dict(d.pop("regime_options", None) or {})
        for k in FLAT_OPTION_KEYS:
            if k in d:
                flat = d.pop(k)
                if k in takes:
                    options.setdefault(k, flat)
        unknown = set(d) - known
        if unknown:
            raise VinyError(f"config has unknown fields {sorted(unknown)}")
        if d.get("lr") is not None and registered:  # a resolved config.json: fill what it did not record
            for k, v in ADDED_FIELDS.items():
                d.setdefault(k, v)
            options = {**option_defaults(d["regime"]), **options}  # options added since: their defaults
            regime = REGIMES.get(d["regime"])
            if d.get("augment") not in regime.augments:
                d["augment"] = regime.augments[0]  # recorded as "crop" by regimes that ignored it
        if d.get("milestones") is not None:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d, regime_options=options)

    def differences(self, other: TrainConfig) -> list[str]:
        """Result-relevant fields that differ (execution settings excluded), as 'name: a -> b'; a regime
        option by its own name ('mixup: 0.0 -> 0.1')."""
        a, b = _flat(self.to_dict()), _flat(other.to_dict())
        return [
            f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
            for k in [*a, *(k for k in b if k not in a)]
            if k not in self.EXECUTION and a.get(k) != b.get(k)
        ]


def _flat(d: dict) -> dict:
    """A config's dict with its regime options beside its fields."""
    d = dict(d)
    return {**d, **d.pop("regime_options", {})}


TRAIN_CONFIG_FIELDS = frozenset(f.name for f in fields(TrainConfig))
_generated_init = TrainConfig.__init__


def _init(self, *args, regime_options: dict | None = None, **values) -> None:
    # The regime's options may be given flat beside the fields, as before they moved into
    # regime_options: TrainConfig(regime="classify", mixup=0.1).
    options = dict(regime_options or {})
    options.update({k: values.pop(k) for k in [k for k in values if k not in TRAIN_CONFIG_FIELDS]})
    _generated_init(self, *args, regime_options=options, **values)


_init.__doc__ = _generated_init.__doc__
TrainConfig.__init__ = _init
