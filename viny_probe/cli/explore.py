"""`viny explore`: a thin wrapper around ``viny_probe.analysis.explore``."""

from __future__ import annotations

from pathlib import Path

import typer

from ..analysis.options import EvalSet, ExploreOptions, ExtractOptions, ModelOptions
from ..progress import console
from .analysis import heads_option
from .app import app
from .options import (
    INTERRUPTED_NOTHING_WRITTEN,
    batch_size_option,
    check_output,
    dataset_option,
    device_option,
    interruptible,
    json_option,
    out_option,
    print_json,
    quiet_option,
    split_seed_option,
)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def split_models_and_images(items: list[str]) -> tuple[list[str], list[str]]:
    """Positional arguments -> (models, images): an image is an existing file with an image suffix, or
    an embedded ``DATASET:INDEX`` (toy-pets:3); everything else names a model."""
    from ..analysis.images import EMBEDDED_IMAGE

    models, images = [], []
    for item in items:
        path = Path(item)
        is_image = (path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()) or bool(
            EMBEDDED_IMAGE.match(item)
        )
        (images if is_image else models).append(item)
    return models, images


@app.command("explore")
@interruptible(INTERRUPTED_NOTHING_WRITTEN)
def explore_command(
    items: list[str] = typer.Argument(
        ...,
        help="models (viny checkpoints, timm:NAME, hf:FOLDER, py:MODULE:FUNCTION), then optionally image "
        "files or embedded DATASET:INDEX images; without images, --images test images of --dataset",
    ),
    out: Path = out_option(Path("explorer.html"), "file", "the HTML file to write (default explorer.html)"),
    dataset: str | None = dataset_option(
        "images from this dataset's test split (default: the first checkpoint's, else toy-pets)"
    ),
    images: int = typer.Option(ExploreOptions.images, "--images", help="how many test images to show"),
    data_root: str | None = typer.Option(
        None, envvar="VINY_DATA_ROOT", help="folder of the real dataset, or its parent"
    ),
    split_seed: int | None = split_seed_option(),
    test_size: int | None = typer.Option(None, help="the fixed test set's size (default: the checkpoint's)"),
    layer: str = typer.Option(
        ExploreOptions.blocks, "--layer", help="blocks in the page: all | final | 3,6,12"
    ),
    max_mb: float = typer.Option(
        ExploreOptions.max_mb, "--max-mb", help="refuse a page larger than this (MB)"
    ),
    allow_overlap: bool = typer.Option(
        EvalSet.allow_overlap,
        "--allow-overlap",
        help="show images the checkpoint's lineage trained on (refused by default)",
    ),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    device: str = device_option(),
    batch_size: int = batch_size_option(ModelOptions.batch_size),
    heads: int | None = heads_option(),
) -> None:
    """One self-contained HTML page to look at patch tokens: click a patch to see its cosine similarity
    to every patch of every image, per block (slider) and per model (rows); a PCA-RGB view per block;
    hover for a patch's trimap label. No server: open the file in a browser (docs/explore.md).

    Examples: viny explore runs/pre/final.pt runs/seg/final.pt -o explorer.html;
    viny explore timm:vit_small_patch16_224 cat.jpg dog.jpg --layer 4,8,12
    """
    from ..analysis.diagnose import load_models
    from ..analysis.explore import build_explorer, dataset_images, file_images
    from ..analysis.sources import with_heads

    check_output(out, "file")
    sources, image_items = split_models_and_images(items)
    if not sources:
        raise typer.BadParameter("name at least one model before the images", param_hint="ITEMS")
    if image_items and (dataset or images != ExploreOptions.images):
        raise typer.BadParameter("give image files, or --dataset/--images, not both", param_hint="--dataset")
    progress = not (quiet or as_json)
    model = ModelOptions(heads=heads, device=device, batch_size=batch_size)
    models = load_models([with_heads(s, heads) for s in sources], model)
    warnings: list[str] = []
    if image_items:
        shown = file_images(image_items)
    else:
        data = EvalSet(dataset, data_root, split_seed, test_size, allow_overlap=allow_overlap)
        shown, warnings = dataset_images(models, data, images)
    opts = ExploreOptions(blocks=layer, max_mb=max_mb, progress=progress)
    summary = build_explorer(models, shown, out, opts, model, say=console.print if progress else None)
    summary["warnings"] = warnings
    if as_json:
        print_json(summary)
        return
    console.print(
        f"explorer: [bold]{summary['file']}[/] ({summary['bytes'] / 1e6:.1f} MB, {summary['images']} images)"
    )
    for line in warnings:
        console.print(f"[yellow]warning:[/] {line}", highlight=False)


