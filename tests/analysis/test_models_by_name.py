"""Pretrained models by name, from the libraries' own caches, offline.

Each test builds a Hugging Face hub cache in the hub's layout (``models--ORG--NAME/refs/main`` naming a
snapshot, ``snapshots/REV/FILES``) and runs a fresh Python process with ``HF_HUB_CACHE`` pointing at it
and ``HF_HUB_OFFLINE=1``: no network, the library's own loading resolves the name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

REV = "0123456789abcdef0123456789abcdef01234567"
TIMM_NAME = "vit_tiny_patch16_224.augreg_in21k"
SMALL = "depth=2,img_size=32,patch_size=8,embed_dim=32,num_heads=2"


def hub_repo(cache: Path, repo_id: str, rev: str = REV) -> Path:
    """An empty snapshot folder of ``repo_id`` in the hub cache layout, named by refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(rev)
    snapshot = repo / "snapshots" / rev
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def offline_env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"), HF_HUB_OFFLINE="1")
    env.update(TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return env


TOKENS_SCRIPT = """
import json, sys, torch
from viny_probe.analysis.sources import load_model
out = {}
x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
for key, text, weights in json.loads(sys.argv[1]):
    m = load_model(text, weights=weights)
    with torch.inference_mode():
        t = m.tokens((x - torch.tensor(m.mean)[:, None, None]) / torch.tensor(m.std)[:, None, None], [1, m.depth])
    torch.save({b: v.clone() for b, v in t.items()}, sys.argv[2] + "/" + key + ".pt")
    out[key] = {"notes": m.notes, "config": m.config}
print(json.dumps(out))
"""


def run_tokens(tmp_path: Path, cache: Path, models: list) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", TOKENS_SCRIPT, json.dumps(models), str(tmp_path)],
        env=offline_env(cache),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_timm_model_by_name_loads_its_pretrained_weights_from_the_hub_cache_offline(tmp_path):
    """``timm:NAME.TAG`` reads model.safetensors of timm's hub repo for that tag from the cache, and gives
    exactly the tokens of the same weights given as a file; the notes name the repo and revision.
    Mutant watched failing: ``pretrained=False`` passed to create_model whatever was asked (random
    weights: the tokens differ)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        reference = timm.create_model(
            TIMM_NAME, pretrained=False, depth=2, img_size=32, patch_size=8, embed_dim=32, num_heads=2
        )
    state = {k: v.contiguous() for k, v in reference.state_dict().items()}
    cache = tmp_path / "hub"
    snapshot = hub_repo(cache, f"timm/{TIMM_NAME}")
    safetensors_torch.save_file(state, str(snapshot / "model.safetensors"))
    weights_file = tmp_path / "same.safetensors"
    safetensors_torch.save_file(state, str(weights_file))

    got = run_tokens(
        tmp_path,
        cache,
        [
            ["named", f"timm:{TIMM_NAME},{SMALL}", None],
            ["file", f"timm:{TIMM_NAME},{SMALL},pretrained=false", str(weights_file)],
            ["random", f"timm:{TIMM_NAME},{SMALL},pretrained=false", None],
        ],
    )
    named, file, random = (torch.load(tmp_path / f"{k}.pt") for k in ("named", "file", "random"))
    for block in named:
        assert torch.equal(named[block], file[block])
        assert not torch.allclose(named[block], random[block])
    note = got["named"]["config"]["weights"]
    assert f"timm/{TIMM_NAME}@{REV}" in note and "pretrained" in note
    assert "RANDOM INIT" in got["random"]["config"]["weights"]


def test_a_timm_model_missing_from_the_cache_offline_is_one_line_naming_the_cache(tmp_path):
    """Offline with an empty cache: the real `viny probe` exits 2 with one line naming the repo, the
    cache folder and HF_HUB_OFFLINE, no traceback. Mutant watched failing: the OSError not caught
    (a traceback from huggingface_hub)."""
    cache = tmp_path / "empty-hub"
    cache.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "viny_probe", "probe", f"timm:{TIMM_NAME}", "-q"],
        env=offline_env(cache),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    assert f"timm/{TIMM_NAME}" in text and str(cache) in text and "HF_HUB_OFFLINE" in text


def test_a_timm_tag_without_weights_is_refused_not_random(tmp_path):
    """A tag timm has no weights for is refused, listing the real tags, rather than built at random
    (timm itself would warn and go on). Mutant watched failing: the check skipped (timm builds a
    random model and viny diagnoses it)."""
    from viny_probe.analysis.sources import load_model
    from viny_probe.errors import VinyError

    with pytest.raises(VinyError, match="no pretrained weights named.*augreg_in21k"):
        load_model(f"timm:vit_tiny_patch16_224.no_such_tag,{SMALL}")


def _tiny_vit_folder(folder: Path) -> Path:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64,
    )  # fmt: skip
    torch.manual_seed(11)
    transformers.utils.logging.disable_progress_bar()
    transformers.ViTModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    return folder


def test_an_hf_hub_id_loads_from_the_hub_cache_offline_at_its_revision(tmp_path):
    """``hf:ORG/NAME`` and ``hf:ORG/NAME@REV`` resolve through huggingface_hub to the cached snapshot and
    give exactly the tokens of the same folder given by path; the config names repo@revision. Mutant
    watched failing: the hub id treated as a local path (folder not found)."""
    cache = tmp_path / "hub"
    snapshot = hub_repo(cache, "someone/tiny-vit")
    _tiny_vit_folder(snapshot)
    other = "fedcba9876543210fedcba9876543210fedcba98"
    _tiny_vit_folder(hub_repo(cache, "someone/tiny-vit", other))  # same weights, another revision
    (cache / "models--someone--tiny-vit" / "refs" / "main").write_text(REV)
    got = run_tokens(
        tmp_path,
        cache,
        [
            ["hub", "hf:someone/tiny-vit", None],
            ["rev", f"hf:someone/tiny-vit@{other}", None],
            ["folder", f"hf:{snapshot}", None],
        ],
    )
    hub, rev, folder = (torch.load(tmp_path / f"{k}.pt") for k in ("hub", "rev", "folder"))
    for block in hub:
        assert torch.equal(hub[block], folder[block]) and torch.equal(rev[block], folder[block])
    assert got["hub"]["config"]["weights"] == f"hf hub someone/tiny-vit@{REV}"
    assert got["rev"]["config"]["weights"] == f"hf hub someone/tiny-vit@{other}"
    assert got["folder"]["config"]["weights"].startswith("local folder ")


def test_an_hf_hub_id_missing_from_the_cache_offline_is_one_line(tmp_path):
    """The real `viny probe` with an uncached hub id offline: exit 2, one line naming the repo, the cache
    and HF_HUB_OFFLINE. Mutant watched failing: snapshot_download's error not caught (a traceback)."""
    cache = tmp_path / "empty-hub"
    cache.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "viny_probe", "probe", "hf:facebook/dinov2-small", "-q"],
        env=offline_env(cache), capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    assert "Traceback" not in text
    assert "facebook/dinov2-small" in text and str(cache) in text and "HF_HUB_OFFLINE" in text


