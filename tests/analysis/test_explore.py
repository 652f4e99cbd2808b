"""`viny explore`: the page is driven in a real headless Chromium (Debian's chromium + chromedriver,
through Selenium); what it draws after a click is compared, cell by cell, with what Python computes for
that patch. Without the browser the browser tests are skipped here and fail under CI (which installs it)."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from viny_probe.analysis.explore import (
    ExploreOptions,
    build_explorer,
    colour_index,
    dataset_images,
    decode_tokens,
    quantise,
    quantised_similarity,
    read_page_data,
)
from viny_probe.analysis.options import EvalSet, ModelOptions
from viny_probe.analysis.pca import pca_rgb, principal_components
from viny_probe.analysis.sources import load_model
from viny_probe.checkpoint import save_checkpoint
from viny_probe.model import ViNy, ViTConfig

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _save(path: Path, cfg, seed: int) -> Path:
    torch.manual_seed(seed)
    model = ViNy(cfg)
    save_checkpoint(
        path, {"regime": "fresh", "model_config": model.cfg.to_dict(), "encoder": model.state_dict()}
    )
    return path


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """An explorer of two untrained models on different grids (8x8 and 4x4) over 5 toy-pets test images."""
    root = tmp_path_factory.mktemp("explore")
    a = _save(root / "a.pt", "tiny", 1)
    b = _save(
        root / "b.pt",
        ViTConfig(image_size=32, patch_size=8, dim=32, depth=3, heads=2, dim_head=16, mlp_dim=64),
        2,
    )
    models = [load_model(a), load_model(b)]
    images, _ = dataset_images(models, EvalSet(dataset="toy-pets"), 5)
    out = root / "explorer.html"
    summary = build_explorer(
        models, images, out, ExploreOptions(progress=False), ModelOptions(use_cache=False)
    )
    return {"file": out, "summary": summary, "models": models, "images": images}


def _driver():
    if not (CHROMIUM and DRIVER):
        if os.environ.get("CI"):
            pytest.fail(
                "chromium / chromedriver missing: .ci/run installs them (apt-get install chromium chromium-driver)"
            )
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,900",
    ):  # fmt: skip
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = _driver()
    yield driver
    driver.quit()


def _cell_colours(browser, model: int, image: int, grid: int) -> list[list[int]]:
    """RGB at the centre of every patch cell of one overlay canvas, row-major."""
    return browser.execute_script(
        """
        const [mi, im, g] = arguments;
        const c = document.querySelectorAll(`canvas.heat[data-model="${mi}"]`)[im];
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data, out = [];
        for (let r = 0; r < g; r++) for (let k = 0; k < g; k++) {
          const x = Math.floor((k + 0.5) * c.width / g), y = Math.floor((r + 0.5) * c.height / g);
          const o = (y * c.width + x) * 4; out.push([d[o], d[o + 1], d[o + 2], d[o + 3]]);
        }
        return out;""",
        model,
        image,
        grid,
    )


def _click_patch(browser, model: int, image: int, row: int, col: int, grid: int) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = browser.find_elements(By.CSS_SELECTOR, f'canvas.heat[data-model="{model}"]')[image]
    size = canvas.size["width"]
    # Selenium 4 offsets are from the element's centre
    x = int((col + 0.5) * size / grid - size / 2)
    y = int((row + 0.5) * size / grid - size / 2)
    ActionChains(browser).move_to_element_with_offset(canvas, x, y).click().perform()


def _expected(data: dict, mi: int, block: int, image: int, patch: int) -> torch.Tensor:
    entry = data["models"][mi]
    q = decode_tokens(entry, block, len(data["images"]))
    return colour_index(quantised_similarity(q, image, patch))


def _assert_drawn(browser, data: dict, mi: int, block: int, image: int, patch: int) -> None:
    grid = data["models"][mi]["grid"]
    want = _expected(data, mi, block, image, patch)  # (N, P) colour indices
    lut = data["colours"]
    for i in range(len(data["images"])):
        drawn = _cell_colours(browser, mi, i, grid)
        for p, rgb in enumerate(drawn):
            if i == image and p == patch:
                continue  # the marked patch: its centre is still its colour, but skip the outline's cell
            k = int(want[i, p])
            allowed = [lut[j] for j in range(max(0, k - 1), min(255, k + 1) + 1)]  # float rounding at an edge
            assert rgb[:3] in allowed and rgb[3] == 255, (mi, i, p, rgb, lut[k])


def test_clicking_a_patch_draws_its_similarity_maps_on_every_image_and_model(page, browser):
    """Clicks patch (5, 2) of image 3 in the first model's row; every cell of every image of both models
    must show the colour Python computes for the same position (model b: (2, 1) of its 4x4 grid), at the
    last block; then the slider (keyboard Home) moves to block 1 and the maps must follow; then the PCA
    view shows the PCA colours. Mutants watched failing: ``patchAt`` with row and column swapped (the
    maps of another patch); ``blockOf`` ignoring the slider (block 1 maps wrong)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    browser.get(page["file"].as_uri())
    assert browser.execute_script("return window.vinyExplorer && window.vinyExplorer.ready") is True
    data = read_page_data(page["file"])
    _click_patch(browser, 0, 3, 5, 2, 8)
    sel = browser.execute_script("return window.vinyExplorer.state.last")
    assert sel["0"]["image"] == 3 and sel["0"]["patch"] == 5 * 8 + 2
    assert sel["1"]["patch"] == 2 * 4 + 1  # the same place on the coarser grid
    _assert_drawn(browser, data, 0, 2, 3, 5 * 8 + 2)
    _assert_drawn(browser, data, 1, 3, 3, 2 * 4 + 1)

    browser.find_element(By.ID, "block").send_keys(Keys.HOME)
    last = browser.execute_script("return window.vinyExplorer.state.last")
    assert last["0"]["block"] == 1 and last["1"]["block"] == 1  # relative depth: 1/3 of 2 -> 1, 1/3 of 3 -> 1
    _assert_drawn(browser, data, 0, 1, 3, 5 * 8 + 2)
    _assert_drawn(browser, data, 1, 1, 3, 2 * 4 + 1)

    Select(browser.find_element(By.ID, "view")).select_by_value("pca")
    pca = np.frombuffer(base64.b64decode(data["models"][0]["pca"]["1"]), np.uint8).reshape(5, 64, 3)
    for i in range(5):
        assert [c[:3] for c in _cell_colours(browser, 0, i, 8)] == pca[i].tolist()

    browser.save_screenshot(str(page["file"].with_suffix(".png")))
    if os.environ.get("VINY_EXPLORER_SCREENSHOT"):
        shutil.copy(page["file"].with_suffix(".png"), os.environ["VINY_EXPLORER_SCREENSHOT"])


