"""Half-precision token storage (``ModelOptions.token_dtype``, ``--token-dtype``): tokens are kept in the
dtype asked for (and cached under it), every diagnostic of a bfloat16 set lands within a stated tolerance
of the float32 set's, the diagnostics accumulate in float32/float64 and never in the storage dtype, and
the dtype is written into every output."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from viny_probe.analysis.checkpoint_probe import probe_checkpoint
from viny_probe.analysis.cka import cka_matrix
from viny_probe.analysis.distance import similarity_vs_distance
from viny_probe.analysis.embeddings import cache_info, extract_patch_tokens
from viny_probe.analysis.options import EvalSet, ModelOptions
from viny_probe.analysis.rank import effective_rank
from viny_probe.analysis.registry import columns, table_row
from viny_probe.analysis.variance import across_image_variance, within_image_variance
from viny_probe.cli import app
from viny_probe.data.base import ImageSet
from viny_probe.errors import VinyError

SMALL = EvalSet(dataset="toy-pets", probe_images=48, test_images=24)

# bfloat16 keeps 8 significant bits (relative rounding <= 2^-9 per value): the label-free numbers are
# means over thousands of values and move by ~1e-4 relative (measured 1.4e-5 .. 4.4e-4 on the fresh
# tiny model); a classifier may flip a few of its 1,536 test patches (measured: kNN 0.33 points).
RELATIVE = {"within": 1e-3, "across": 1e-3, "ratio": 1e-3, "effective_rank": 2e-3}
POINTS = 2.0  # percentage points, every *_pct column


def _images(n: int = 6) -> ImageSet:
    pixels = torch.randint(
        0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    return ImageSet(name="random", images=pixels, ids=[f"img{i}" for i in range(n)])


def test_bfloat16_storage_keeps_every_registered_diagnostic_within_tolerance(fresh_ckpt):
    """``probe_checkpoint`` on toy-pets with float32 and with bfloat16 tokens: every Table 2 column of
    every registered diagnostic agrees within ``RELATIVE`` / ``POINTS`` (the C chosen is the same), and
    ``data.token_dtype`` says which storage ran. Mutant, failing it: ``ModelOptions.extraction`` not
    passing ``dtype`` (both runs float32: the same numbers, a wrong recorded dtype)."""
    rows, info = {}, {}
    for dtype in ("float32", "bfloat16"):
        model = ModelOptions(device="cpu", use_cache=False, token_dtype=dtype)
        result = probe_checkpoint(str(fresh_ckpt), model, SMALL, progress=False)
        rows[dtype], info[dtype] = table_row(result["layers"]["final"]), result["data"]
    assert info["float32"]["token_dtype"] == "float32" and info["bfloat16"]["token_dtype"] == "bfloat16"
    ref, half = rows["float32"], rows["bfloat16"]
    assert half["within"] != ref["within"]  # the bfloat16 tokens did run: their rounding moves it a little
    checked = 0
    for column in columns():
        a, b = ref[column.key], half[column.key]
        if column.key.endswith("_pct"):
            assert b == pytest.approx(a, abs=POINTS), column.key
        elif column.key in RELATIVE:
            assert b == pytest.approx(a, rel=RELATIVE[column.key]), column.key
        elif column.key == "chosen_C":
            assert a == b
        else:
            continue
        checked += 1
    assert checked >= 9  # within, across, ratio, probe (3 columns + C), kNN, dense kNN, rank


def test_tokens_are_stored_and_cached_in_the_dtype_asked_for(fresh_ckpt, tmp_path):
    """bfloat16 / float16 extraction returns tokens of that dtype equal to the float32 tokens rounded
    once; the cache keeps one entry per dtype, stored in it, and serves it back; Fig 5's cosine curve
    and CKA of the bfloat16 tokens stay within 2e-3 of float32's. Mutants, each failing it: ``_run``
    allocating float32 whatever the dtype (conversion dropped); the dtype left out of the cache key (the
    float32 entry overwrites the bfloat16 one: one entry)."""
    images = _images()
    tokens = {
        dtype: extract_patch_tokens(
            fresh_ckpt, images, "all", cache_dir=tmp_path, progress=False, dtype=dtype
        )
        for dtype in ("bfloat16", "float32", "float16")
    }
    for dtype in ("bfloat16", "float16"):
        for block, t in tokens[dtype].items():
            assert t.dtype == getattr(torch, dtype)
            assert torch.equal(t, tokens["float32"][block].to(t.dtype))
    assert cache_info(tmp_path)["entries"] == 3 * len(tokens["float32"])
    for path in tmp_path.glob("*.pt"):
        stored = torch.load(path, weights_only=True)
        assert str(stored["tokens"].dtype).removeprefix("torch.") in json.loads(stored["key"]).get(
            "dtype", "float32"
        )
    last = max(tokens["float32"])  # "final": the last block
    again = extract_patch_tokens(
        fresh_ckpt, images, "final", cache_dir=tmp_path, progress=False, dtype="bfloat16"
    )
    assert again["final"].dtype == torch.bfloat16 and torch.equal(again["final"], tokens["bfloat16"][last])

    full, half = tokens["float32"][last], tokens["bfloat16"][last]
    curve, half_curve = similarity_vs_distance(full), similarity_vs_distance(half)
    assert half_curve.mean == pytest.approx(curve.mean, abs=2e-3)
    blocks = sorted(tokens["float32"])
    cka = cka_matrix([tokens["float32"][b] for b in blocks], [tokens["float32"][b] for b in blocks])
    half_cka = cka_matrix([tokens["bfloat16"][b] for b in blocks], [tokens["bfloat16"][b] for b in blocks])
    assert half_cka == pytest.approx(cka, abs=2e-3)


def test_the_diagnostics_accumulate_in_float32_or_wider_not_in_the_storage_dtype():
    """Constructed bfloat16 tokens of large mean: 4096 + 32 k, every value exact in bfloat16 (its spacing
    there is 32). Accumulated in float64 the variances and the effective rank equal the float64 tokens'
    to 1e-9; in bfloat16 a mean of such values rounds to a multiple of 32 (measured with the mutants:
    across 442 instead of 369.8, effective rank 1.10 instead of 1.65). Mutants, each failing it:
    ``variance``'s chunks without ``.double()``; ``rank``'s Gram blocks without ``.double()``."""
    k = torch.randint(0, 8, (40, 16, 24), generator=torch.Generator().manual_seed(0))
    exact = (4096 + 32 * k).double()
    tokens = exact.to(torch.bfloat16)
    assert torch.equal(tokens.double(), exact)  # the storage is exact: any difference is accumulation
    for fn in (within_image_variance, across_image_variance, effective_rank):
        assert fn(tokens) == pytest.approx(fn(exact), rel=1e-9), fn.__name__


def test_the_storage_dtype_is_checked_and_stated_by_viny_probe(fresh_ckpt):
    """An unknown dtype is one line naming the choices; ``viny probe --token-dtype bfloat16`` states it
    in its JSON and under its table. Mutant, failing it: the caption line left out of ``probe_tables``."""
    with pytest.raises(VinyError, match="bfloat16"):
        ModelOptions(token_dtype="float8")
    args = ["probe", str(fresh_ckpt), "--dataset", "toy-pets", "--probe-images", "16", "--test-images", "8"]
    args += ["--no-knn", "--device", "cpu", "--no-cache", "--token-dtype", "bfloat16", "-q"]
    printed = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert printed.exit_code == 0, printed.output
    assert "tokens stored as bfloat16" in printed.output
    as_json = CliRunner().invoke(app, [*args, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["data"]["token_dtype"] == "bfloat16"
    refused = CliRunner().invoke(app, [*args[:-3], "--token-dtype", "float8"])
    assert refused.exit_code != 0 and "'float32', 'bfloat16', 'float16'" in refused.output
