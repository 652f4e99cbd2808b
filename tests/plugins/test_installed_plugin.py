"""The example plugin installed as a package: the real `viny` executable of a fresh venv finds it.

How the venv is built (about 10 s, no download, nothing compiled): ``python -m venv --without-pip``
from the main venv's interpreter, plus one ``.pth`` file in the new venv's site-packages naming the
main venv's site-packages, so torch and the other heavy dependencies are imported from there (a
``.pth`` line only appends that folder to sys.path: the main venv's own editable viny finder is not
run, and the new venv's site-packages comes first, so ``import viny_probe`` is the installed copy).
The main venv's pip then installs into it (``pip --python NEW``) with ``--no-deps
--no-build-isolation --no-index``: viny (from a copy of this worktree's sources, so no build/ folder
lands in the tree) and examples/viny-example-plugin. Every command then runs ``NEW/bin/viny`` with
PYTHONPATH and VINY_PLUGINS removed from its environment, so only the entry point can bring the
plugin in. The whole module takes about 2-3 minutes on 2 shared cores (module-scoped venv).

Mutants applied once each (the named tests failed, then reverted):
- ``main()`` without ``_load_plugins()`` (cli/__init__.py): test_regime_is_a_train_command and every
  later test fail (no `rotation`, no `example-shapes`).
- ``load_plugins`` skipping the entry points (``entry_points=False`` by default):
  test_regime_is_a_train_command and test_plugin_file_and_env_var (its "rotation") fail.
- ``take_plugin_options`` returning no plugins: test_plugin_file_and_env_var fails (--plugin part).
- the PluginWarning re-raised instead of warned: test_broken_plugin_is_one_line fails.
- the example's ``result_columns`` line dropped (rotation.py): test_plugin_stage_runs_in_a_sweep_and_report
  fails (no test_rotation_accuracy column in results.csv).
- the example's stage kind left unregistered (stages.py not imported by its __init__):
  test_plugin_stage_runs_in_a_sweep_and_report fails (the plan file names an unknown stage kind).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.plugins.shapes import make_shapes

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "viny-example-plugin"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX venv layout")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin-venv")
    env = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "main-venv-heavy-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = root / "viny-src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "viny_probe", source / "viny_probe", ignore=shutil.ignore_patterns("__pycache__"))
    plugin = shutil.copytree(
        EXAMPLE, root / "plugin-src", ignore=shutil.ignore_patterns("__pycache__", "build")
    )
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q"]
    pip += ["--no-deps", "--no-build-isolation", "--no-index", str(source), str(plugin)]
    subprocess.run(pip, check=True, env=_clean_env(root), cwd=root)
    return env


def _clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VINY_PLUGINS", "VINY_DATA_ROOT")}
    env["VINY_CACHE_DIR"] = str(tmp / "cache")
    env["COLUMNS"] = "200"
    return env


def viny(venv: Path, *args: str, cwd: Path, extra_env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**_clean_env(cwd), **(extra_env or {})}
    return subprocess.run(
        [str(venv / "bin" / "viny"), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


TINY = ["--model", "tiny", "--epochs", "1", "--batch-size", "8", "--train-size", "16", "--test-size", "8"]


def test_regime_is_a_train_command(venv: Path, tmp_path: Path) -> None:
    shown = viny(venv, "train", "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "rotation" in shown.stdout and "example plugin" in shown.stdout
    assert "warning" not in shown.stdout + shown.stderr


def test_regime_trains_alone_and_in_a_fleet_and_is_diagnosed(venv: Path, tmp_path: Path) -> None:
    run = viny(venv, "train", "rotation", *TINY, "-o", "rot", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    result = json.loads(run.stdout)
    assert result["regime"] == "rotation" and "test_rotation_accuracy" in result["results"]

    # `viny train` trains one run; a fleet is the library's train_fleet (`viny sweep --fleet` once
    # plans are data), run by the venv's python with the plugins loaded as `viny` loads them.
    script = """