def test_hovering_a_patch_names_its_trimap_label(page, browser):
    """The tooltip names the majority trimap class of the hovered patch, as ``patch_majority_labels``
    gives it. Mutant watched failing: labels read at ``p`` of the transposed grid."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from viny_probe.data.base import SEG_CLASSES
    from viny_probe.data.patch_labels import patch_majority_labels

    browser.get(page["file"].as_uri())
    _, masks = page["images"].at(32)
    labels = patch_majority_labels(masks, 4)
    canvas = browser.find_elements(By.CSS_SELECTOR, 'canvas.heat[data-model="0"]')[1]
    size = canvas.size["width"]
    seen = set()
    for row, col in [(0, 0), (3, 4), (4, 3), (7, 1), (1, 7), (5, 5)]:
        x, y = int((col + 0.5) * size / 8 - size / 2), int((row + 0.5) * size / 8 - size / 2)
        ActionChains(browser).move_to_element_with_offset(canvas, x, y).perform()
        tip = browser.find_element(By.ID, "tip").text
        label = SEG_CLASSES[int(labels[1, row * 8 + col])]
        seen.add(label)
        assert f"patch ({row}, {col})" in tip and tip.endswith(label), (tip, label)
    assert len(seen) >= 2  # the test image is not one class only, so the check can tell cells apart


def test_quantised_tokens_keep_cosine_similarity(page):
    """The page's int8 tokens give the float32 cosine similarity within 0.02 (the docstring's
    promise), at every block of both models. Mutant watched failing: quantise without normalising
    (``t * 127`` clipped) gives errors near 1."""
    from viny_probe.analysis.embeddings import extract_patch_tokens

    data = read_page_data(page["file"])
    for mi, model in enumerate(page["models"]):
        pixels, _ = page["images"].at(model.image_size)
        tokens = extract_patch_tokens(model, pixels, "all", use_cache=False, progress=False)
        for block, t in tokens.items():
            q = decode_tokens(data["models"][mi], block, 5)
            assert torch.equal(q, quantise(t))
            unit = torch.nn.functional.normalize(t.double(), dim=-1)
            exact = unit.reshape(-1, unit.shape[-1]) @ unit[2, 7]
            approx = quantised_similarity(q, 2, 7).reshape(-1)
            assert (exact - approx).abs().max() < 0.02


def test_pca_rgb_recovers_a_known_axis():
    """Tokens spread along one known direction (plus small noise) in 16 channels: component 1 is that
    direction (sign: largest loading positive), red orders the patches by their position along it.
    Mutant watched failing: eigenvectors taken from the ascending end (the smallest components)."""
    gen = torch.Generator().manual_seed(0)
    axis = torch.zeros(16)
    axis[3], axis[9] = 0.8, -0.6
    along = torch.linspace(-5, 5, 40)
    tokens = (along[:, None] * axis + 0.01 * torch.randn(40, 16, generator=gen)).reshape(2, 20, 16)
    _, comps, ratio = principal_components(tokens, 3)
    assert torch.allclose(comps[0], axis.double(), atol=5e-3)
    assert ratio[0] > 0.99
    colours, info = pca_rgb(tokens)
    red = colours[..., 0].reshape(-1)
    assert torch.all(red[1:] >= red[:-1])  # monotone in the position along the axis
    assert red[0] == 0 and red[-1] == 1
    assert info["explained_variance_ratio"][0] > 0.99


def test_the_command_refuses_a_page_over_its_bound_before_extracting(tmp_path):
    """`viny explore` states the size and refuses a page over --max-mb before any token is computed
    (a real process). Mutant watched failing: the bound compared in bytes against MB."""
    ckpt = _save(tmp_path / "m.pt", "tiny", 0)
    proc = subprocess.run(
        [sys.executable, "-m", "viny_probe", "explore", str(ckpt), "--images", "4", "--max-mb", "0.01",
         "-o", str(tmp_path / "e.html")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "over --max-mb 0.01" in proc.stdout + proc.stderr
    assert not (tmp_path / "e.html").exists()