def test_a_hub_snapshot_with_custom_code_is_refused_and_its_code_never_fetched(tmp_path):
    """A cached snapshot whose config.json has an auto_map is refused like a local folder with one
    (viny runs no code from a model), and its .py file is not among the files viny asks the hub for."""
    from viny_probe.analysis.sources.hf_models import _HUB_FILES

    assert not any(pattern.endswith(".py") or pattern == "*" for pattern in _HUB_FILES)
    cache = tmp_path / "hub"
    snapshot = _tiny_vit_folder(hub_repo(cache, "someone/custom"))
    meta = json.loads((snapshot / "config.json").read_text())
    meta["auto_map"] = {"AutoModel": "evil.EvilModel"}
    (snapshot / "config.json").write_text(json.dumps(meta))
    proc = subprocess.run(
        [sys.executable, "-m", "viny_probe", "probe", "hf:someone/custom", "-q"],
        env=offline_env(cache), capture_output=True, text=True, timeout=300, cwd=tmp_path, input="y\n",
    )  # fmt: skip
    assert proc.returncode == 2 and "auto_map" in proc.stdout + proc.stderr


def test_random_weights_are_named_as_such_in_json_markdown_and_the_explorer(tmp_path):
    """A model built at random (``pretrained=false``) says so wherever its results go: `viny probe
    --json`'s model record, diagnose's summary.md checkpoint table, and the explorer page's model
    line, and a footer under every figure of diagnose. Mutants watched failing: ``TokenModel.weights``
    ignoring the source's weights note; diagnose without ``stamp_footer``."""
    from viny_probe.analysis.diagnose import diagnose
    from viny_probe.analysis.explore import ExploreOptions, build_explorer, dataset_images, read_page_data
    from viny_probe.analysis.options import DiagnoseOptions, EvalSet
    from viny_probe.analysis.sources import load_model

    text = f"timm:{TIMM_NAME},{SMALL},pretrained=false"
    proc = subprocess.run(
        [sys.executable, "-m", "viny_probe", "probe", text, "--probe-images", "16", "--test-images", "8", "--json"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "RANDOM INIT" in json.loads(proc.stdout)["model"]["weights"]
    model = load_model(text)
    diagnose([model], ["random"], tmp_path / "diag", data=EvalSet(probe_images=16, test_images=8),
             figures=DiagnoseOptions(depth_probe_images=8, cka_images=8, fig6_images=1), progress=False)  # fmt: skip
    assert "RANDOM INIT" in (tmp_path / "diag" / "summary.md").read_text()
    from PIL import Image

    with Image.open(tmp_path / "diag" / "fig5_similarity_vs_distance.png") as png:
        strip = np.asarray(png.convert("RGB"))[-12:]  # the footer naming the weights, under the figure
    assert (strip == 235).all(axis=-1).mean() > 0.5 and (strip < 120).all(axis=-1).any()
    images, _ = dataset_images([model], EvalSet(dataset="toy-pets"), 2)
    build_explorer([model], images, tmp_path / "e.html", ExploreOptions(progress=False))
    assert "RANDOM INIT" in read_page_data(tmp_path / "e.html")["models"][0]["weights"]
