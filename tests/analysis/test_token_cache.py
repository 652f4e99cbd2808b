"""The token cache never serves tokens of a model that changed: an edited ``py:`` file or an edited
``hf:`` config.json is another key; ``--no-cache`` recomputes; ``viny cache info|clear`` show and empty
it. Every model is a tiny random-init one written into a temp folder."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from typer.testing import CliRunner

from viny_probe.analysis.checkpoint_probe import probe_checkpoint
from viny_probe.analysis.embeddings import resolve_cache_dir
from viny_probe.analysis.options import EvalSet, ModelOptions, ProbeOptions
from viny_probe.cli import app

transformers = pytest.importorskip("transformers")

SMALL = dict(
    data=EvalSet(dataset="toy-pets", probe_images=16, test_images=8),
    probe=ProbeOptions(knn=False),
    progress=False,
)
CPU = ModelOptions(device="cpu")
SMALL_CLI = [
    "--dataset",
    "toy-pets",
    "--probe-images",
    "16",
    "--test-images",
    "8",
    "--no-knn",
    "--device",
    "cpu",
]

PY_MODEL = """
import torch
from torch import nn

from viny_probe.analysis.sources import TokenModel

SCALE = 1.0


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 8, 8)
        self.blocks = nn.ModuleList(nn.Linear(16, 16) for _ in range(2))

    def forward_features(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = x + block(x)
        return x * SCALE


def build():
    torch.manual_seed(0)
    module = Tiny().eval()
    return TokenModel.from_blocks(
        module, module.blocks, module.forward_features, prefix_tokens=0, dim=16, patch_size=8, image_size=32
    )
"""


def within(result: dict) -> float:
    return result["layers"]["final"]["within_image_variance"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A token cache of this test's own (the default folder, as the CLI uses it)."""
    monkeypatch.setenv("VINY_CACHE_DIR", str(tmp_path / "viny-cache"))
    return resolve_cache_dir()


def test_an_edited_py_model_file_is_not_served_from_the_cache(tmp_path, cache):
    """The code of a ``py:`` model changes its tokens as much as its weights: the same file with
    SCALE 1.0 -> 3.0 (same size, same weights) gives the new numbers, equal to a run without the cache.
    Before the fix the second run printed the first run's within-image variance. Mutant watched
    failing: ``py_callable.load`` without the file's digest in the fingerprint."""
    path = tmp_path / "model.py"
    path.write_text(PY_MODEL)
    spec = f"py:{path}:build"
    before = within(probe_checkpoint(spec, model=CPU, **SMALL))
    path.write_text(PY_MODEL.replace("SCALE = 1.0", "SCALE = 3.0"))
    after = within(probe_checkpoint(spec, model=CPU, **SMALL))
    fresh = within(probe_checkpoint(spec, model=replace(CPU, use_cache=False), **SMALL))
    assert after == pytest.approx(fresh) and after == pytest.approx(9 * before, rel=1e-4), (before, after)


@pytest.fixture
def hf_folder(tmp_path):
    cfg = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
    )
    torch.manual_seed(3)
    transformers.utils.logging.disable_progress_bar()
    folder = tmp_path / "hf-vit"
    transformers.ViTModel(cfg).save_pretrained(folder)  # with its pooler: every weight is in the folder
    return folder


def test_an_edited_hf_config_is_not_served_from_the_cache(hf_folder, cache):
    """config.json decides the tokens with the same weights (activation, layer-norm eps): an edited
    one gives the new numbers, equal to a run without the cache. Before the fix the second run printed
    the first run's numbers. Mutant watched failing: the hf source's fingerprint without config.json."""
    spec = f"hf:{hf_folder}"
    before = within(probe_checkpoint(spec, model=CPU, **SMALL))
    config = json.loads((hf_folder / "config.json").read_text())
    config.update(hidden_act="relu", layer_norm_eps=0.5)
    (hf_folder / "config.json").write_text(json.dumps(config))
    after = within(probe_checkpoint(spec, model=CPU, **SMALL))
    fresh = within(probe_checkpoint(spec, model=replace(CPU, use_cache=False), **SMALL))
    assert after == pytest.approx(fresh) and after != pytest.approx(before), (before, after)


def probe_json(*args: str) -> dict:
    result = CliRunner().invoke(app, ["probe", *args, *SMALL_CLI, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_no_cache_recomputes_and_cache_info_and_clear_show_and_empty_it(tmp_path, cache):
    """``--no-cache`` neither reads nor writes entries: with every entry's tokens replaced by zeros, a
    cached run reads the zeros, ``--no-cache`` the model's own numbers. ``viny cache info`` says where
    the cache is, how many entries and bytes; ``viny cache clear`` removes them, in one line. Mutant
    watched failing: ``probe --no-cache`` not passed on to ``probe_checkpoint``."""
    path = tmp_path / "model.py"
    path.write_text(PY_MODEL)
    spec = f"py:{path}:build"
    own = within(probe_json(spec))
    entries = sorted(cache.glob("*.pt"))
    assert len(entries) == 2  # the pool and the test set's final block
    for entry in entries:  # the same keys, other tokens: what a stale entry would serve
        payload = torch.load(entry, weights_only=True)
        torch.save({**payload, "tokens": torch.zeros_like(payload["tokens"])}, entry)
    assert within(probe_json(spec)) == 0.0
    assert within(probe_json(spec, "--no-cache")) == pytest.approx(own)
    assert sorted(cache.glob("*.pt")) == entries

    info = CliRunner().invoke(app, ["cache", "info", "--json"])
    assert info.exit_code == 0, info.output
    size = sum(e.stat().st_size for e in entries)
    assert json.loads(info.stdout) == {"folder": str(cache), "entries": 2, "bytes": size}
    said = " ".join(CliRunner().invoke(app, ["cache", "info"]).output.split())
    assert str(cache) in said and "2 entries" in said

    cleared = CliRunner().invoke(app, ["cache", "clear"])
    assert cleared.exit_code == 0, cleared.output
    line = " ".join(cleared.output.split())
    assert line.startswith("removed the token cache: 2 entries (") and f"from {cache}" in line, line
    assert not list(cache.glob("*.pt"))
    again = " ".join(CliRunner().invoke(app, ["cache", "clear"]).output.split())
    assert again.startswith(f"the token cache {cache} is empty"), again
