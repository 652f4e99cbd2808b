"""The library behind ``viny similarity-map``: Fig 6 for any image, cosine similarity between a
reference patch and every patch of the same image."""

from __future__ import annotations

from pathlib import Path

from viny_probe.analysis.embeddings import (
    LayerSpec,
    check_device,
    extract_patch_tokens,
    layer_label,
    parse_layers,
)
from viny_probe.analysis.images import load_images_for
from viny_probe.analysis.options import DEFAULT_BACKGROUND, EvalSet, ModelOptions
from viny_probe.analysis.plots import plot_reference_grid, plot_similarity_overlay
from viny_probe.analysis.reference import (
    choose_reference_patches,
    parse_patch,
    pixel_to_patch,
    similarity_map,
)
from viny_probe.analysis.sources import TokenModel, load_with, with_heads
from viny_probe.analysis.stamp import stamp_footer, stamp_warnings
from viny_probe.errors import VinyError


def _parse_pixel_pair(text: str) -> tuple[int, int]:
    parts = str(text).replace(" ", "").split(",")
    try:
        y, x = (int(p) for p in parts)
    except ValueError:
        raise VinyError(f"pixel must be two integers 'Y,X', got {text!r}") from None
    return y, x


def _pixel_patch(
    pixel: str | tuple[int, int], original_hw: tuple[int, int], cfg: TokenModel
) -> tuple[int, int]:
    """Pixel (y, x) of the ORIGINAL image -> patch of the resized model input."""
    y, x = _parse_pixel_pair(pixel) if isinstance(pixel, str) else (int(pixel[0]), int(pixel[1]))
    h, w = original_hw
    if not (0 <= y < h and 0 <= x < w):
        raise VinyError(
            f"pixel = ({y}, {x}) is outside the {h}x{w} image: y must be in 0..{h - 1}, x in 0..{w - 1}"
        )
    s = cfg.image_size
    return pixel_to_patch(min(s - 1, y * s // h), min(s - 1, x * s // w), cfg.patch_size, s)


def similarity_map_for_image(
    ckpt: str | Path | TokenModel,
    image: str | Path,
    patch: str | tuple[int, int] | None = None,
    pixel: str | tuple[int, int] | None = None,
    out: str | Path | None = None,
    layer: LayerSpec = "final",
    *,
    model: ModelOptions = ModelOptions(),
    data: EvalSet = EvalSet(),
    background: str = DEFAULT_BACKGROUND,
) -> dict:
    """Cosine-similarity maps of reference patches of one image, drawn next to the input.

    ckpt: a viny checkpoint, ``timm:NAME``, ``hf:FOLDER``, ``py:MODULE:FUNCTION`` or a TokenModel,
        loaded and run with ``model`` (``ModelOptions``: weights, input size, normalisation, heads,
        device; the tokens are not cached); the map has the model's own g x g grid.

    image: an image file of any mode/size (resized to the model's input, aspect ratio not kept), or
        ``"toy-pets:17"`` = image 17 of the embedded toy-pets test split (``data.split_seed`` and
        ``data.test_size``, from the checkpoint's lineage unless given; any labelled ``toy-*`` set
        works; an existing file of that name wins). An embedded image the lineage trained on is
        refused unless ``data.allow_overlap``.
    patch: ``"ROW,COL"`` on the patch grid; pixel: ``"Y,X"`` in the original image's pixels. Neither:
        the study's three references when the image has a trimap (background patch (0, 0), or the
        most-background corner with ``background="most-background-corner"``; the most-foreground
        interior patch; the most-boundary patch), else the centre and the top-left corner.
    out: the PNG (default ``similarity-<image>.png``). One reference: ``out`` holds the input, the g x g
        map and the upsampled overlay. Several: ``out`` is a grid (rows = references) and each reference
        also gets ``<out stem>-<reference>.png`` with its overlay. Every PNG has its JSON beside it.
    """
    if patch is not None and pixel is not None:
        raise VinyError("give either --patch ROW,COL or --pixel Y,X, not both")
    check_device(model.device)  # before any model or data is loaded
    ckpt = with_heads(ckpt, model.heads)
    cfg = load_with(ckpt, model)
    name = cfg.source if isinstance(ckpt, TokenModel) else str(ckpt)
    layers = parse_layers(layer, cfg.depth)
    if isinstance(layers, str) and layers == "all" or isinstance(layers, list) and len(layers) != 1:
        raise VinyError("similarity-map draws one layer: give 'final' or one block number")
    (named,), warnings = load_images_for(
        name, cfg.meta, [image], cfg.image_size, data.split_seed, data.test_size, data.allow_overlap
    )
    picture, mask, source, stem = named.pixels, named.mask, named.source, named.stem
    if patch is not None:
        refs = {
            "patch": parse_patch(patch, cfg.grid)
            if isinstance(patch, str)
            else parse_patch(f"{patch[0]},{patch[1]}", cfg.grid)
        }
    elif pixel is not None:
        refs = {"pixel": _pixel_patch(pixel, named.original_hw, cfg)}
    elif mask is not None:
        refs = choose_reference_patches(mask, cfg.patch_size, background=background)
    else:
        refs = choose_reference_patches(None, grid=cfg.grid)
    tokens = extract_patch_tokens(
        cfg, picture[None], layers, use_cache=False, progress=False, device=model.device
    )
    label, emb = next(iter(tokens.items()))
    maps = {name: similarity_map(emb[0], ref) for name, ref in refs.items()}

    out = Path(out) if out is not None else Path(f"similarity-{stem}.png")
    if out.suffix.lower() != ".png":
        raise VinyError(f"-o must name a .png file, got {str(out)!r}")
    where = layer_label(label)
    files = []
    if len(refs) == 1:
        ((name, ref),) = refs.items()
        plot_similarity_overlay(
            picture, maps[name], ref, out, title=f"{source}: cosine to patch {ref} ({where})", ref_name=name
        )
        files.append(out)
    else:
        plot_reference_grid(picture, {cfg.name or name: maps}, refs, out, title=f"{source} ({where})")
        files.append(out)
        for name, ref in refs.items():
            target = out.with_name(f"{out.stem}-{name}.png")
            plot_similarity_overlay(
                picture,
                maps[name],
                ref,
                target,
                title=f"{source}: {name} patch {ref} ({where})",
                ref_name=name,
            )
            files.append(target)
    stamp_warnings([*files, *(f.with_suffix(".json") for f in files)], warnings)
    stamp_footer(files, [f"{cfg.name}: {cfg.weights()}"])
    return {
        "checkpoint": name,
        "grid": [cfg.grid, cfg.grid],
        "image": source,
        "layer": where,
        "refs": {name: list(ref) for name, ref in refs.items()},
        "maps": {name: m.tolist() for name, m in maps.items()},
        "files": [str(f) for f in files],
        "warnings": warnings,
    }
