"""`viny extract`: tokens to disk in shards with an index of image ids, read back by the diagnostics as
``tokens:DIR``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from viny_probe.analysis.embeddings import TokenKey, extract_patch_tokens
from viny_probe.analysis.evaluation_data import load_probe_data
from viny_probe.analysis.options import EvalSet
from viny_probe.analysis.sources import load_model
from viny_probe.analysis.token_store import ExtractOptions, TokenFolder, extract_tokens
from viny_probe.errors import VinyError

SMALL = dict(data=EvalSet(probe_images=24, test_images=10), progress=False)


@pytest.fixture(scope="module")
def folder(fresh_ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens") / "tok"
    # shards of 4 images: every split spans several shards, so the shard arithmetic is exercised
    summary = extract_tokens(str(fresh_ckpt), out, ExtractOptions(dtype="float32", shard_images=4), **SMALL)
    return out, summary


def test_shards_hold_each_images_tokens_under_its_id(fresh_ckpt, folder):
    """Read back by ids in a shuffled order, every image's tokens at every block equal a fresh
    extraction of that image. Mutants watched failing: the row inside a shard off by one
    (``row - start + 1``); the index recording each shard under the other block (``3 - block``)."""
    out, summary = folder
    model = load_model(fresh_ckpt)
    pool, test, _ = load_probe_data("toy-pets", model.image_size, None, 0, 1000, 24, 10)
    store = TokenFolder.open(out)
    assert summary["images"] == 34 and summary["blocks"] == [1, 2]
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(0)).tolist()
    ids = [test.ids[i] + "" for i in order] + [pool.ids[5], pool.ids[23]]
    fresh_test = extract_patch_tokens(model, test, [1, 2], use_cache=False, progress=False)
    fresh_pool = extract_patch_tokens(model, pool, [1, 2], use_cache=False, progress=False)
    for block in (1, 2):
        got = store.read(block, ids)
        want = torch.cat([fresh_test[block][order], fresh_pool[block][[5, 23]]])
        assert torch.equal(got, want)
    labels = np.load(out / "test" / "labels.npy")
    assert labels.shape == (10, 64) and labels.dtype == np.uint8


def test_the_diagnostics_read_a_token_folder_and_agree_with_the_model(fresh_ckpt, folder):
    """`viny probe tokens:DIR` (a real process) reports exactly the numbers of `viny probe CKPT` on the
    same images (float32 tokens). Mutant watched failing: the stored-tokens branch of
    extract_patch_tokens dropped (the folder's model refuses to embed: exit 2)."""
    out, _ = folder
    results = []
    for model in (f"tokens:{out}", str(fresh_ckpt)):
        proc = subprocess.run(
            [sys.executable, "-m", "viny_probe", "probe", model, "--probe-images", "24", "--test-images", "10",
             "--json"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        results.append(json.loads(proc.stdout))
    stored, computed = (r["layers"]["final"] for r in results)
    for key in ("within_image_variance", "across_image_variance", "effective_rank", "probe", "dense_knn"):
        assert stored[key] == computed[key], key


def test_a_token_folder_keeps_each_images_own_patch_subsample(fresh_ckpt, folder):
    """``tokens:DIR`` with a per-image patch subsample (the probe's memory bound): image i's kept tokens
    are its patches keep[i], the same as a fresh extraction with that subsample, with the images asked
    for in a shuffled order. Mutant killed: embeddings._stored_tokens keeping every image's first k
    patches (``t[:, : patches.shape[1]]``) instead of its own."""
    out, _ = folder
    model = load_model(fresh_ckpt)
    _, test, _ = load_probe_data("toy-pets", model.image_size, None, 0, 1000, 24, 10)
    shuffled = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(1)))
    g = torch.Generator().manual_seed(2)
    keep = torch.rand(len(test), 64, generator=g).argsort(dim=1)[:, :7]
    kw = dict(layers=[1, 2], key=TokenKey(patches=keep), use_cache=False, progress=False)
    got = extract_patch_tokens(load_model(f"tokens:{out}"), shuffled, **kw)
    want = extract_patch_tokens(model, shuffled, **kw)
    for block in (1, 2):
        assert got[block].shape == (10, 7, model.dim)
        torch.testing.assert_close(got[block], want[block])


def test_images_a_folder_does_not_hold_are_one_line(folder):
    out, _ = folder
    store = TokenFolder.open(out)
    with pytest.raises(
        VinyError, match="1 of the 1 images asked for at block 2 are not in this token folder"
    ):
        store.read(2, ["no-such-image"])
    with pytest.raises(VinyError, match="no index.json"):
        TokenFolder.open(out.parent / "elsewhere")


def test_extract_refuses_to_overwrite_and_float16_halves_the_size(fresh_ckpt, folder, tmp_path):
    out, summary = folder
    with pytest.raises(VinyError, match="already holds extracted tokens"):
        extract_tokens(str(fresh_ckpt), out, **SMALL)
    half = extract_tokens(str(fresh_ckpt), tmp_path / "half", ExtractOptions(dtype="float16"), **SMALL)
    assert half["bytes"] < 0.6 * summary["bytes"]
    a = TokenFolder.open(out).read(2, TokenFolder.open(out).index["splits"]["test"]["ids"])
    b = TokenFolder.open(tmp_path / "half").read(2, TokenFolder.open(out).index["splits"]["test"]["ids"])
    assert torch.allclose(a, b, rtol=2e-3, atol=2e-3)
