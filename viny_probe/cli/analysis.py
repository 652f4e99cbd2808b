"""`viny probe`, `viny similarity-map`, `viny reconstruct`, `viny diagnose`, `viny import-checkpoint`: thin
wrappers around ``viny_probe.analysis`` (``checkpoint_probe``, ``similarity_image``, ``reconstruct``,
``diagnose``, ``authors``). The tables of diagnostics take their columns from the diagnostics registry."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from typer.core import TyperCommand

from ..analysis.options import (
    POOL_PATCHES,
    TOKEN_DTYPES,
    DiagnoseOptions,
    EvalSet,
    ModelOptions,
    ProbeOptions,
)
from ..data.decode import RESIZE_FILTERS
from ..progress import console
from .app import app
from .options import (
    INTERRUPTED_NOTHING_WRITTEN,
    INTERRUPTED_PARTIAL,
    RESULT_FILE_HELP,
    Background,
    at_least,
    batch_size_option,
    check_output,
    choices,
    dataset_option,
    device_option,
    interruptible,
    json_option,
    out_option,
    print_json,
    quiet_option,
    split_seed_option,
    value,
    write_result,
)

CKPT_HELP = (
    "the model: a viny checkpoint (run folder's final.pt), the study authors' state_dict (.pth), "
    "timm:NAME[.TAG][,KEY=VALUE...] (pretrained), hf:FOLDER (a local save_pretrained folder) or py:MODULE:FUNCTION "
    "(docs/any-model.md)"
)
WEIGHTS_HELP = (
    "weights of a timm: model: a .safetensors file or a torch state_dict (default: timm's pretrained "
    "weights for NAME.TAG from the Hugging Face cache; ,pretrained=false in the string for random init)"
)
IMG_SIZE_HELP = "input size of a timm:/hf:/py: model (default: the model's own; a viny checkpoint's is fixed)"


def _img_size_option():
    return typer.Option(None, "--img-size", help=IMG_SIZE_HELP)


def _norm_option(stat: str, whose: str = "the model's"):
    """``--mean`` / ``--std``: R,G,B values replacing the model's own normalisation."""
    return typer.Option(None, help=f"R,G,B {stat} replacing {whose} own")


BATCH_HELP = "images per forward pass while extracting tokens"
NO_CACHE_HELP = (
    "compute the patch tokens again, neither reading nor writing the token cache (`viny cache info`)"
)


HEADS_HELP = (
    "attention heads of a study authors' state_dict (.pth), which records none: needed unless `viny export` "
    "wrote its config.json beside it or it has the study's 8 x 64 width"
)


def heads_option():
    return typer.Option(None, "--heads", callback=at_least("--heads", 1), help=HEADS_HELP)


def _no_cache_option():
    return typer.Option(not ModelOptions.use_cache, "--no-cache", help=NO_CACHE_HELP)


def _batch_size_option():
    return batch_size_option(ModelOptions.batch_size, BATCH_HELP)


def _knn_option():
    return typer.Option(ProbeOptions.knn, "--knn/--no-knn", help="also run the kNN patch classifier")


PROBE_BACKEND_HELP = (
    "linear probe solver: torch (batched over C, on the tokens' device), sklearn (the reference), "
    "or auto (torch)"
)


def _probe_backend_option():
    return typer.Option(ProbeOptions.backend, "--probe-backend", help=PROBE_BACKEND_HELP)


TOKEN_DTYPE_HELP = (
    "dtype the extracted tokens are kept in (memory and token cache); bfloat16 halves their bytes, "
    "every diagnostic still accumulates in float32 or float64; float16 overflows past 65,504"
)


def _token_dtype_option():
    return typer.Option(ModelOptions.token_dtype, "--token-dtype", help=TOKEN_DTYPE_HELP)


