"""What every `viny` command shares (viny_probe/cli/options.py): --version, shell completion, the same
-o/--out, --json and -q/--quiet on every command that writes or prints results, enumerated options
as parser-checked choices, and a Ctrl-C message that fits the command."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import viny_probe
from viny_probe.cli import app
from viny_probe.cli.options import JSON_HELP, QUIET_HELP, Background, ExportFormat, parse_device

RESULT_COMMANDS = [
    ("train", "simmim"),
    ("train", "segment"),
    ("demo",),
    ("sweep",),
    ("report",),
    ("bench",),
    ("probe",),
    ("diagnose",),
    ("similarity-map",),
    ("reconstruct",),
    ("import-checkpoint",),
    ("export",),
]


def invoke(args, **kw):
    return CliRunner().invoke(app, args, prog_name="viny", **kw)


def click_command(path: tuple[str, ...]):
    """The click command `viny PATH...` runs (the train group builds its regime commands on demand)."""
    command = typer.main.get_command(app)
    ctx = command.make_context("viny", ["--help"], resilient_parsing=True)
    for name in path:
        command = command.get_command(ctx, name)
    return command


def test_version_prints_the_package_version():
    res = invoke(["--version"])
    assert res.exit_code == 0 and res.stdout == f"viny {viny_probe.__version__}\n"


@pytest.mark.parametrize("path", RESULT_COMMANDS, ids=lambda p: " ".join(p))
def test_every_results_command_has_out_json_and_quiet_spelled_and_worded_alike(path):
    """Mutant applied once, failing this test: bench without -q/--quiet (as before this test)."""
    options = {tuple(sorted(p.opts)): p for p in click_command(path).params if p.param_type_name == "option"}
    assert ("--out", "-o") in options, f"viny {' '.join(path)} has no -o/--out"
    assert options[("--json",)].help == JSON_HELP
    assert options[("--quiet", "-q")].help == QUIET_HELP
    text = invoke([*path, "--help"], env={"COLUMNS": "250"}).output
    for name in ("--out", "-o", "--json", "--quiet", "-q"):
        assert f" {name} " in text


def test_json_prints_only_json_on_stdout(tmp_path, tiny_train_args):
    """Two real --json runs (export has its own in tests/analysis/test_export.py): train and
    import-checkpoint; stdout parses as JSON as a whole. Mutant applied once, failing this test:
    run_training without its as_json branch (the tables, no JSON)."""
    res = invoke(["train", "simmim", *tiny_train_args(), "--json", "-o", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["regime"] == "simmim" and data["final_checkpoint"].endswith("final.pt")
    assert data["last_epoch"]["epoch"] == 1 and isinstance(data["results"], dict)

    res = invoke(["export", data["final_checkpoint"], "--format", "authors", "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    res = invoke(["import-checkpoint", str(tmp_path / "a" / "encoder.pth"), "-o", str(tmp_path / "i.pt")])
    assert res.exit_code == 0 and "wrote" in res.output, res.output
    res = invoke(
        [
            "import-checkpoint",
            str(tmp_path / "a" / "encoder.pth"),
            "--heads",
            "2",
            "-o",
            str(tmp_path / "j.pt"),
            "--json",
        ]
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["out"] == str(tmp_path / "j.pt") and data["model_config"]["heads"] == 2


def test_import_checkpoint_still_takes_out_as_a_second_argument(tmp_path, tiny_train_args):
    run = invoke(["train", "simmim", *tiny_train_args(), "-o", str(tmp_path / "run")])
    assert run.exit_code == 0
    invoke(["export", str(tmp_path / "run" / "final.pt"), "--format", "authors", "-o", str(tmp_path / "a")])
    res = invoke(
        ["import-checkpoint", str(tmp_path / "a" / "encoder.pth"), str(tmp_path / "old.pt"), "--heads", "2"]
    )
    assert res.exit_code == 0 and (tmp_path / "old.pt").is_file(), res.output


CHOICES = [
    (["train", "simmim", "--precision"], "fp16", ["fp32", "bf16"]),
    (["train", "spatial", "--targets"], "mask", ["trimap", "patch-label"]),
    (["train", "classify", "--augment"], "jitter", ["crop", "flip", "flip-contrast"]),
    (["train", "segment", "--phase"], "warmup", ["pretrain", "intermediate", "geometry", "finetune"]),
    (["train", "segment", "--on-error"], "ignore", ["skip", "fail"]),
    (["train", "segment", "--preset"], "fast", ["paper", "authors", "quick"]),
    (["train", "segment", "--dataset"], "cifar", ["toy-pets", "pets"]),
    (["demo", "--device"], "gpu", ["auto", "cpu", "cuda", "cuda:N"]),
    (["bench", "--baseline"], "rotation", ["simmim", "classify", "segment", "none"]),
    (["sweep", "-o", "x", "--data"], "synthetic", ["real", "embedded"]),
    (["diagnose", "a.pt", "--background"], "corner", ["study", "most-background-corner"]),
    (["export", "a.pt", "-o", "x", "--format"], "onnx", ["viny", "authors"]),
]


@pytest.mark.parametrize("args, bad, listed", CHOICES, ids=[" ".join(c[0]) for c in CHOICES])
def test_a_wrong_choice_is_rejected_by_the_parser_listing_the_choices(args, bad, listed):
    """Mutant applied once, failing this test: `viny train --precision` typed as a plain str again
    (fp16 passed the parser and only TrainConfig refused it; --help listed no choices)."""
    res = invoke([*args, bad], env={"COLUMNS": "250"})
    assert res.exit_code == 2, res.output
    assert bad in res.output and all(f"'{c}'" in res.output for c in listed), res.output
    command = [a for a in args[:-1] if not a.endswith(".pt") and a not in ("-o", "x")]
    help_text = invoke([*command, "--help"], env={"COLUMNS": "250"}).output
    assert args[-1] in help_text and all(c in help_text for c in listed)


def test_device_takes_a_gpu_index():
    assert parse_device("cuda:1") == "cuda:1" and parse_device("auto") == "auto"
    with pytest.raises(typer.BadParameter, match="'auto', 'cpu', 'cuda', 'cuda:N'"):
        parse_device("gpu")


def test_choices_repeated_in_the_cli_agree_with_the_library():
    """The CLI repeats two analysis tuples (importing viny_probe.analysis costs every start a second)."""
    from viny_probe.analysis.export import EXPORT_FORMATS
    from viny_probe.analysis.reference import BACKGROUND_CHOICES

    assert tuple(c.value for c in Background) == BACKGROUND_CHOICES
    assert tuple(c.value for c in ExportFormat) == EXPORT_FORMATS


def test_shell_completion_is_installed_and_completes_commands_regimes_and_choices(monkeypatch):
    """Mutant applied once, failing this test: the app built with add_completion=False again."""
    # typer detects the user's shell; its test switch (read when the command is built) makes
    # --show-completion take the shell's name instead
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    script = invoke(["--show-completion", "zsh"])
    assert script.exit_code == 0 and "compdef _viny_completion viny" in script.stdout, script.output

    def complete(words: str) -> list[str]:
        env = {
            "_VINY_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
        return invoke([], env=env).stdout.split()

    assert complete("viny exp") == ["explore", "export"]
    assert complete("viny expo") == ["export"]
    assert set(complete("viny train s")) == {"simmim", "spatial", "segment"}
    assert set(complete("viny demo --precision b")) == {"bf16"}


# (args, the library function the command calls, what its Ctrl-C message must say)
INTERRUPTS = [
    (["train", "simmim", "-q"], "viny_probe.trainers.train", "--resume"),
    (["demo", "-q"], "viny_probe.demo.run_demo", "--resume"),
    (["sweep", "-o", "SW", "-q"], "viny_probe.experiments.sweep.run_sweep", "run the same command again"),
    (
        ["report", "SW"],
        "viny_probe.experiments.report.write_report",
        "run the command again to write them all",
    ),
    (["bench"], "viny_probe.perf.run_bench", "Nothing was written"),
    (["probe", "c.pt"], "viny_probe.analysis.checkpoint_probe.probe_checkpoint", "Nothing was written"),
    (
        ["diagnose", "c.pt"],
        "viny_probe.analysis.diagnose.diagnose",
        "run the command again to write them all",
    ),
    (
        ["similarity-map", "c.pt", "toy-pets:1"],
        "viny_probe.analysis.similarity_image.similarity_map_for_image",
        "write them all",
    ),
    (["reconstruct", "c.pt"], "viny_probe.analysis.reconstruct.reconstruct_images", "write them all"),
    (
        ["import-checkpoint", "a.pth"],
        "viny_probe.analysis.authors.import_authors_checkpoint",
        "Nothing was written",
    ),
    (
        ["export", "c.pt", "-o", "E"],
        "viny_probe.analysis.export.export_encoder",
        "without config.json is incomplete",
    ),
]


@pytest.mark.parametrize("args, target, says", INTERRUPTS, ids=[a[0][0] for a in INTERRUPTS])
def test_ctrl_c_says_what_fits_the_command(args, target, says, monkeypatch):
    """Only the training commands (train, demo) talk of --resume. Mutant applied once, failing this
    test: the train commands built without options.interruptible (the message was then typer's silence)."""

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    res = invoke(args)
    said = " ".join(res.output.split())  # rich wraps the line at the terminal's width
    assert res.exit_code == 130, said
    assert "interrupted." in said and says in said, said
    assert ("--resume" in said) == (args[0] in ("train", "demo")), said
