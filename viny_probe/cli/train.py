"""`viny train REGIME [options]`: one command per registered regime (viny_probe.registry.REGIMES),
generated when the command line is read, so a regime registered by any module gets its command."""

from __future__ import annotations

import inspect
from pathlib import Path

import typer
from typer.core import TyperCommand, TyperGroup

from ..config import (
    AUGMENTS,
    PHASES,
    RECIPES,
    OptionSpec,
    TrainConfig,
    not_an_option,
    option_specs,
    options_class,
    regimes_taking,
)
from ..data.cache import ON_ERROR_CHOICES, DecodeOptions
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

Augment = choices("Augment", AUGMENTS)
Phase = choices("Phase", PHASES)
OnError = choices("OnError", ON_ERROR_CHOICES)
Resize = choices("Resize", RESIZE_FILTERS)


def parse_milestones(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise VinyError(f"--milestones must be comma-separated epochs like 50,85; got {text!r}") from None


def option_parameter(regime: str, spec: OptionSpec) -> inspect.Parameter:
    """The `viny train REGIME` parameter of one field of the regime's options dataclass: a bool is
    ``--flag/--no-flag``, a Literal a choice, every value None (the preset's) unless given."""
    if spec.name in _COMMAND_ONLY:
        raise VinyError(f"option {spec.name!r} of regime {regime!r} has the name of a `viny train` option")
    recipes = any(r == regime and spec.name in v for p in RECIPES.values() for (r, _, _), v in p.items())
    shown = str(spec.default).lower() if spec.kind is bool else str(spec.default)
    help_text = f"{spec.help} (default: {shown}" + (", or the preset's recipe)" if recipes else ")")
    names = (f"{spec.flag}/--no-{spec.flag[2:]}",) if spec.kind is bool else ()
    if spec.choices is not None:
        kind = choices(f"{regime.title()}{spec.name.title()}", [str(c) for c in spec.choices])
    else:
        kind = spec.kind
    return inspect.Parameter(
        spec.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(None, *names, help=help_text),
        annotation=kind | None,
    )


def option_value(spec: OptionSpec, given):
    """The option's value from what the parser gave (a choice's Enum member back to its Literal value)."""
    if given is None or spec.choices is None:
        return given
    return {str(c): c for c in spec.choices}[value(given)]


class RegimeCommand(TyperCommand):
    """A `viny train REGIME` command: an option of another regime is refused in one line naming the
    regimes that take it (the parser would only say it does not exist)."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except Exception as error:  # the parser's NoSuchOption (of the click typer vendors: by its name)
            typed = str(getattr(error, "option_name", "")).split("=")[0]
            name = (typed[5:] if typed.startswith("--no-") else typed[2:]).replace("-", "_")
            if type(error).__name__ == "NoSuchOption" and typed.startswith("--") and regimes_taking(name):
                raise VinyError(not_an_option(self.name, name)) from None
            raise


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


# `viny train` options that are no TrainConfig field: a regime option may not take their names.
_COMMAND_ONLY = {"out", "resume", "as_json", "quiet", "options"}


def _make_command(regime: str):
    default_dataset = REGIMES.get(regime).default_dataset
    specs = option_specs(options_class(regime))

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
        augment: Augment | None = typer.Option(
            None,
            help="crop = RandomResizedCrop 0.67-1 + flip (classify, simmim); flip (classify, spatial); "
            "flip-contrast = flip + contrast jitter 0.3 (classify, spatial, segment); default: the preset's",
        ),
        resize: Resize | None = typer.Option(
            None,
            help="the image filter of the decode: bilinear (antialiased, viny's) or nearest (the study's "
            "code on Pets, jointly with the trimaps, and Intel); trimaps are always nearest; each filter "
            "has its own cache entry; default: the preset's (nearest for those stages with --preset authors)",
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
        on_error: OnError = typer.Option(
            DecodeOptions.on_error, help="what an unreadable image or a missing trimap does"
        ),
        device: str = device_option(),
        precision: Precision = typer.Option("auto", help=PRECISION_HELP),
        workers: int = typer.Option(
            DecodeOptions.workers, help="decode threads for the first read of a dataset (0 = auto)"
        ),
        compile: bool = typer.Option(
            False,
            "--compile",
            help="torch.compile the encoder (a CPU bf16 step about 1.03x eager, after up to a minute "
            "of compiling; docs/training.md)",
        ),
        micro_batch: int = typer.Option(
            0,
            help="images per forward/backward inside a batch, gradients accumulated "
            "(0 = auto: the whole batch on a GPU, about 256 MB of activations on a CPU)",
        ),
        streams: int = typer.Option(
            0,
            help="micro-batches trained side by side on a CPU, each on its share of the threads, "
            "gradients summed in order (0 = auto: 2 for micro-batches of 128 MB of activations or more "
            "where torch has 2 or more threads, else 1; 1 = one after the other; docs/training.md)",
        ),
        as_json: bool = json_option(),
        quiet: bool = quiet_option(),
        **options,
    ) -> None:
        given = {s.name: option_value(s, options[s.name]) for s in specs}
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
            augment=value(augment),
            regime_options={k: v for k, v in given.items() if v is not None},
            resize=value(resize),
            phase=value(phase),
            cls_in_sequence=cls_in_sequence,
            on_error=value(on_error),
            device=device,
            precision=value(precision),
            workers=workers,
            compile=compile,
            micro_batch=micro_batch,
            streams=streams,
        )
        run_training(cfg, out, resume, quiet, as_json)

    command.__doc__ = REGIMES.get(regime).description
    # The datasets registered when the command is built (this module's annotations are strings, read
    # in its globals: the local Enum goes in as the type itself).
    command.__annotations__["dataset"] = choices("Dataset", dataset_names()) | None
    # The regime's own options, one flag per field of its options dataclass (Regime.Options), after
    # --augment: typer reads the parameters from the signature, which **options stands in for.
    common = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    at = [p.name for p in common].index("augment") + 1
    own = [option_parameter(regime, s) for s in specs]
    command.__signature__ = inspect.Signature([*common[:at], *own, *common[at:]])
    command.__annotations__.update({p.name: p.annotation for p in own})
    return interruptible(INTERRUPTED_TRAINING)(command)


class RegimeCommands(TyperGroup):
    """The `viny train` group: its commands are the registered regimes, read when the CLI runs."""

    def list_commands(self, ctx) -> list[str]:
        return list(REGIMES.names())

    def get_command(self, ctx, name: str):
        if name not in REGIMES:
            return None
        single = typer.Typer(add_completion=False)
        single.command(name, cls=RegimeCommand)(_make_command(name))
        return typer.main.get_command(single)


train_app = typer.Typer(
    cls=RegimeCommands, help="Train one regime; every preset value can be overridden.", no_args_is_help=True
)
app.add_typer(train_app, name="train")