def _model_options(
    weights, img_size, mean, std, heads, device, batch_size=None, no_cache=False, token_dtype=None
):
    """The ModelOptions of a command's model options (``--mean`` / ``--std`` parsed; a command without
    --batch-size or --token-dtype keeps the default)."""
    return ModelOptions(
        weights=weights,
        img_size=img_size,
        mean=_rgb(mean, "--mean"),
        std=_rgb(std, "--std"),
        heads=heads,
        device=device,
        batch_size=ModelOptions.batch_size if batch_size is None else batch_size,
        use_cache=not no_cache,
        token_dtype=ModelOptions.token_dtype if token_dtype is None else value(token_dtype),
    )


DATASET_HELP = (
    "a dataset with per-pixel masks (a real one with --data-root); default: the dataset of the "
    "checkpoint's trimap stage, from its lineage; else toy-pets, or pets for encoders that saw real data"
)

OVERLAP_HELP = (
    "evaluate even on images the checkpoint's lineage trained on (refused by default); the warning is "
    "written into every output"
)

# analysis.eval_protocol.PROTOCOLS (not imported here: it loads torch; tests check the two agree)
EvalProtocol = choices("EvalProtocol", ("viny", "authors"))
Resize = choices("Resize", RESIZE_FILTERS)
TokenDtype = choices("TokenDtype", TOKEN_DTYPES)
EVAL_PROTOCOL_HELP = (
    "viny = probe fitted on pool images, everything scored on held-out test images (default, every "
    "preset); authors = the study's code: its first 2,048 training images, raw [0, 1] and augmented "
    "(flip, contrast 0.3), probe scored on the images it was fitted on (training accuracy), no kNN, "
    "no overlap refusal; every output is labelled (docs/fidelity.md)"
)


def _eval_protocol_option():
    return typer.Option("viny", "--eval-protocol", help=EVAL_PROTOCOL_HELP)


def _resize_option():
    return typer.Option(
        None,
        "--resize",
        help="the filter a real dataset's images are resized with (default: the one the checkpoints "
        "trained with, from their config; bilinear for other models or where they differ)",
    )


def _overlap_option(help: str = OVERLAP_HELP):
    return typer.Option(EvalSet.allow_overlap, "--allow-overlap", help=help)


def _rgb(text: str | None, name: str) -> tuple[float, float, float] | None:
    """``--mean 0.5,0.5,0.5`` -> (0.5, 0.5, 0.5)."""
    if text is None:
        return None
    from ..errors import VinyError

    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise VinyError(
            f"{name} must be three comma-separated numbers R,G,B (e.g. 0.5,0.5,0.5), got {text!r}"
        )
    return values


def _print_warnings(warnings: list[str]) -> None:
    for line in warnings:
        console.print(f"[bold yellow]warning:[/] {line}")


def _reflow(fn):
    """Join each docstring paragraph into one line, so that typer's help re-wraps it to the terminal."""
    import inspect

    paragraphs = inspect.cleandoc(fn.__doc__ or "").split("\n\n")
    fn.__doc__ = "\n\n".join(" ".join(line.strip() for line in p.splitlines()) for p in paragraphs)
    return fn


