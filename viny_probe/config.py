"""Typed run configuration with presets: `paper` is Table A1 exactly, `authors` the values of the study's
own code where they differ from Table A1, `quick` a short CPU schedule (docs/fidelity.md)."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass, fields

from .checks import check_range, max_workers
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

# Recipe values beyond the schedule row: viny's own by default; a preset may set others per (regime,
# dataset, phase), None matching every dataset or phase, and a dataset matching its embedded stand-in
# (DatasetSpec.stand_in) too. A recipe may also set schedule values (lr, weight_decay): the study's
# code trains each of Table 2's stages with its own optimiser settings. ``augment`` left out here is
# the regime's first ``Regime.augments``. docs/fidelity.md states every value below in a table that
# tests/test_fidelity_doc.py checks against these dictionaries.
RECIPE_DEFAULTS = {
    "mixup": 0.0,
    "mask_token_std": 0.02,
    "inputs": "normalized",
    "position_softmax": False,
    "resize": "bilinear",
    "crop_source": "square",
}
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
RECIPE_KEYS = ("mixup", "mask_token_std", "inputs", "position_softmax", "augment", "resize", "crop_source")
SCHEDULE_KEYS = ("lr", "weight_decay")  # schedule values a recipe may set


def recipe(preset: str, regime: str, dataset: str, phase: str | None = None) -> dict:
    """The recipe values of ``preset`` for ``regime`` on ``dataset`` (or on the dataset it stands in
    for) in schedule row ``phase``: every RECIPE_KEYS value, plus the schedule values it sets."""
    values = {**RECIPE_DEFAULTS, "augment": REGIMES.get(regime).augments[0]}
    for (r, d, p), override in RECIPES.get(preset, {}).items():
        if r == regime and (d is None or dataset in (d, dataset_spec(d).stand_in)) and p in (None, phase):
            values.update(override)
    return values


# Fields added after runs were written, with the value those runs trained with: a config.json without
# them resumes and compares as the run it was.
ADDED_FIELDS = {
    "mask_token_std": 0.02,
    "inputs": "normalized",
    "position_softmax": False,
    "resize": "bilinear",
    "crop_source": "square",
    "draw": 0,
}


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
    targets: str = "trimap"  # spatial: trimap (Pets-like) or patch-label (image class on every patch)
    phase: str | None = (
        None  # schedule row: pretrain | intermediate | geometry | finetune (None: the regime's)
    )
    mixup: float | None = (
        None  # classify: MixUp alpha (None: the preset's; the authors' code used 0.1 on Intel)
    )
    augment: str | None = None  # the regime's batch augmentation (Regime.augments; None: the preset's)
    mask_token_std: float | None = None  # simmim: std of the mask token's normal init (code: 1; viny 0.02)
    inputs: str | None = None  # normalized (ImageNet) | raw [0, 1] pixels into the encoder (None: preset's)
    # segment: score each class map by log_softmax over its pixel positions before the class argmax
    # and the loss, as the study's code (None: the preset's)
    position_softmax: bool | None = None
    # the decode's image filter: bilinear (antialiased) | nearest (the code on Pets, joint with the
    # trimaps, and Intel); and SimMIM's crop source: square | original (None: the preset's)
    resize: str | None = None
    crop_source: str | None = None
    cls_in_sequence: bool = False  # the CLS token in the blocks in every stage (not the study's path)
    on_error: str = "skip"
    # Execution settings: they change speed, not (beyond float noise) results; resume ignores them.
    device: str = "auto"
    precision: str = "fp32"
    workers: int = 0
    compile: bool = False
    micro_batch: int = 0  # images per forward/backward inside a batch (gradients accumulate); 0 = auto

    EXECUTION = ("device", "precision", "workers", "compile", "micro_batch")

    @property
    def random_seed(self) -> int:
        """The seed of the run's randomness: the run seed, or for a later draw of the same stage a seed
        in [2^30, 2^31) hashed from (seed, draw), above any run seed in use. (torch's CPU generator keeps
        only a seed's low 32 bits, so a draw must change those.)"""
        if self.draw == 0:
            return self.seed
        digest = hashlib.sha256(f"viny-draw:{self.seed}:{self.draw}".encode()).digest()
        return (1 << 30) + int.from_bytes(digest[:4], "big") % (1 << 30)

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
        values.update({f.name: getattr(base, f.name) for f in fields(Schedule)})
        filled = {k: (values[k] if getattr(self, k) is None else getattr(self, k)) for k in values}
        filled["milestones"] = tuple(int(m) for m in filled["milestones"])
        cfg = dataclasses.replace(self, **filled, dataset=dataset, phase=phase)
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
            ("--test-size", self.test_size, 1, None, False),
            ("--seed", self.seed, 0, None, False),
            ("--split-seed", self.split_seed, 0, None, False),
            ("draw", self.draw, 0, None, False),
            ("--mixup", self.mixup, 0, None, False),
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
            (self.targets in SPATIAL_TARGETS, "--targets must be trimap or patch-label"),
            (
                self.augment in REGIMES.get(self.regime).augments,
                f"--augment must be {' or '.join(REGIMES.get(self.regime).augments)} for {self.regime}",
            ),
            (self.mask_token_std > 0, "--mask-token-std must be > 0"),
            (self.inputs in INPUTS, "--inputs must be normalized or raw"),
            (isinstance(self.position_softmax, bool), "--position-softmax must be true or false"),
            (self.resize in RESIZE_FILTERS, f"--resize must be {' or '.join(RESIZE_FILTERS)}"),
            (self.crop_source in CROP_SOURCES, f"--crop-source must be {' or '.join(CROP_SOURCES)}"),
            (
                self.crop_source == "square" or hasattr(REGIMES.get(self.regime), "crop_source"),
                f"--crop-source original applies to simmim only, not {self.regime}",
            ),
            (self.on_error in ("skip", "fail"), "--on-error must be skip or fail"),
            (list(self.milestones) == sorted(self.milestones), "--milestones must be increasing"),
        ]
        for ok, message in checks:
            if not ok:
                raise VinyError(message)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(d["milestones"]) if d["milestones"] is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if not (k == "extra" and not v)}  # a removed, always-empty field
        unknown = set(d) - known
        if unknown:
            raise VinyError(f"config has unknown fields {sorted(unknown)}")
        d = dict(d)
        if d.get("lr") is not None:  # a resolved config.json: fill what an older viny did not record
            for k, v in ADDED_FIELDS.items():
                d.setdefault(k, v)
            regime = REGIMES.get(d["regime"]) if d.get("regime") in REGIMES else None
            if regime is not None and d.get("augment") not in regime.augments:
                d["augment"] = regime.augments[0]  # recorded as "crop" by regimes that ignored it
        if d.get("milestones") is not None:
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    def differences(self, other: TrainConfig) -> list[str]:
        """Result-relevant fields that differ (execution settings excluded), as 'name: a -> b'."""
        a, b = self.to_dict(), other.to_dict()
        return [f"{k}: {a[k]!r} -> {b[k]!r}" for k in a if k not in self.EXECUTION and a[k] != b[k]]
