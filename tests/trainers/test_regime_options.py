"""Regimes own their options (Regime.Options, a dataclass): `viny train REGIME` builds its flags from it,
TrainConfig.regime_options holds the values, config.json records them (and a config.json of an older
viny, with every regime's options as flat keys, still reads), --resume compares them and a plan's
``[overrides.KIND]`` sets them."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Literal

import pytest
from typer.testing import CliRunner

from viny_probe.cli import app
from viny_probe.cli.train import RegimeCommands
from viny_probe.config import TrainConfig
from viny_probe.errors import VinyError
from viny_probe.experiments.plans import expand, load_plan_file
from viny_probe.registry import REGIMES
from viny_probe.trainers import Regime, loop

WIDE = {"COLUMNS": "250"}

# A config.json as viny wrote it before the regimes owned their options (commit 19b49e3: the resolved
# `TrainConfig(regime="segment", preset="authors", model="tiny", epochs=1, batch_size=8, train_size=16,
# test_size=8, device="cpu")`): every regime's options flat, those of other regimes at their defaults.
OLD_SEGMENT = {
    "regime": "segment", "preset": "authors", "model": "tiny", "dataset": "toy-pets", "data_root": None,
    "epochs": 1, "lr": 0.002, "weight_decay": 0.0001, "gamma": 0.5, "milestones": [70, 90, 95],
    "batch_size": 8, "seed": 0, "split_seed": 0, "train_size": 16, "test_size": 8, "init": None,
    "targets": "trimap", "phase": "finetune", "mixup": 0.0, "augment": "flip-contrast",
    "mask_token_std": 0.02, "inputs": "raw", "position_softmax": True, "cls_in_sequence": False,
    "on_error": "skip", "device": "cpu", "precision": "fp32", "workers": 0, "compile": False,
    "micro_batch": 0,
}  # fmt: skip
OLD_SEGMENT_FLAGS = [
    "--preset", "authors", "--model", "tiny", "--epochs", "1", "--batch-size", "8", "--train-size", "16",
    "--test-size", "8", "--device", "cpu",
]  # fmt: skip


def invoke(args, **kw):
    return CliRunner().invoke(app, args, prog_name="viny", **kw)


@dataclass(frozen=True)
class KnobOptions:
    strength: float = field(default=0.5, metadata={"help": "how hard", "range": (0, 1, False)})
    loud: bool = field(default=True, metadata={"help": "say so"})
    colour: Literal["red", "blue"] = field(default="red", metadata={"help": "which colour"})
    steps: Literal[2, 4] = field(default=4, metadata={"help": "how many steps"})


class Knobs(Regime):
    """A regime with options of every kind (nothing is trained: run_training is replaced)."""

    name = "knobs"
    description = "Test regime with options."
    Options = KnobOptions


class Plain(Regime):
    name = "plain"
    description = "Test regime without options."


def flags(regime: str) -> dict[str, object]:
    """Every spelling of every option of `viny train REGIME` -> the option."""
    built = RegimeCommands(name="train").get_command(None, regime)
    return {
        name: p
        for p in built.params
        if p.param_type_name == "option"
        for name in [*p.opts, *p.secondary_opts]
    }


def captured(monkeypatch) -> list[TrainConfig]:
    seen: list[TrainConfig] = []
    monkeypatch.setattr("viny_probe.cli.train.run_training", lambda cfg, *a, **k: seen.append(cfg))
    return seen


def test_a_regimes_flags_are_the_fields_of_its_options_dataclass(monkeypatch):
    """`viny train knobs` offers one flag per field of Knobs.Options beyond the flags every regime has
    (a bool as --flag/--no-flag, a Literal as a choice, each with its help and default), and a field
    added to the dataclass is a flag at once; the values given reach TrainConfig.regime_options typed
    as the dataclass says (the Literal[2, 4] an int). Mutants applied once, each failing this test:
    _make_command building the flags from classify's Options instead of the regime's own; option_value
    leaving a Literal's value as the parser's string."""
    with REGIMES.registered("plain", Plain), REGIMES.registered("knobs", Knobs):
        common = set(flags("plain"))
        own = set(flags("knobs")) - common
        assert own == {"--strength", "--loud", "--no-loud", "--colour", "--steps"}
        shown = " ".join(invoke(["train", "knobs", "-h"], env=WIDE).output.replace("│", " ").split())
        assert "how hard (default: 0.5)" in shown and "say so (default: true)" in shown
        assert "[red|blue]" in shown.replace("<", "[").replace(">", "]")

        seen = captured(monkeypatch)
        args = ["train", "knobs", "--strength", "0.25", "--no-loud", "--colour", "blue", "--steps", "2"]
        res = invoke(args)
        assert res.exit_code == 0, res.output
        assert seen[-1].regime_options == {"strength": 0.25, "loud": False, "colour": "blue", "steps": 2}
        assert type(seen[-1].regime_options["steps"]) is int
        assert invoke(["train", "knobs"]).exit_code == 0 and seen[-1].regime_options == {}  # the preset's

        more = dataclasses.make_dataclass(
            "MoreKnobs",
            [("extra_turns", int, field(default=3, metadata={"help": "turns more"}))],
            bases=(KnobOptions,),
            frozen=True,
        )
        monkeypatch.setattr(Knobs, "Options", more)
        assert set(flags("knobs")) - common == own | {"--extra-turns"}
        assert invoke(["train", "knobs", "--extra-turns", "5"]).exit_code == 0
        assert seen[-1].regime_options == {"extra_turns": 5}
        resolved = seen[-1].resolved()
        assert resolved.options == more(extra_turns=5)  # the others at their declared defaults


def test_a_regime_option_out_of_its_range_or_choices_is_one_line_naming_its_flag():
    """The dataclass's metadata range and Literal choices are checked where every config is: the CLI,
    plans and the Python API alike."""
    with REGIMES.registered("knobs", Knobs):
        with pytest.raises(
            VinyError, match=r"^--strength must be a finite number between 0 and 1 \(got 2\.0\)$"
        ):
            TrainConfig(regime="knobs", strength=2.0).resolved()
        with pytest.raises(VinyError, match=r"^--steps must be 2 or 4$"):
            TrainConfig(regime="knobs", steps=3).resolved()
        with pytest.raises(VinyError, match="--mixup does not apply to `viny train knobs`: only classify"):
            TrainConfig(regime="knobs", mixup=0.1).resolved()


def test_an_old_config_json_reads_as_the_run_it_was(tmp_path):
    """A config.json of an older viny (every regime's options flat) reads with the regime's own options
    in regime_options and the others dropped (the regime never read them), compares equal to today's
    resolution of the same run, and --resume accepts it; today's config.json nests them. Mutant applied
    once, failing this test: from_dict dropping every flat key (the run's raw inputs and position
    softmax read as the defaults: differences listed)."""
    old = TrainConfig.from_dict(OLD_SEGMENT)
    assert old.regime_options == {"inputs": "raw", "position_softmax": True}
    today = TrainConfig(
        regime="segment",
        **{k: OLD_SEGMENT[k] for k in ("preset", "model", "epochs")},
        batch_size=8,
        train_size=16,
        test_size=8,
        device="cpu",
        resize="bilinear",
    ).resolved()  # fmt: skip  (authors resizes nearest since; the old run did not)
    assert old.differences(today) == [] and old == today
    assert today.to_dict()["regime_options"] == {"inputs": "raw", "position_softmax": True}
    assert "mixup" not in today.to_dict() and TrainConfig.from_dict(today.to_dict()) == today
    older = {k: v for k, v in OLD_SEGMENT.items() if k not in ("inputs", "position_softmax")}
    assert TrainConfig.from_dict(older).regime_options == {"inputs": "normalized", "position_softmax": False}
    (tmp_path / "config.json").write_text(json.dumps(OLD_SEGMENT))
    assert loop._prepare_run_dir(tmp_path, today, resume=True) is None  # no checkpoint yet: accepted


def test_resume_refuses_a_changed_regime_option_naming_it(tmp_path):
    """`viny train segment --resume` with another --position-softmax than the run in --out (an old
    config.json) is refused before any training, naming the option and both values. Mutant applied
    once, failing this test: differences() leaving regime_options out of the comparison (the run
    resumed with the other option)."""
    (tmp_path / "config.json").write_text(json.dumps(OLD_SEGMENT))
    res = invoke(["train", "segment", *OLD_SEGMENT_FLAGS, "--no-position-softmax", "--resume",
                  "-o", str(tmp_path)])  # fmt: skip
    assert isinstance(res.exception, VinyError), res.output
    assert "position_softmax: True -> False" in str(res.exception)
    res = invoke(["train", "classify", "--mixup", "0.2", "--model", "tiny", "--resume", "-o", str(tmp_path)])
    assert isinstance(res.exception, VinyError) and "mixup: None -> 0.2" in str(res.exception)


def test_a_plan_override_sets_a_regime_option_of_its_stage(tmp_path):
    """``[overrides.KIND]`` sets an option of the kind's regime by its name: it reaches the stage's
    config and its id (an option left at its default keeps the id); an option of another regime is
    one line naming the file, the kind and the regimes that take it. Mutant applied once, failing this
    test: make_stage passing only TrainConfig fields of the overrides (the options were lost)."""
    plain = {s.kind: s for s in expand(load_plan_file(_plan(tmp_path, "")))[0]}
    text = "[overrides.cls-intel]\nmixup = 0.3\n[overrides.finetune]\nposition_softmax = true\n"
    stages = expand(load_plan_file(_plan(tmp_path, text)))[0]
    by_kind = {s.kind: s for s in stages}
    assert by_kind["cls-intel"].config.options.mixup == 0.3
    assert all(s.config.options.position_softmax for s in stages if s.kind == "finetune")
    assert by_kind["cls-intel"].id != plain["cls-intel"].id and by_kind["pretrain"].id == plain["pretrain"].id
    same = {
        s.kind: s.id
        for s in expand(load_plan_file(_plan(tmp_path, "[overrides.cls-intel]\nmixup = 0.0\n")))[0]
    }
    assert same["cls-intel"] == plain["cls-intel"].id
    with pytest.raises(
        VinyError, match=r"overrides\.pretrain: --mixup does not apply to `viny train simmim`"
    ):
        load_plan_file(_plan(tmp_path, "[overrides.pretrain]\nmixup = 0.1\n"))
    with pytest.raises(VinyError, match=r"overrides\.finetune: --inputs must be normalized or raw"):
        load_plan_file(_plan(tmp_path, '[overrides.finetune]\ninputs = "imagenet"\n'))


def _plan(tmp_path, overrides: str):
    path = tmp_path / "plan.toml"
    path.write_text(
        f'base = "mini"\nseeds = [0]\npretrain_sizes = [3000]\nfinetune_sizes = [250]\n{overrides}'
    )
    return path