def probe_tables(result: dict) -> list[Table]:
    """The rich tables `viny probe` prints for a probe_checkpoint result: for one layer, the rows of
    every registered diagnostic; for several, one row per block and the registered per-block columns."""
    from ..analysis.registry import BLOCKS, columns, format_value, registered, table_row

    d = result["data"]
    grid = result.get("model", {}).get("grid")
    caption = (
        f"{d['dataset']} at {d['image_size']} px"
        + (f" ({grid[0]} x {grid[1]} patches)" if grid else "")
        + f", split seed {d['split_seed']}: probe fitted on {d['probe_images']} "
        f"pool images ({d['probe_patches']:,} patches), scored on {d['test_images']} test images "
        f"({d['test_patches']:,} patches); variances and rank on the test images"
    )
    if d.get("eval_protocol") == "authors":
        caption = (
            f"{d['protocol_label']}: {d['dataset']} at {d['image_size']} px, split seed {d['split_seed']}: "
            f"{d['images_from']}, {d['augmentation']}, {d['inputs']}; probe fitted and scored on those "
            f"{d['test_images']} images ({d['test_patches']:,} patches): a training accuracy"
        )
    if d.get("token_dtype"):
        caption += f"\ntokens stored as {d['token_dtype']} (diagnostics accumulate in float32/float64)"
    if d.get("probe_subsample"):
        caption += f"\nmemory bound: {d['probe_subsample']['why']}"
    layers = result["layers"]
    if len(layers) == 1:
        ((name, m),) = layers.items()
        t = Table(title=f"viny probe: {result['checkpoint']} ({name})", caption=caption)
        t.add_column("diagnostic")
        t.add_column("value", justify="right")
        for diagnostic in registered():
            for row in diagnostic.terminal_rows(m.get(diagnostic.key)):
                t.add_row(*row)
        return [t]
    t = Table(title=f"viny probe: {result['checkpoint']}, per block", caption=caption)
    shown = columns(BLOCKS)
    t.add_column("layer", justify="left", no_wrap=True)
    for column in shown:
        t.add_column(column.terminal_title, justify="right")
    for name, m in layers.items():
        row = table_row(m)
        t.add_row(name, *(format_value(row[c.key], c.fmt) for c in shown))
    return [t]


def diagnose_table(summary: dict, out: Path) -> Table:
    """The Table 2 `viny diagnose` prints: the table2.md columns, one row per checkpoint."""
    from ..analysis.registry import TABLE2, columns, format_value

    t = Table(
        title="Table 2 (final block)",
        caption=f"written to {out}/: " + ", ".join(summary["files"].values()) + ", summary.md",
    )
    shown = columns(TABLE2)
    t.add_column("checkpoint", justify="left", no_wrap=True)
    for column in shown:
        t.add_column(column.terminal_title, justify="right")
    for r in summary["table2"]:
        t.add_row(r["checkpoint"], *(format_value(r[c.key], c.fmt) for c in shown))
    return t


@app.command("probe")
@_reflow
@interruptible(INTERRUPTED_NOTHING_WRITTEN)
def probe_command(
    ckpt: str = typer.Argument(..., help=CKPT_HELP),
    dataset: str | None = dataset_option(DATASET_HELP, masks=True),
    data_root: str | None = typer.Option(
        None, envvar="VINY_DATA_ROOT", help="folder of the real dataset, or its parent"
    ),
    layer: str = typer.Option(
        "final", help="final (last block after the final LayerNorm) | all | a block number | 3,6,12"
    ),
    split_seed: int | None = split_seed_option(),
    test_size: int | None = typer.Option(
        None, help="the fixed test set's size (default: the checkpoint's, from its lineage)"
    ),
    allow_overlap: bool = _overlap_option(),
    eval_protocol: EvalProtocol = _eval_protocol_option(),
    resize: Resize | None = _resize_option(),
    probe_images: int | None = typer.Option(
        EvalSet.probe_images,
        help=f"pool images the probe is fitted on (default: the study's {POOL_PATCHES:,} patches' worth: "
        f"{POOL_PATCHES // 64} ViNy images, {-(-POOL_PATCHES // 196)} at 14 x 14 patches)",
    ),
    test_images: int = typer.Option(EvalSet.test_images, help="test images the probe is scored on"),
    knn: bool = _knn_option(),
    out: Path | None = out_option(None, "file", RESULT_FILE_HELP),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    weights: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    img_size: int | None = _img_size_option(),
    mean: str | None = _norm_option("mean"),
    std: str | None = _norm_option("std"),
    device: str = device_option(),
    batch_size: int = _batch_size_option(),
    no_cache: bool = _no_cache_option(),
    heads: int | None = heads_option(),
    probe_backend: str = _probe_backend_option(),
    token_dtype: TokenDtype = _token_dtype_option(),
) -> None:
    """Table 2 for one model: variances, linear patch probe, kNN, effective rank.

    Within/across-image variance and their ratio, the linear patch probe (fitted on pool images, C
    chosen on held-out pool images, scored on the fixed test set; it never sees a test image), kNN
    accuracy and effective rank, at the final block (default), one block or every block.

    The model is a viny checkpoint or any vision transformer: timm:NAME (--weights FILE), hf:FOLDER or
    py:MODULE:FUNCTION, measured on its own patch grid (docs/any-model.md).

    Examples: viny probe runs/spatial/final.pt --layer all;
    viny probe timm:vit_small_patch16_224 --weights vit_s.safetensors
    """
    check_output(out, "file")
    probe = ProbeOptions(probe_backend, knn)  # an unknown backend: one line now, before any work
    from ..analysis.checkpoint_probe import probe_checkpoint

    result = probe_checkpoint(
        ckpt,
        _model_options(weights, img_size, mean, std, heads, device, batch_size, no_cache, token_dtype),
        EvalSet(
            dataset,
            data_root,
            split_seed,
            test_size,
            probe_images,
            test_images,
            allow_overlap,
            value(eval_protocol),
            value(resize),
        ),
        probe,
        layer=layer,
        progress=not (quiet or as_json),
    )
    write_result(out, result)
    if as_json:
        print_json(result)
        _print_warnings(result["warnings"])
        return
    for table in probe_tables(result):
        console.print(table)
    _print_warnings(result["warnings"])


