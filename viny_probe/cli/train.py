"""`viny train REGIME [options]`: one command per registered regime (viny_probe.registry.REGIMES),
generated when the command line is read, so a regime registered by any module gets its command."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.core import TyperGroup

from ..config import AUGMENTS, CROP_SOURCES, INPUTS, PHASES, SOURCE_SIDE, SPATIAL_TARGETS, TrainConfig
from ..data.cache import ON_ERROR_CHOICES
from ..data.decode import RESIZE_FILTERS
from ..data.spec import dataset_names
from ..distributed import from_environment
from ..errors import VinyError
from ..progress import console
from ..registry import REGIMES
from .app import app
from .options import (
    INTERRUPTED_TRAINING,
    PRECISION_HELP,
    PRESET_HELP,
    SEED_HELP,
    Model,
    Precision,
    Preset,
    batch_size_option,
    check_output,
    choices,
    device_option,
    interruptible,
    json_option,
    out_option,
    print_json,
    quiet_option,
    split_seed_option,
    value,
)

Targets = choices("Targets", SPATIAL_TARGETS)
Augment = choices("Augment", AUGMENTS)
Inputs = choices("Inputs", INPUTS)
Phase = choices("Phase", PHASES)
OnError = choices("OnError", ON_ERROR_CHOICES)
Resize = choices("Resize", RESIZE_FILTERS)
CropSource = choices("CropSource", CROP_SOURCES)


def parse_milestones(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise VinyError(f"--milestones must be comma-separated epochs like 50,85; got {text!r}") from None


# Options only some regimes take: option name -> (flag, the Regime attribute that says it takes it,
# what it is). A regime declares the option by having the attribute (a plugin's regime too); `viny
# train` hides the others from its --help and refuses them with the reason.
REGIME_OPTIONS = {
    "targets": ("--targets", "targets", "the spatial targets (trimap or patch-label)"),
    "mixup": ("--mixup", "mixup_alpha", "MixUp of the image labels"),
    "mask_token_std": ("--mask-token-std", "mask_token_std", "the init of SimMIM's mask token"),
    "position_softmax": ("--position-softmax", "position_softmax", "a softmax over segmentation maps"),
    "inputs": ("--inputs", "inputs", "the encoder's input normalisation"),
    "crop_source": ("--crop-source", "crop_source", "where SimMIM's RandomResizedCrop is cut from"),
}


def regimes_taking(option: str) -> list[str]:
    """The registered regimes that take ``option`` (a key of REGIME_OPTIONS)."""
    attribute = REGIME_OPTIONS[option][1]
    return [name for name in REGIMES.names() if hasattr(REGIMES.get(name), attribute)]


def refuse_options_not_taken(regime: str, given: dict) -> None:
    """A VinyError naming the first option in ``given`` (name -> value, None = not given) that
    ``regime`` does not take, and which regimes do."""
    for name, value_given in given.items():
        flag, attribute, what = REGIME_OPTIONS[name]
        if value_given is not None and not hasattr(REGIMES.get(regime), attribute):
            takers = regimes_taking(name)
            listed = " and ".join([", ".join(takers[:-1]), takers[-1]] if len(takers) > 1 else takers)
            raise VinyError(
                f"{flag} does not apply to `viny train {regime}`: it sets {what}, which only "
                f"{listed or 'no regime'} {'takes' if len(takers) == 1 else 'take'}; leave it out"
            )


def _summary_line(summary: dict) -> str:
    """``{'test_accuracy': 0.125}`` -> ``held-out: test accuracy 0.125``."""
    return "held-out: " + ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in summary.items())


def run_training(cfg: TrainConfig, out: Path | None, resume: bool, quiet: bool, as_json: bool = False):
    """Train and print the summary (``as_json``: the result as JSON on stdout); the library call behind
    every `viny train` command."""
    from ..tables import history_table
    from ..trainers import train

    out = out or Path("viny-runs") / f"{cfg.regime}-seed{cfg.seed}"
    check_output(out, "folder")
    result = train(cfg, out, resume=resume, progress=not (quiet or as_json))
    if not from_environment().is_main:
        return result  # under torchrun, rank 0 reports
    if as_json:
        print_json(
            {
                "regime": cfg.regime,
                "run_dir": result.run_dir,
                "final_checkpoint": result.final_checkpoint,
                "last_epoch": result.history[-1] if result.history else {},
                "results": result.results,
            }
        )
        return result
    if result.history:
        console.print(history_table(result.history, f"{cfg.regime}: last epoch"))
    summary = REGIMES.get(cfg.regime)().summary(result.results) if result.results else None
    if isinstance(summary, dict):  # a regime's scalars: one line, not a Python dict
        console.print(_summary_line(summary), highlight=False)
    elif summary is not None:
        console.print(summary)
    console.print(f"run folder: [bold]{result.run_dir}[/]  final checkpoint: {result.final_checkpoint}")
    return result


def _make_command(regime: str):
    default_dataset = REGIMES.get(regime).default_dataset

    def only(option: str, help: str) -> dict:
        """``help`` after the regimes that take ``option``; hidden where this regime does not."""
        return {
            "help": f"{', '.join(regimes_taking(option))} only: {help}",
            "hidden": not hasattr(REGIMES.get(regime), REGIME_OPTIONS[option][1]),
        }

    def command(
        dataset: str | None = typer.Option(None, help=f"default: embedded {default_dataset}"),
        data_root: str | None = typer.Option(
            None, envvar="VINY_DATA_ROOT", help="folder of the real dataset, or its parent"
        ),
        preset: Preset = typer.Option("quick", help=PRESET_HELP),
        model: Model = typer.Option("viny", help="viny = the study's 4.8M model; demo; tiny"),
        out: Path | None = out_option(None, "folder", "run folder (default viny-runs/REGIME-seedN)"),
        init: Path | None = typer.Option(None, help="start the encoder from this checkpoint"),
        resume: bool = typer.Option(False, help="continue the interrupted run in --out"),
        epochs: int | None = typer.Option(None),
        lr: float | None = typer.Option(None),
        weight_decay: float | None = typer.Option(None),
        milestones: str | None = typer.Option(None, help="comma-separated epochs, e.g. 50,85"),
        gamma: float | None = typer.Option(None),
        batch_size: int | None = batch_size_option(None, "images per training step (default: the preset's)"),
        seed: int = typer.Option(0, help=SEED_HELP),
        split_seed: int = split_seed_option(
            0, "and the training subsets; the same for every --seed by default, as the study's fixed splits"
        ),
        train_size: int | None = typer.Option(None, help="training images (default: all available)"),
        test_size: int = typer.Option(1000, help="fixed held-out test images"),
        targets: Targets | None = typer.Option(
            None,
            **only("targets", "trimap = the trimap class of each patch; patch-label = the image's class"),
        ),
        mixup: float | None = typer.Option(
            None,
            **only("mixup", "MixUp alpha (default: the preset's; 0, or 0.1 on Intel with --preset authors)"),
        ),
        augment: Augment | None = typer.Option(
            None,
            help="crop = RandomResizedCrop 0.67-1 + flip (classify, simmim); flip (classify, spatial); "
            "flip-contrast = flip + contrast jitter 0.3 (classify, spatial, segment); default: the preset's",
        ),
        mask_token_std: float | None = typer.Option(
            None,
            **only(
                "mask_token_std",
                "std of the mask token's normal init (default: the preset's; 0.02, or 1 with --preset "
                "authors, the study's code)",
            ),
        ),
        position_softmax: bool | None = typer.Option(
            None,
            "--position-softmax/--no-position-softmax",
            **only(
                "position_softmax",
                "log_softmax over each class map's pixel positions before the loss and the prediction, as "
                "the study's code (default: the preset's; on with --preset authors)",
            ),
        ),
        inputs: Inputs | None = typer.Option(
            None,
            **only(
                "inputs",
                "normalized = ImageNet mean/std; raw = [0, 1] pixels (the study's code in Spatial and "
                "segmentation); default: the preset's",
            ),
        ),
        resize: Resize | None = typer.Option(
            None,
            help="the image filter of the decode: bilinear (antialiased, viny's) or nearest (the study's "
            "code on Pets, jointly with the trimaps, and Intel); trimaps are always nearest; each filter "
            "has its own cache entry; default: the preset's (nearest for those stages with --preset authors)",
        ),
        crop_source: CropSource | None = typer.Option(
            None,
            **only(
                "crop_source",
                "square = crop the cached model-size image (squashed to a square); original = crop the "
                f"image with its aspect ratio kept (longer side at most {SOURCE_SIDE} px, its own cache "
                "entry), then resize to the model's size, as the study's code; default: the preset's "
                "(original with --preset authors)",
            ),
        ),
        phase: Phase | None = typer.Option(
            None,
            help="which schedule row of the preset (geometry: 20 epochs, no scheduler, the study's Table 2 "
            "stages); default: the regime's",
        ),
        cls_in_sequence: bool = typer.Option(
            False,
            "--cls-in-sequence",
            help="run the CLS token through the blocks in every stage (viny before checkpoint format 2; "
            "not the study's path, which prepends it only for classification)",
        ),
        on_error: OnError = typer.Option("skip", help="what an unreadable image or a missing trimap does"),
        device: str = device_option(),
        precision: Precision = typer.Option("auto", help=PRECISION_HELP),
        workers: int = typer.Option(0, help="decode threads for the first read of a dataset (0 = auto)"),
        compile: bool = typer.Option(False, "--compile", help="torch.compile the encoder"),
        micro_batch: int = typer.Option(
            0,
            help="images per forward/backward inside a batch, gradients accumulated "
            "(0 = auto: the whole batch on a GPU, about 256 MB of activations on a CPU)",
        ),
        as_json: bool = json_option(),
        quiet: bool = quiet_option(),
    ) -> None:
        refuse_options_not_taken(
            regime,
            {
                "targets": targets,
                "mixup": mixup,
                "mask_token_std": mask_token_std,
                "position_softmax": position_softmax,
                "inputs": inputs,
                "crop_source": crop_source,
            },
        )
        cfg = TrainConfig(
            regime=regime,
            preset=value(preset),
            model=value(model),
            dataset=value(dataset),
            data_root=data_root,
            epochs=epochs,
            lr=lr,
            weight_decay=weight_decay,
            milestones=parse_milestones(milestones),
            gamma=gamma,
            batch_size=batch_size,
            seed=seed,
            split_seed=split_seed,
            train_size=train_size,
            test_size=test_size,
            init=str(init) if init else None,
            **({} if targets is None else {"targets": value(targets)}),
            mixup=mixup,
            augment=value(augment),
            mask_token_std=mask_token_std,
            inputs=value(inputs),
            position_softmax=position_softmax,
            resize=value(resize),
            crop_source=value(crop_source),
            phase=value(phase),
            cls_in_sequence=cls_in_sequence,
            on_error=value(on_error),
            device=device,
            precision=value(precision),
            workers=workers,
            compile=compile,
            micro_batch=micro_batch,
        )
        run_training(cfg, out, resume, quiet, as_json)

    command.__doc__ = REGIMES.get(regime).description
    # The datasets registered when the command is built (this module's annotations are strings, read
    # in its globals: the local Enum goes in as the type itself).
    command.__annotations__["dataset"] = choices("Dataset", dataset_names()) | None
    return interruptible(INTERRUPTED_TRAINING)(command)


class RegimeCommands(TyperGroup):
    """The `viny train` group: its commands are the registered regimes, read when the CLI runs."""

    def list_commands(self, ctx) -> list[str]:
        return list(REGIMES.names())

    def get_command(self, ctx, name: str):
        if name not in REGIMES:
            return None
        single = typer.Typer(add_completion=False)
        single.command(name)(_make_command(name))
        return typer.main.get_command(single)


train_app = typer.Typer(
    cls=RegimeCommands, help="Train one regime; every preset value can be overridden.", no_args_is_help=True
)
app.add_typer(train_app, name="train")