@app.command("extract")
@interruptible(
    "Shards written before the interrupt are kept, but without index.json the folder is unfinished; run the command again (with --force)."
)
def extract_command(
    source: str = typer.Argument(
        ..., help="the model (viny checkpoint, timm:NAME, hf:FOLDER, py:MODULE:FUNCTION)"
    ),
    out: Path = out_option(Path("viny-tokens"), "folder", "the folder to write (index.json + .npy shards)"),
    dataset: str | None = dataset_option(
        "the images' dataset (default: the checkpoint's, from its lineage; else toy-pets)"
    ),
    data_root: str | None = typer.Option(
        None, envvar="VINY_DATA_ROOT", help="folder of the real dataset, or its parent"
    ),
    split_seed: int | None = split_seed_option(),
    test_size: int | None = typer.Option(None, help="the fixed test set's size (default: the checkpoint's)"),
    probe_images: int | None = typer.Option(
        EvalSet.probe_images,
        help="pool images (those the probe is fitted on; default: 128,000 patches' worth)",
    ),
    test_images: int = typer.Option(EvalSet.test_images, help="test images"),
    layer: str = typer.Option(ExtractOptions.blocks, "--layer", help="blocks to write: all | final | 3,6,12"),
    dtype: str = typer.Option(ExtractOptions.dtype, help="float16 (half the size) | float32"),
    shard_images: int = typer.Option(
        ExtractOptions.shard_images, help="images per shard (memory holds one shard's tokens)"
    ),
    force: bool = typer.Option(
        ExtractOptions.force, "--force", help="write into a folder that already holds tokens"
    ),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    device: str = device_option(),
    batch_size: int = batch_size_option(ModelOptions.batch_size),
    heads: int | None = heads_option(),
) -> None:
    """Write a model's patch tokens to disk, per block, in .npy shards with an index of image ids, for
    your own tools; viny's diagnostics read the folder back as the model tokens:DIR (docs/any-model.md).

    The images are the ones `viny probe` / `viny diagnose` use: the first --probe-images pool images and
    the first --test-images test images of the split (dataset, split seed and test size from a viny
    checkpoint's lineage unless given).

    Example: viny extract timm:vit_small_patch16_224.augreg_in21k --dataset toy-pets -o vits-tokens;
    viny probe tokens:vits-tokens --dataset toy-pets
    """
    from ..analysis.token_store import extract_tokens

    check_output(out, "folder")
    summary = extract_tokens(
        source,
        out,
        ExtractOptions(blocks=layer, dtype=dtype, shard_images=shard_images, force=force),
        ModelOptions(heads=heads, device=device, batch_size=batch_size),
        EvalSet(dataset, data_root, split_seed, test_size, probe_images, test_images),
        progress=not (quiet or as_json),
    )
    if as_json:
        print_json(summary)
        return
    rate = summary["images_per_second"]
    console.print(
        f"wrote [bold]{summary['out']}[/]: {summary['images']} images x {len(summary['blocks'])} blocks "
        f"({summary['dtype']}), {summary['bytes'] / 1e6:.1f} MB, {rate:.1f} img/s"
    )