@app.command("similarity-map")
@_reflow
@interruptible(INTERRUPTED_PARTIAL)
def similarity_map_command(
    ckpt: str = typer.Argument(..., help=CKPT_HELP),
    image: str = typer.Argument(
        ...,
        help="an image file (any size and mode; resized to the model's input, aspect ratio not kept), or "
        "DATASET:INDEX for an embedded image: toy-pets:17 = image 17 of the toy-pets test split "
        "(--split-seed, --test-size), the same images `viny probe` and `viny diagnose` score on",
    ),
    patch: str | None = typer.Option(None, help="reference patch ROW,COL on the patch grid (0-based)"),
    pixel: str | None = typer.Option(None, help="reference pixel Y,X in the original image's pixels"),
    out: Path | None = out_option(
        None,
        "file",
        "output PNG (default similarity-IMAGE.png); a .json goes beside it, and with several references "
        "OUT-REFERENCE.png (+ .json) for each",
    ),
    layer: str = typer.Option("final", help="final | a block number"),
    split_seed: int | None = split_seed_option(None, "for DATASET:INDEX; default: the checkpoint's"),
    test_size: int | None = typer.Option(
        None, help="test-set size for DATASET:INDEX (default: the checkpoint's)"
    ),
    background: Background = typer.Option(
        DiagnoseOptions.background,
        help="background reference: study = patch (0, 0) as the study's code; most-background-corner",
    ),
    allow_overlap: bool = _overlap_option(),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    weights: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    img_size: int | None = _img_size_option(),
    mean: str | None = _norm_option("mean"),
    std: str | None = _norm_option("std"),
    device: str = device_option(),
    heads: int | None = heads_option(),
) -> None:
    """Fig 6 for any image: cosine similarity between a reference patch and every patch.

    Without --patch/--pixel: the study's three references for an embedded image with a trimap
    (background patch (0, 0), most-foreground interior patch, most-boundary patch), else the centre and the
    top-left corner. One reference: OUT shows the input with the reference in red, the map (colour range
    -0.5..1) and the map upsampled over the input. Several: OUT is a grid of all references and each
    also gets OUT-REFERENCE.png. A .json with the numbers sits beside every PNG.

    Examples: viny similarity-map final.pt cat.jpg --patch 3,4 -o cat.png;
    viny similarity-map final.pt toy-pets:17
    """
    check_output(out or Path("similarity-map.png"), "file")  # default: similarity-IMAGE.png, here
    from ..analysis.similarity_image import similarity_map_for_image

    result = similarity_map_for_image(
        ckpt,
        image,
        patch,
        pixel,
        out,
        layer,
        model=_model_options(weights, img_size, mean, std, heads, device),
        data=EvalSet(split_seed=split_seed, test_size=test_size, allow_overlap=allow_overlap),
        background=value(background),
    )
    if as_json:
        print_json(result)
        _print_warnings(result["warnings"])
        return
    t = Table(title=f"similarity map: {result['image']} ({result['layer']})")
    t.add_column("reference")
    t.add_column("patch (row, col)", justify="right")
    t.add_column("mean cosine to others", justify="right")
    t.add_column("min cosine", justify="right")
    lowest = 1.0
    for name, ref in result["refs"].items():
        values = [v for row in result["maps"][name] for v in row]
        others = (sum(values) - 1.0) / max(1, len(values) - 1)
        lowest = min(lowest, min(values))
        t.add_row(name, f"{ref[0]}, {ref[1]}", f"{others:.3f}", f"{min(values):.3f}")
    console.print(t)
    if lowest > 0.5:
        console.print(
            f"[yellow]note:[/] every cosine is in {lowest:.2f}..1, so the study's fixed colour range -0.5..1 "
            "shows little contrast; the exact values are in the .json beside each PNG "
            "(`viny diagnose` also writes fig6_stretched.png with a stretched range)."
        )
    for f in result["files"]:
        console.print(f"wrote {f}")
    _print_warnings(result["warnings"])


