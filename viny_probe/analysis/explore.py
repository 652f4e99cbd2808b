"""`viny explore`: one self-contained HTML file to look at patch tokens interactively.

Click any patch of any image: every image of every model is coloured by its patches' cosine similarity
to that patch's token (each model queries the patch at the same place of the same image on its own
grid), at the block the slider picks; a PCA view colours patches by the first three principal
components of the block's tokens (``analysis.pca``); hovering shows a patch's trimap label where the
images have masks, and its similarity.

What the page holds, per model and block: every patch token L2-normalised and quantised to int8
(``round(127 * t / |t|)``; cosine similarity is computed from these in the page, within about 0.01 of
float32), and the PCA colours (uint8); per image a PNG. Nothing is fetched: no server, no CDN, the
file opens from disk. ``explorer_size`` states the size before anything is computed; a page over
``max_mb`` is refused with the options that shrink it.
"""

from __future__ import annotations

import base64
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from viny_probe.analysis.embeddings import TokenKey, extract_patch_tokens, model_blocks
from viny_probe.analysis.options import EvalSet, ExploreOptions, ModelOptions
from viny_probe.analysis.pca import pca_rgb
from viny_probe.analysis.sources import TokenModel
from viny_probe.data.base import SEG_CLASSES
from viny_probe.data.patch_labels import patch_majority_labels
from viny_probe.errors import VinyError

DEFAULT_IMAGES = ExploreOptions.images  # the defaults' one home: analysis.options.ExploreOptions
DEFAULT_MAX_MB = ExploreOptions.max_mb
DISPLAY_PX = 160  # each image is drawn this wide in the page
SIMILARITY_RANGE = (-0.5, 1.0)  # the colour scale, as `viny similarity-map` draws it
QUANT = 127


@dataclass
class ExploreImages:
    """The images shown: ``names``; ``at(size) -> ((N, 3, S, S) uint8, (N, S, S) trimaps or None)``;
    ``where``: a line saying where they came from (dataset, split), written into the page."""

    names: list[str]
    at: Callable[[int], tuple[torch.Tensor, torch.Tensor | None]]
    where: str


def quantise(tokens: torch.Tensor) -> torch.Tensor:
    """``(..., D)`` float -> int8 ``round(127 * t / |t|)`` (a zero token stays zero)."""
    unit = torch.nn.functional.normalize(tokens.float(), dim=-1)
    return (unit * QUANT).round().clamp(-QUANT, QUANT).to(torch.int8)


def quantised_similarity(q: torch.Tensor, image: int, patch: int) -> torch.Tensor:
    """What the page draws for a click: ``q`` ``(N, P, D)`` int8 -> ``(N, P)`` cosine similarity of
    every patch to patch ``patch`` of image ``image``, computed from the quantised values in float64."""
    x = q.double()
    ref = x[image, patch]
    norms = x.norm(dim=-1) * ref.norm()
    return torch.where(norms > 0, (x @ ref) / norms.clamp_min(1e-300), torch.zeros_like(norms))


def colour_index(similarity: torch.Tensor) -> torch.Tensor:
    """Index into the page's 256-colour scale of each similarity (the page's own rule)."""
    low, high = SIMILARITY_RANGE
    t = ((similarity - low) / (high - low)).clamp(0, 1)
    return (t * 255).round().long()


def colour_scale() -> list[list[int]]:
    """The 256 viridis colours the page maps similarities to."""
    from matplotlib import colormaps

    rgba = colormaps["viridis"](np.linspace(0, 1, 256))
    return [[int(round(c * 255)) for c in row[:3]] for row in rgba]


def _b64(array: np.ndarray | torch.Tensor) -> str:
    data = array.numpy() if isinstance(array, torch.Tensor) else array
    return base64.b64encode(np.ascontiguousarray(data).tobytes()).decode("ascii")


def _png(pixels: torch.Tensor) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def explorer_size(models: Sequence[TokenModel], num_images: int, blocks: str) -> int:
    """Bytes of the page's token and colour data (base64), before any is computed."""
    raw = 0
    for m in models:
        per_block = num_images * m.num_patches * (m.dim + 3)
        raw += per_block * len(model_blocks(m, blocks)) + num_images * m.num_patches
    images = num_images * DISPLAY_PX * DISPLAY_PX * 3 // 2  # PNGs, a generous guess
    return math.ceil(raw * 4 / 3) + images + 200_000


def weights_line(model: TokenModel) -> str:
    """Which weights the page shows (``TokenModel.weights``)."""
    return model.weights()