import json, sys
from viny_probe.plugins import load_plugins
load_plugins()
from viny_probe.config import TrainConfig
from viny_probe.trainers.fleet import train_fleet
cfgs = [TrainConfig(regime="rotation", model="tiny", epochs=1, batch_size=8, train_size=16, test_size=8,
                    seed=s, device="cpu") for s in (0, 1)]
out = train_fleet([(c, "fleet-%d" % c.seed, False) for c in cfgs], progress=False)
print(json.dumps([[m.fleet_size, m.error is None, m.result.results] for m in out]))
"""
    fleet = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script],
        capture_output=True,
        text=True,
        env=_clean_env(tmp_path),
        cwd=tmp_path,
    )
    assert fleet.returncode == 0, fleet.stderr
    members = json.loads(fleet.stdout.strip().splitlines()[-1])
    assert [m[:2] for m in members] == [[2, True], [2, True]]
    assert all("test_rotation_accuracy" in m[2] for m in members)

    data = make_shapes(tmp_path / "example-shapes", count=16)
    probe = viny(
        venv, "probe", "rot/final.pt", "--dataset", "example-shapes", "--data-root", str(tmp_path),
        "--test-size", "6", "--probe-images", "10", "--test-images", "6", "--allow-overlap", cwd=tmp_path,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stdout + probe.stderr
    shown = probe.stdout + probe.stderr  # the tables go to the console (stderr)
    assert "high-norm token share" in shown  # the plugin's diagnostic
    assert "disc accuracy %" in shown and "square accuracy %" in shown  # its dataset's classes
    assert data.is_dir()

    diagnose = viny(
        venv, "diagnose", "rot/final.pt", "--dataset", "example-shapes", "--data-root", str(tmp_path),
        "--test-size", "6", "--probe-images", "10", "--test-images", "6", "--allow-overlap", "-o", "diag",
        cwd=tmp_path,
    )  # fmt: skip
    assert diagnose.returncode == 0, diagnose.stdout + diagnose.stderr
    assert "high-norm %" in (tmp_path / "diag" / "table2.md").read_text()


PLUGIN_FILE = """
from viny_probe.trainers import register
from viny_probe.trainers.simmim import SimMIM

@register
class FileRegime(SimMIM):
    name = "{name}"
    description = "a regime from a plugin file"
