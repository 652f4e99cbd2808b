"""Start-up: a command imports only what it uses (transformers, matplotlib and scikit-learn are heavy)."""

import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("transformers", "matplotlib", "sklearn")
ROOT = Path(__file__).resolve().parents[2]


def _loaded_after(code: str) -> list[str]:
    """The heavy libraries loaded after running ``code`` in a fresh interpreter."""
    report = f"print('LOADED:' + ','.join(m for m in {HEAVY!r} if m in sys.modules), flush=True)"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\n{report}\n"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip().splitlines()[-1]
    assert line.startswith("LOADED:"), done.stdout
    return [m for m in line.removeprefix("LOADED:").split(",") if m]


def test_help_imports_no_heavy_library():
    code = (
        "sys.argv = ['viny', '--help']\n"
        "from viny_probe.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert _loaded_after(code) == []


def test_the_probe_path_imports_no_heavy_library():
    code = (
        "from viny_probe.analysis.checkpoint_probe import probe_checkpoint\n"
        "from viny_probe.analysis.registry import registered\n"
        "registered()\n"
        "import viny_probe.analysis as a\n"
        "a.linear_patch_probe, a.knn_patch_accuracy"
    )
    assert _loaded_after(code) == []