def model_entry(
    model: TokenModel, tokens: Mapping[int, torch.Tensor], masks: torch.Tensor | None, name: str | None = None
) -> dict:
    """One model's part of the page from its tokens ``{block: (N, P, D)}`` of the shown images (and their
    ``(N, S, S)`` trimaps, or None): int8 tokens, PCA colours and patch labels, base64. ``name``: what
    the page calls it (default the model's own name)."""
    blocks = sorted(tokens)
    entry: dict = {
        "name": name or model.name,
        "source": model.source,
        "weights": weights_line(model),
        "notes": list(model.notes),
        "grid": model.grid,
        "depth": model.depth,
        "dim": model.dim,
        "image_size": model.image_size,
        "patch_size": model.patch_size,
        "blocks": blocks,
        "tokens": {},
        "pca": {},
        "pca_info": {},
        "labels": None,
    }
    for block in blocks:
        t = tokens[block]
        if not torch.isfinite(t).all():
            raise VinyError(f"{model.source}: block {block} gives NaN or infinite tokens; nothing to explore")
        entry["tokens"][str(block)] = _b64(quantise(t))
        colours, info = pca_rgb(t)
        entry["pca"][str(block)] = _b64((colours * 255).round().to(torch.uint8))
        entry["pca_info"][str(block)] = info
    if masks is not None:
        labels = patch_majority_labels(masks, model.patch_size, num_classes=len(SEG_CLASSES))
        entry["labels"] = _b64(labels.to(torch.uint8))
    return entry


def _model_entry(model: TokenModel, images: ExploreImages, opts: ExploreOptions, run: ModelOptions) -> dict:
    pixels, masks = images.at(model.image_size)
    tokens = extract_patch_tokens(
        model,
        pixels,
        model_blocks(model, opts.blocks),
        key=TokenKey("explore"),
        **run.extraction(opts.progress),
    )
    return model_entry(model, tokens, masks)


def page_data(
    entries: list[dict],
    pictures: torch.Tensor,
    names: Sequence[str],
    where: str,
    warnings: Sequence[str] = (),
) -> dict:
    """The page's data: model ``entries`` (``model_entry``), the ``(N, 3, S, S)`` uint8 pictures shown
    and their names, a line saying where the images came from, and warnings shown as a red banner."""
    return {
        "warnings": list(warnings),
        "format": "viny-explorer/1",
        "images": [{"name": n, "png": _png(p)} for n, p in zip(names, pictures, strict=True)],
        "image_source": where,
        "classes": list(SEG_CLASSES),
        "display_px": DISPLAY_PX,
        "similarity_range": list(SIMILARITY_RANGE),
        "colours": colour_scale(),
        "quant": QUANT,
        "models": entries,
    }


def explorer_data(
    models: Sequence[TokenModel],
    images: ExploreImages,
    opts: ExploreOptions = ExploreOptions(),
    model: ModelOptions = ModelOptions(),
) -> dict:
    """Everything the page shows, as JSON-ready data (tokens and colours base64); the tokens extracted
    with ``model``'s device, batch size and cache."""
    pixels, _ = images.at(max(m.image_size for m in models))
    entries = [_model_entry(m, images, opts, model) for m in models]
    return page_data(entries, pixels, images.names, images.where)


def write_page(data: dict, out: str | Path) -> int:
    """Write ``render_page(data)`` to ``out`` atomically; its size in bytes."""
    from viny_probe.checkpoint import atomic_write_bytes

    page = render_page(data).encode("utf-8")
    atomic_write_bytes(Path(out), lambda f: f.write(page))
    return len(page)


