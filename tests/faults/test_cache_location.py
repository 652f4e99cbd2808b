"""Where viny's caches go when the environment does not say: HOME unset or naming no folder, and a
filled cache that cannot take a new entry. One line naming VINY_CACHE_DIR, the variable that moves
every cache (data.cache.cache_root, CACHE_DIR_FIX); no advice about options the CLI does not have."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from viny_probe.analysis.embeddings import extract_patch_tokens
from viny_probe.data import load_dataset
from viny_probe.errors import VinyError
from viny_probe.model import ViNy, model_config

TRAIN = ["train", "segment", "--model", "tiny", "--epochs", "1", "--train-size", "16", "--test-size", "8"]


def test_no_home_folder_is_one_line_naming_viny_cache_dir(tmp_path) -> None:
    """HOME unset, and HOME naming a folder that does not exist, without VINY_CACHE_DIR: two real
    `viny train` processes started together. Failed before: HOME unset put the cache in the password
    file's home (/root) without a word; HOME=/missing had viny create /missing/.cache/viny as root.
    Mutant watched failing: cache_root as before (``Path.home() / ".cache" / "viny"``)."""
    base = {k: v for k, v in os.environ.items() if k not in ("HOME", "VINY_CACHE_DIR")}
    missing = tmp_path / "missing-home"
    runs = {
        "unset": dict(base),
        "missing": {**base, "HOME": str(missing)},
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "viny_probe", *TRAIN, "--device", "cpu", "-q", "-o", str(tmp_path / name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "COLUMNS": "400"},
        )
        for name, env in runs.items()
    }
    said = {name: (p.wait(timeout=120), p.stderr.read()) for name, p in procs.items()}
    for name, what in (("unset", "HOME is not set"), ("missing", f"HOME={missing} is not a folder")):
        rc, err = said[name]
        assert rc == 2 and "Traceback" not in err, err
        assert err.strip().startswith("error: viny's cache goes under $HOME/.cache/viny, but " + what), err
        assert "set VINY_CACHE_DIR to a writable folder" in err and len(err.strip().splitlines()) == 1
    assert not missing.exists()


@pytest.fixture
def unwritable(tmp_path):
    """A folder root cannot add files to (``chattr +i``), for a filled cache that is read-only."""
    folder = tmp_path / "cache"
    folder.mkdir()

    def freeze() -> None:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot make a folder immutable here: {done.stderr.decode().strip()}")

    yield folder, freeze
    subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def test_a_read_only_filled_decode_cache_says_to_move_it(unwritable) -> None:
    """A hit is read as ever; a miss that cannot be written names VINY_CACHE_DIR. Failed before: the
    advice was "pass another cache_dir", an argument only the Python API has."""
    folder, freeze = unwritable
    first = load_dataset("toy-pets", size=32, limit=8, cache_dir=folder)
    freeze()
    assert torch.equal(load_dataset("toy-pets", size=32, limit=8, cache_dir=folder).images, first.images)
    with pytest.raises(VinyError) as caught:
        load_dataset("toy-pets", size=40, limit=8, cache_dir=folder)
    message = str(caught.value)
    assert f"cannot write the dataset cache in '{folder}'" in message and "cache_dir" not in message
    assert message.endswith("set VINY_CACHE_DIR to a writable folder (it moves every viny cache there)")


def test_a_read_only_filled_embedding_cache_says_to_move_it(unwritable) -> None:
    """The embedding cache's folder exists (filled) but takes no new file. Failed before: a
    PermissionError traceback from the temp file of the write. Mutant watched failing: the write
    without its OSError -> VinyError."""
    folder, freeze = unwritable
    encoder = ViNy(model_config("tiny"))
    images = torch.zeros(2, 3, encoder.cfg.image_size, encoder.cfg.image_size, dtype=torch.uint8)
    freeze()
    with pytest.raises(VinyError) as caught:
        extract_patch_tokens(encoder, images, cache_dir=folder, progress=False, device="cpu")
    message = str(caught.value)
    assert (
        message.startswith(f"cannot write the embedding cache file {folder}/") and "use_cache" not in message
    )
    assert message.endswith("set VINY_CACHE_DIR to a writable folder (it moves every viny cache there)")