@app.command("reconstruct")
@_reflow
@interruptible(INTERRUPTED_PARTIAL)
def reconstruct_command(
    ckpt: Path = typer.Argument(..., help="a `viny train simmim` checkpoint (its run folder's final.pt)"),
    images: list[str] | None = typer.Argument(
        None,
        help="image files (any size and mode; resized to the model's input) or DATASET:INDEX for an "
        "embedded test image (toy-pets:17 = image 17 of the toy-pets test split); default the first 4 "
        "toy-pets test images",
    ),
    out: Path = out_option(Path("reconstruct.png"), "file", "output PNG; a .json goes beside it"),
    mask_seed: int = typer.Option(
        0, "--mask-seed", help="seed of the masks (half the patches of each image)"
    ),
    split_seed: int | None = split_seed_option(
        None, "for DATASET:INDEX; default: the checkpoint's, from its lineage"
    ),
    test_size: int | None = typer.Option(
        None, help="test-set size for DATASET:INDEX (default: the checkpoint's, from its lineage)"
    ),
    allow_overlap: bool = _overlap_option(),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    device: str = device_option(),
) -> None:
    """Fig 2 for a SimMIM checkpoint: input | masked input | reconstruction, one row per image.

    Half of each image's patches are masked (blacked out in the middle column, as in the study's Fig 2), with masks drawn from
    --mask-seed, so the figure is reproducible and every checkpoint gets the same masks. The reconstruction
    is the decoder's pixels at the masked patches pasted into the visible ones. The JSON beside the
    PNG holds the images, their masks and each image's masked L1 (the training loss, on normalised
    pixels).

    Examples: viny reconstruct runs/simmim/final.pt -o fig2.png;
    viny reconstruct final.pt cat.jpg toy-pets:5 --mask-seed 3 -o cat.png
    """
    check_output(out, "file")
    from ..analysis.reconstruct import reconstruct_images

    data = EvalSet(split_seed=split_seed, test_size=test_size, allow_overlap=allow_overlap)
    result = reconstruct_images(ckpt, images, out, mask_seed, data=data, device=device)
    if as_json:
        print_json(result)
        _print_warnings(result["warnings"])
        return
    t = Table(title=f"SimMIM reconstructions: {ckpt} (mask seed {mask_seed})")
    t.add_column("image")
    t.add_column("masked L1", justify="right")
    for row in result["images"]:
        t.add_row(row["image"], f"{row['masked_l1']['reconstruction']:.4f}")
    t.add_row("[bold]mean[/]", f"{result['mean_masked_l1']['reconstruction']:.4f}")
    console.print(t)
    for f in result["files"]:
        console.print(f"wrote {f}")
    _print_warnings(result["warnings"])