def render_page(data: dict) -> str:
    """The HTML page for ``data`` (``explorer_data``): the template with the data inlined."""
    template = resources.files("viny_probe.resources").joinpath("explorer.html").read_text(encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return template.replace("__VINY_DATA__", payload)


def read_page_data(path: str | Path) -> dict:
    """The data inlined in an explorer page (what tests and notebooks compare against)."""
    text = Path(path).read_text(encoding="utf-8")
    start = text.index('<script id="viny-data" type="application/json">') + len(
        '<script id="viny-data" type="application/json">'
    )
    end = text.index("</script>", start)
    return json.loads(text[start:end].replace("<\\/", "</"))


def decode_tokens(entry: dict, block: int, num_images: int) -> torch.Tensor:
    """A model entry's int8 tokens of ``block`` as ``(N, P, D)``."""
    raw = np.frombuffer(base64.b64decode(entry["tokens"][str(block)]), dtype=np.int8)
    return torch.from_numpy(raw.copy()).reshape(num_images, entry["grid"] ** 2, entry["dim"])


def build_explorer(
    models: Sequence[TokenModel],
    images: ExploreImages,
    out: str | Path,
    opts: ExploreOptions = ExploreOptions(),
    model: ModelOptions = ModelOptions(),
    say=None,
) -> dict:
    """Write the page to ``out`` (checked before any token is computed); returns a summary (file,
    bytes, models, images, blocks). ``model``: the extraction's device, batch size and token cache
    (``ModelOptions``). ``say``: where the size estimate is announced (a callable)."""
    if not models:
        raise VinyError("viny explore needs at least one model")
    if len(images.names) < 1:
        raise VinyError("viny explore needs at least one image")
    out = Path(out)
    if out.is_dir():
        raise VinyError(f"{out} is a folder; -o names the HTML file to write (e.g. {out / 'explorer.html'})")
    estimate = explorer_size(models, len(images.names), opts.blocks)
    if say is not None:
        say(
            f"explorer: {len(models)} model(s) x {len(images.names)} images, about "
            f"{estimate / 1e6:.1f} MB -> {out}"
        )
    if estimate > opts.max_mb * 1e6:
        raise VinyError(
            f"the explorer page would be about {estimate / 1e6:.0f} MB, over --max-mb {opts.max_mb:g}: "
            "show fewer images (--images), fewer blocks (--layer 4,8,12) or fewer models, or raise --max-mb"
        )
    size = write_page(explorer_data(models, images, opts, model), out)
    return {
        "file": str(out),
        "bytes": size,
        "models": [{"name": m.name, "weights": weights_line(m)} for m in models],
        "images": len(images.names),
        "image_source": images.where,
        "blocks": {m.name: model_blocks(m, opts.blocks) for m in models},
    }


def dataset_images(
    models: Sequence[TokenModel], data: EvalSet = EvalSet(), count: int = DEFAULT_IMAGES
) -> tuple[ExploreImages, list[str]]:
    """The first ``count`` images of the evaluation split the diagnostics use (``data``: dataset, split
    seed and test size read off all the viny checkpoints' lineages unless given; its probe and test
    image counts are not read), refused where a checkpoint's lineage trained on them
    (``data.allow_overlap``: warnings instead, returned)."""
    from viny_probe.analysis.evaluation_data import load_probe_data, resolve_evaluation
    from viny_probe.analysis.lineage import guard_evaluation
    from viny_probe.checks import check_positive_int

    count = check_positive_int(count, "--images")
    metas = [(m.name, m.meta) for m in models]
    chosen = resolve_evaluation(metas, data.dataset, data.split_seed, data.test_size, data.resize)
    sets: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    ids: list[str] = []

    def at(size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if size not in sets:
            _, test, _ = load_probe_data(
                chosen["dataset"],
                size,
                data.data_root,
                chosen["split_seed"],
                chosen["test_size"],
                probe_images=2,
                test_images=count,
                resize=chosen["resize"],
            )
            sets[size] = (test.images, test.masks)
            ids[:] = list(test.ids)
        return sets[size]

    first = max(m.image_size for m in models)
    at(first)
    warnings = guard_evaluation(
        [(m.name, m.meta) for m in models if m.meta], chosen["dataset"], ids, data.allow_overlap
    )
    where = (
        f"{len(ids)} test images of {chosen['dataset']} (split seed {chosen['split_seed']}, test size "
        f"{chosen['test_size']})"
    )
    return ExploreImages([f"{chosen['dataset']}:{i}" for i in range(len(ids))], at, where), warnings


def file_images(paths: Sequence[str | Path]) -> ExploreImages:
    """Image files (any size; resized to each model's input) or embedded ``DATASET:INDEX`` names; trimaps
    where every image has one (embedded test images)."""
    from viny_probe.analysis.images import load_named_image

    if not paths:
        raise VinyError("viny explore needs at least one image (files, or --dataset NAME --images N)")
    sets: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    names: list[str] = []

    def at(size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        if size not in sets:
            named = [load_named_image(p, size) for p in paths]
            masks = [n.mask for n in named]
            sets[size] = (
                torch.stack([n.pixels for n in named]),
                torch.stack(masks) if all(m is not None for m in masks) else None,
            )
            names[:] = [n.stem for n in named]
        return sets[size]

    at(DISPLAY_PX)
    return ExploreImages(list(names), at, f"{len(paths)} images given")