"""


def test_plugin_file_and_env_var(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "file_plugin.py").write_text(PLUGIN_FILE.format(name="from-file"))
    (tmp_path / "env_plugin.py").write_text(PLUGIN_FILE.format(name="from-env"))
    shown = viny(
        venv, "--plugin", "file_plugin.py", "train", "--help", cwd=tmp_path,
        extra_env={"VINY_PLUGINS": str(tmp_path / "env_plugin.py")},
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "from-file" in shown.stdout and "from-env" in shown.stdout and "rotation" in shown.stdout
    (tmp_path / "mod_dir").mkdir()
    (tmp_path / "mod_dir" / "modplugin.py").write_text(PLUGIN_FILE.format(name="from-module"))
    by_module = viny(
        venv, "train", "--help", "--plugin=modplugin", cwd=tmp_path,
        extra_env={"PYTHONPATH": str(tmp_path / "mod_dir")},
    )  # fmt: skip
    assert by_module.returncode == 0, by_module.stderr
    assert "from-module" in by_module.stdout


def test_broken_plugin_is_one_line(venv: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("import no_such_package_for_viny\n")
    shown = viny(venv, "--plugin", "broken.py", "train", "--help", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in (shown.stdout + shown.stderr).splitlines() if "broken" in line]
    assert lines == [
        f"warning: plugin {tmp_path / 'broken.py'} failed to load: ModuleNotFoundError: "
        "No module named 'no_such_package_for_viny'"
    ]
    assert "rotation" in shown.stdout  # viny, and the installed plugin, still run


PLAN = """
base = "mini"
name = "rotation-study"
model = "tiny"
seeds = [0]
pretrain_sizes = [64]
finetune_sizes = [32]
intermediate = ["rotation"]
test_size = 16
epochs_scale = 0.05
"""


def test_plugin_stage_runs_in_a_sweep_and_report(venv: Path, tmp_path: Path) -> None:
    """A plan file names the plugin's stage kind; `viny sweep` trains it between pre-training and
    segmentation, its regime's declared result reaches results.csv, and `viny report` tables it."""
    (tmp_path / "rotation.toml").write_text(PLAN)
    sweep = viny(venv, "sweep", "--plan-file", "rotation.toml", "-o", "sw", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    with open(tmp_path / "sw" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_kind = {row["kind"]: row for row in rows}
    assert set(by_kind) == {"pretrain", "rotation", "finetune"}
    rotation = by_kind["rotation"]
    accuracy = float(rotation["test_rotation_accuracy"])  # the plugin regime's own column
    assert rotation["parent"] == by_kind["pretrain"]["stage"]
    chained = [r for r in rows if r["kind"] == "finetune" and r["intermediate"] == "rotation"]
    assert len(chained) == 1 and chained[0]["parent"] == rotation["stage"]

    report = viny(venv, "report", "sw", "-o", "rep", cwd=tmp_path)
    assert report.returncode == 0, report.stdout + report.stderr
    text = (tmp_path / "rep" / "report.md").read_text()
    table = text[text.index("| test_rotation_accuracy |") :].splitlines()
    assert f"| {accuracy:.4f} |" in table[2], table[:3]


TOKENS_SCRIPT = """
import json, torch
from viny_probe.plugins import load_plugins
load_plugins()
from viny_probe.analysis.sources import load_model
tm = load_model("tv:vit_b_16,img_size=32")
images = torch.rand(2, 3, 32, 32)
ours = tm.tokens(images, [6, 12])
model = tm.module
x = model._process_input(images)
x = torch.cat([model.class_token.expand(2, -1, -1), x], dim=1) + model.encoder.pos_embedding
for block in model.encoder.layers[:6]:
    x = block(x)
full = model(images)  # torchvision's own forward: the class token's logits
print(json.dumps({
    "grid": [tm.patch_size, tm.image_size, tm.depth, tm.dim],
    "block6": (ours[6] - x[:, 1:]).abs().max().item(),
    "final": (ours[12] - model.encoder(torch.cat([model.class_token.expand(2, -1, -1),
                                                   model._process_input(images)], 1))[:, 1:]).abs().max().item(),
    "logits": list(full.shape),
}))
"""


def test_plugin_model_source_by_name(venv: Path, tmp_path: Path) -> None:
    """The plugin's `tv:` source: the installed `viny probe` takes a torchvision ViT by name, its tokens
    are torchvision's own (block 6 by running the blocks by hand, block 12 the encoder's normed output;
    mutant applied once: ``prefix_tokens=0`` in tv_source.py: loading then fails viny's own token-count
    check (5 tokens for a 2 x 2 grid) and this test failed), and an unknown name is one line listing the ViTs."""
    script = subprocess.run(
        [str(venv / "bin" / "python"), "-c", TOKENS_SCRIPT],
        capture_output=True, text=True, env=_clean_env(tmp_path), cwd=tmp_path,
    )  # fmt: skip
    assert script.returncode == 0, script.stderr
    got = json.loads(script.stdout.strip().splitlines()[-1])
    assert got["grid"] == [16, 32, 12, 768]
    assert got["block6"] < 1e-5 and got["final"] < 1e-5, got

    probe = viny(
        venv, "probe", "tv:vit_b_16,img_size=32", "--dataset", "toy-pets", "--test-size", "6",
        "--probe-images", "8", "--test-images", "6", "--json", cwd=tmp_path,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stdout + probe.stderr
    result = json.loads(probe.stdout)
    assert result["model"]["name"] == "vit_b_16" and result["model"]["grid"] == [2, 2], result["model"]
    assert result["model"]["notes"] == ["random init (torch seed 0)"]
    assert result["layers"]["final"]["probe"]["num_test_patches"] == 6 * 4

    wrong = viny(venv, "probe", "tv:resnet50", "--dataset", "toy-pets", cwd=tmp_path)
    assert wrong.returncode != 0
    assert "not a torchvision ViT" in wrong.stderr and "vit_b_16" in wrong.stderr
    assert "Traceback" not in wrong.stderr