class _ManyNamesCommand(TyperCommand):
    """Lets `--names A B C` give several values: every word after --names up to the next option is a name."""

    def parse_args(self, ctx, args):
        rewritten, taking = [], False
        for arg in args:
            if arg == "--names":
                taking = True
                continue
            if taking and not arg.startswith("-"):
                rewritten += ["--names", arg]
                continue
            taking = False
            rewritten.append(arg)
        return super().parse_args(ctx, rewritten)


@app.command("diagnose", cls=_ManyNamesCommand)
@_reflow
@interruptible(INTERRUPTED_PARTIAL)
def diagnose_command(
    ckpts: list[str] = typer.Argument(..., help="models to compare, in order (each " + CKPT_HELP + ")"),
    names: list[str] | None = typer.Option(
        None,
        "--names",
        help="one display name per checkpoint, after the checkpoints: --names A B C (or A,B,C); "
        "default: each checkpoint's run-folder name",
    ),
    out: Path = out_option(Path("viny-diagnose"), "folder", "output folder (the files are listed above)"),
    dataset: str | None = dataset_option(DATASET_HELP, masks=True),
    data_root: str | None = typer.Option(
        None, envvar="VINY_DATA_ROOT", help="folder of the real dataset, or its parent"
    ),
    split_seed: int | None = split_seed_option(None, "default: the first checkpoint's, from its lineage"),
    test_size: int | None = typer.Option(
        None, help="the fixed test set's size (default: the first checkpoint's, from its lineage)"
    ),
    allow_overlap: bool = _overlap_option(),
    eval_protocol: EvalProtocol = _eval_protocol_option(),
    resize: Resize | None = _resize_option(),
    background: Background = typer.Option(
        DiagnoseOptions.background,
        help="Fig 6 background reference: study = patch (0, 0) as the study's code; most-background-corner",
    ),
    probe_images: int | None = typer.Option(
        EvalSet.probe_images,
        help=f"pool images the final-block probe and kNN are fitted on (default: {POOL_PATCHES:,} patches' worth)",
    ),
    test_images: int = typer.Option(EvalSet.test_images, help="test images everything is measured on"),
    depth_probe_images: int = typer.Option(
        DiagnoseOptions.depth_probe_images, help="pool images the per-block probe is fitted on (cheaper)"
    ),
    cka_images: int = typer.Option(
        DiagnoseOptions.cka_images, help="test images whose patch tokens CKA compares"
    ),
    fig6_images: int = typer.Option(
        DiagnoseOptions.fig6_images, help="test images shown in Fig 6 (3 reference patches each)"
    ),
    knn: bool = _knn_option(),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
    weights: Path | None = typer.Option(
        None, help=WEIGHTS_HELP + "; with several timm: models put weights=FILE inside each string"
    ),
    img_size: int | None = _img_size_option(),
    mean: str | None = _norm_option("mean", "every model's"),
    std: str | None = _norm_option("std", "every model's"),
    device: str = device_option(),
    batch_size: int = _batch_size_option(),
    no_cache: bool = _no_cache_option(),
    heads: int | None = heads_option(),
    probe_backend: str = _probe_backend_option(),
    token_dtype: TokenDtype = _token_dtype_option(),
) -> None:
    """Compare models: Table 2, Figs 5-6, per-block curves, CKA, summary.md.

    Writes into OUT: table2.md/.json, fig5_similarity_vs_distance.png (+ fig5_by_class.png, split by
    same-/different-class pairs), fig6_reference_patches.png (the study's layout: one image, its
    target mask, rows = reference patches, columns = checkpoints as Spatial, CLS-Intel, Pretrained, others
    after), fig6_images.png (several images, one row per reference), depth_curves.png (every diagnostic per block), cka.png (linear CKA block by block,
    first vs each and consecutive checkpoints), summary.md + summary.json; a .json beside every PNG.

    Models may be viny checkpoints or any vision transformer (timm:NAME, hf:FOLDER, py:MODULE:FUNCTION),
    each on its own grid; CKA compares those on one grid (docs/any-model.md).

    Example: viny diagnose sim/final.pt cls/final.pt spa/final.pt --names Pretrained CLS Spatial -o diag
    """
    check_output(out, "folder")
    from ..analysis.diagnose import diagnose

    probe = ProbeOptions(probe_backend, knn)  # an unknown backend: one line now, before any work
    names = _split_names(names, len(ckpts)) or None
    summary = diagnose(
        ckpts,
        names,
        out,
        model=_model_options(weights, img_size, mean, std, heads, device, batch_size, no_cache, token_dtype),
        data=EvalSet(
            dataset,
            data_root,
            split_seed,
            test_size,
            probe_images,
            test_images,
            allow_overlap,
            value(eval_protocol),
            value(resize),
        ),
        probe=probe,
        figures=DiagnoseOptions(depth_probe_images, cka_images, fig6_images, value(background)),
        progress=not (quiet or as_json),
    )
    if as_json:
        print_json(summary)
        _print_warnings(summary["warnings"])
        return
    console.print(diagnose_table(summary, out))
    for line in summary.get("notes", []):
        console.print(f"[yellow]note:[/] {line}", highlight=False)
    console.print(f"summary: [bold]{Path(out) / 'summary.md'}[/]  ({summary['seconds']:.0f} s)")
    _print_warnings(summary["warnings"])


