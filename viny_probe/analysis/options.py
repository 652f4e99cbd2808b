"""The parameter objects of the analysis entry points, each default written here once.

``probe_checkpoint``, ``diagnose``, ``similarity_map_for_image``, ``extract_tokens``, ``build_explorer``
and the others take these frozen dataclasses instead of a long list of keyword arguments:

* :class:`ModelOptions`: how a model source is loaded and run (weights, input size, normalisation,
  attention heads, device, batch size, token cache, the tokens' storage dtype);
* :class:`EvalSet`: which images a model is evaluated on (dataset, split, pool and test sizes, the
  overlap guard);
* :class:`ProbeOptions`: how the classifiers of the diagnostics run (probe backend, kNN on or off);
* :class:`DiagnoseOptions`, :class:`ExploreOptions`, :class:`ExtractOptions`: what only one command has.

The CLI (``viny_probe/cli``) takes its option defaults from these classes (``EvalSet.probe_images``,
...), builds the objects and passes them. This module imports nothing heavy (the CLI reads it at
start-up) and nothing of viny_probe.analysis: every analysis module imports it. A ModelOptions is
applied by ``sources.load_with`` (``heads`` by ``sources.with_heads``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from viny_probe.errors import VinyError

#: The probe solvers (``analysis.probe``): auto picks torch, on a GPU and on a CPU, where its
#: preconditioned L-BFGS was the faster of the two as measured (docs/performance.md: ViT-S/16's probe
#: of 42,506 x 384 tokens on 2 loaded cores, 3-4 s against scikit-learn's 30-33 s).
BACKENDS = ("auto", "torch", "sklearn")
DEFAULT_BACKEND = "auto"
#: How extracted tokens are kept in memory and in the token cache (``ModelOptions.token_dtype``): each
#: batch is converted as it leaves the model, and every diagnostic reads them upcast chunk by chunk
#: (float32/float64 sums). bfloat16 halves the tokens' bytes and keeps float32's range; float16 keeps
#: more mantissa bits but overflows past 65,504.
TOKEN_DTYPES = ("float32", "bfloat16", "float16")
#: The background reference patch of Fig 6 (``reference.BACKGROUND_CHOICES``): patch (0, 0), as the study.
DEFAULT_BACKGROUND = "study"


# The study's probe pool: 2000 ViNy images x 64 patches (EvalSet.probe_images left as None).
POOL_PATCHES = 128_000


@dataclass(frozen=True)
class ModelOptions:
    """How a model source (``sources.load_model``) is loaded and run.

    weights: the weights file of a ``timm:`` model (a .safetensors file or a torch state_dict).
    img_size: the input size of a model not from viny (a viny checkpoint's is fixed).
    mean / std: R, G, B values replacing the model's own normalisation.
    heads: attention heads of a study authors' state_dict (.pth), which records none; applied to a viny
        model string as ``PATH,heads=N`` (``sources.with_heads``; a timm:/hf:/py:/tokens: model is refused).
    device: where the model runs (cpu | cuda | cuda:N | auto); None: where the model is (a loaded
        checkpoint: the CPU). The CLI's ``--device`` (``cli.options.device_option``) defaults to auto.
    batch_size: images per forward pass while extracting tokens (on a 2-core CPU 64 ran at 130 img/s
        for ViNy, 256 at 84: the activations outgrow the cache).
    use_cache: read and write the token cache (``embeddings``; ``viny cache info``).
    token_dtype: the dtype extracted tokens are kept in (one of ``TOKEN_DTYPES``; the cache keys and
        stores them in it); the diagnostics accumulate in float32 or float64 whatever it is.
    """

    weights: str | Path | None = None
    img_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    heads: int | None = None
    device: str | None = None
    batch_size: int = 64
    use_cache: bool = True
    token_dtype: str = "float32"

    def __post_init__(self):
        if self.token_dtype not in TOKEN_DTYPES:
            raise VinyError(
                f"--token-dtype must be one of {', '.join(TOKEN_DTYPES)}, got {self.token_dtype!r}"
            )

    def extraction(self, progress: bool = True) -> dict:
        """The keyword arguments of ``embeddings.extract_patch_tokens`` these options set."""
        return dict(
            progress=progress,
            use_cache=self.use_cache,
            device=self.device,
            batch_size=self.batch_size,
            dtype=self.token_dtype,
        )


@dataclass(frozen=True)
class EvalSet:
    """The images a model is evaluated on (``evaluation_data``): the training protocol's split.

    dataset, split_seed, test_size: default (None) to the checkpoints' lineage (``resolve_evaluation``:
        the trimap stage's split, so a model is scored on that stage's held-out test set; a model from
        elsewhere: toy-pets, split seed 0).
    data_root: the folder of a real dataset, or its parent.
    probe_images: pool images the probe and kNN are fitted on; None: as many as give the study's
        128,000 pool patches (``POOL_PATCHES``) on the model's grid: 2000 ViNy images (8 x 8), 654 at
        14 x 14 (a 224-px ViT-/16), so a bigger grid does not decode and embed images whose patches
        the probe's memory cap would then leave out (``pool_images``).
    test_images: test images everything is measured on.
    allow_overlap: evaluate even on images a checkpoint's lineage trained on (refused otherwise); the
        warning is written into every output.
    protocol: ``viny`` (the above) or ``authors``, the study's code's protocol (``eval_protocol``: the
        first 2,048 images the models trained on, raw and augmented, the probe scored on the images it
        was fitted on, kNN off; labelled in every output). Off in every preset.
    resize: the filter a real dataset's images are resized with (``data.decode.RESIZE_FILTERS``); None:
        the one the checkpoints trained with (their config's ``resize``; bilinear for a model from
        elsewhere, or where checkpoints trained with different filters: ``resolve_evaluation``). The
        embedded sets are generated at the model's size and never resized.

    A command that reads single images (``similarity_map_for_image``, ``reconstruct_images``) uses
    only ``split_seed``, ``test_size`` and ``allow_overlap`` (the dataset is named in ``DATASET:INDEX``).
    """

    dataset: str | None = None
    data_root: str | Path | None = None
    split_seed: int | None = None
    test_size: int | None = None
    probe_images: int | None = None
    test_images: int = 1000
    allow_overlap: bool = False
    protocol: str = "viny"
    resize: str | None = None

    def pool_images(self, num_patches: int) -> int:
        """The pool images for a model with ``num_patches`` patches per image: ``probe_images``, or
        enough for ``POOL_PATCHES`` patches."""
        if self.probe_images is not None:
            return self.probe_images
        return -(-POOL_PATCHES // num_patches)

    def for_grid(self, num_patches: int) -> EvalSet:
        """This set with ``probe_images`` resolved for a model with ``num_patches`` patches."""
        return dataclasses.replace(self, probe_images=self.pool_images(num_patches))


@dataclass(frozen=True)
class ProbeOptions:
    """How the diagnostics' classifiers run: ``backend`` of the linear probe (one of ``BACKENDS``;
    ``analysis.probe``), ``knn``: run the kNN diagnostics (off: their results are None)."""

    backend: str = DEFAULT_BACKEND
    knn: bool = True

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise VinyError(f"--probe-backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")


@dataclass(frozen=True)
class DiagnoseOptions:
    """What only ``diagnose`` has: ``depth_probe_images`` pool images for the cheaper per-block probe,
    ``cka_images`` test images whose tokens CKA compares, ``fig6_images`` test images in Fig 6 (3
    reference patches each) and its ``background`` reference (``reference.BACKGROUND_CHOICES``)."""

    depth_probe_images: int = 250
    cka_images: int = 250
    fig6_images: int = 2
    background: str = DEFAULT_BACKGROUND


@dataclass(frozen=True)
class ExploreOptions:
    """How the explorer page is made (``explore.build_explorer``): ``blocks`` (``"all"`` or a
    ``--layer`` list, per model), ``max_mb`` (refuse a larger page), ``images`` (test images shown when
    none are given) and ``progress``; the extraction's device, batch size and cache are a
    :class:`ModelOptions`' (``build_explorer``'s ``model``)."""

    blocks: str = "all"
    max_mb: float = 64.0
    images: int = 16
    progress: bool = True


@dataclass(frozen=True)
class ExtractOptions:
    """What `viny extract` writes (``token_store.extract_tokens``): the blocks (``"all"``, ``"final"``
    or ``"3,6,12"``), the token ``dtype``, ``shard_images`` images per shard (memory holds one shard's
    tokens) and whether to write into a folder that already holds tokens (``force``)."""

    blocks: str = "all"
    dtype: str = "float16"
    shard_images: int = 256
    force: bool = False