def _split_names(names: list[str] | None, count: int) -> list[str] | None:
    """`--names A,B,C` -> [A, B, C] (`--names A B C` is handled by _ManyNamesCommand)."""
    if not names:
        return None
    if len(names) == 1 and "," in names[0]:
        return [n.strip() for n in names[0].split(",")]
    return names


@app.command("import-checkpoint")
@_reflow
@interruptible("Nothing was written (the checkpoint is written whole or not at all); run the command again.")
def import_checkpoint_command(
    src: Path = typer.Argument(
        ..., help="the study authors' state_dict, e.g. encoder_vit_4M_pretrain_200K.pth"
    ),
    # `viny import-checkpoint SRC OUT`, the spelling before -o, still works (not shown in --help).
    out_argument: Path | None = typer.Argument(None, metavar="OUT", hidden=True),
    out: Path | None = out_option(
        None, "file", "the viny checkpoint to write (default: SRC with the suffix .viny.pt)"
    ),
    heads: int | None = heads_option(),
    force: bool = typer.Option(
        False, "--force", help="write into a run folder or over a file already there (refused otherwise)"
    ),
    as_json: bool = json_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Convert the study authors' encoder state_dict into a viny checkpoint.

    The result has regime "imported" and the source file and its digest in its lineage.

    Every analysis command also accepts the authors' file directly; importing once saves the conversion
    and gives a file `viny train --init` accepts.

    Example: viny import-checkpoint encoder_vit_4M_pretrain_200K.pth -o authors.pt
    """
    from ..analysis.authors import import_authors_checkpoint
    from ..analysis.embeddings import load_encoder
    from ..errors import VinyError
    from ..model import count_parameters

    if out is not None and out_argument is not None and out != out_argument:
        raise VinyError(f"two outputs given ({out_argument} and -o {out}); give one")
    target = out or out_argument or src.with_suffix(".viny.pt")
    check_output(target, "file")
    if heads is None:
        from ..analysis.sources.viny import export_beside

        beside = export_beside(src)  # `viny export --format authors` recorded the head count
        heads = beside["model_config"].get("heads") if beside else None
    written = import_authors_checkpoint(src, target, heads, force=force)
    encoder, ckpt = load_encoder(written)
    cfg = encoder.cfg
    if as_json:
        print_json(
            {
                "out": written,
                "model_config": cfg.to_dict(),
                "parameters": count_parameters(encoder),
                "lineage": ckpt["lineage"],
            }
        )
        return
    console.print(
        f"wrote [bold]{written}[/]: ViNy {cfg.depth} blocks, dim {cfg.dim}, {cfg.heads} heads x {cfg.dim_head}, "
        f"{cfg.image_size} px / {cfg.patch_size} px patches, {count_parameters(encoder):,} parameters"
    )
