"""What viny needs to know about a model to diagnose its patch tokens (``TokenModel``), and the registry
of the places a model can come from (``MODEL_SOURCES``: viny checkpoints, timm, Hugging Face folders,
a Python callable).

A model is named on the command line (and in the Python API) by one string, ``PREFIX:TARGET``:
``timm:vit_small_patch16_224``, ``hf:path/to/folder``, ``py:my_module:build``; anything without a
registered prefix is a viny checkpoint (or the study authors' state_dict). ``KEY=VALUE`` pairs after
commas are options for that source (``timm:vit_tiny_patch16_224,img_size=64,depth=2``). A new source is
one file with a loader and one ``register_source(ModelSource(...))`` line (see ``__init__``).

The loaders never guess what a model does not say: prefix tokens come from the model's own metadata
(timm's ``num_prefix_tokens``, the Hugging Face config), input size and mean/std from its
configuration (overridable), and every extracted block is checked to hold exactly prefix + g * g
tokens.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from viny_probe.checkpoint import torch_load_safely
from viny_probe.data.augment import IMAGENET_MEAN, IMAGENET_STD
from viny_probe.errors import VinyError
from viny_probe.registry import Registry

Tokens = Callable[[torch.Tensor, Sequence[int]], Mapping[int, torch.Tensor]]
Triple = tuple[float, float, float]


@dataclass
class TokenModel:
    """A vision transformer as the diagnostics see it: the protocol every model source returns.

    module: the ``nn.Module`` (moved to the extraction device and put in eval mode for a pass; its
        mode and device are restored afterwards).
    tokens: ``tokens(images, blocks) -> {block: (B, P, D)}``. ``images`` is ``(B, 3, S, S)`` float,
        already normalised with ``mean`` / ``std``, on the module's device, S = ``image_size``;
        ``blocks`` is a sorted list of block numbers in ``1..depth``. It returns the PATCH tokens of
        each requested block, prefix tokens (CLS, distillation, registers) dropped, P = g * g patches
        in row-major order, g = image_size / patch_size. Block ``depth`` is the model's output (after
        its final norm, where it has one); an earlier block ``b`` is the residual stream after block b.
    depth: number of blocks. dim: channels D of a token.
    patch_size, image_size: square patches of a square input; image_size is a multiple of patch_size.
    mean, std: per-channel normalisation of [0, 1] pixels (default ImageNet's).
    source: the string that loaded it (``"timm:vit_small_patch16_224"``); part of the cache key.
    name: what tables and figures call it (default: from ``source``).
    config: a JSON-ready description, written into the outputs as ``model_config``.
    meta: the viny checkpoint dict (regime, lineage: evaluation defaults and the overlap guard); ``{}``
        for a model from elsewhere (it records no training images).
    notes: where the input size, mean/std and prefix-token count came from, written into the outputs.
    prefix_tokens: how many tokens precede the patches (informational: ``tokens`` drops them).
    fingerprint: what else decides its tokens, for the cache key only (JSON-ready): the digest of the
        code that builds it (a ``py:`` file), of its config files (an ``hf:`` folder's config.json), the
        library version and settings it is built with (timm's pretrained_cfg).
    weights_from: the file or folder its weights were read from (None: built in memory), named in
        messages about them; not part of ``identity`` (the digest of the weights is).
    """

    module: nn.Module
    tokens: Tokens
    depth: int
    dim: int
    patch_size: int
    image_size: int
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    source: str = "python"
    name: str = ""
    config: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    prefix_tokens: int | None = None
    fingerprint: dict = field(default_factory=dict)
    weights_from: str | None = None
    _digest: str | None = field(default=None, repr=False, compare=False)
    # tokens already on disk (analysis.token_store.TokenFolder): served by image id, no forward pass
    stored: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        what = self.source or "model"
        if not isinstance(self.module, nn.Module):
            raise VinyError(
                f"{what}: TokenModel.module must be a torch nn.Module, got {type(self.module).__name__}"
            )
        if not callable(self.tokens):
            raise VinyError(
                f"{what}: TokenModel.tokens must be callable: tokens(images, blocks) -> {{block: (B, P, D)}}"
            )
        for key in ("depth", "dim", "patch_size", "image_size"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise VinyError(f"{what}: TokenModel.{key} must be a positive integer, got {value!r}")
        if self.image_size % self.patch_size:
            raise VinyError(
                f"{what}: image size {self.image_size} is not a multiple of the patch size {self.patch_size}, "
                "so the patches do not tile the input; pick another --img-size"
            )
        self.mean, self.std = _triple(self.mean, "mean", what), _triple(self.std, "std", what)
        if any(s <= 0 for s in self.std):
            raise VinyError(f"{what}: std must be positive, got {self.std}")
        self.name = self.name or default_name(self.source)

    @property
    def grid(self) -> int:
        """Patches per side of the square patch grid."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid**2

    def digest(self) -> str:
        """sha256 of the module's weights (computed once)."""
        if self._digest is None:
            self._digest = module_digest(self.module)
        return self._digest

    def identity(self) -> dict:
        """What makes its tokens what they are, for the embedding cache's key: the source, a digest of
        the weights, the input size, the normalisation, the description and the fingerprint (code,
        config files, library versions)."""
        return {
            "source": self.source,
            "weights": self.digest(),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "config": self.config,
            "fingerprint": self.fingerprint,
        }

    def where(self) -> str:
        """The model as messages name it: its source string and the file its weights came from."""
        if self.weights_from and self.weights_from not in self.source:
            return f"{self.source} (weights {self.weights_from})"
        return self.source

    def weights(self) -> str:
        """Which weights these are, for every output: the source's own account (a ``weights:`` note:
        a hub repo at its revision, a file, RANDOM INIT) and the sha256 of the weights."""
        said = next((n.removeprefix("weights: ") for n in self.notes if n.startswith("weights: ")), None)
        if said is None and self.source == "viny":
            said = f"viny checkpoint {self.name}"
        return f"{said or self.source} (sha256 {self.digest()[:16]})"

    def describe(self) -> str:
        """One line: grid, depth, width."""
        return (
            f"{self.name}: {self.image_size} px / {self.patch_size} px patches = {self.grid} x {self.grid} "
            f"grid, {self.depth} blocks, {self.dim} channels"
        )

    @classmethod
    def from_blocks(
        cls,
        module: nn.Module,
        blocks: Sequence[nn.Module],
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        prefix_tokens: int,
        **fields: Any,
    ) -> TokenModel:
        """A TokenModel for a ViT-like module read through forward hooks: ``blocks`` are its
        transformer blocks in order (each returning ``(B, T, D)`` tokens), ``forward(images)`` its
        final tokens ``(B, T, D)`` (after the final norm), ``prefix_tokens`` how many of the T tokens
        come before the patches. ``fields``: the other TokenModel fields (dim, patch_size, image_size...).
        A pass that needs no final output stops after the deepest requested block."""
        missing = [k for k in ("dim", "patch_size", "image_size") if k not in fields]
        if missing:
            raise VinyError(f"TokenModel.from_blocks needs {', '.join(missing)}= as well")
        grid = fields["image_size"] // fields["patch_size"]
        what = fields.get("source", "model")
        tokens = hooked_tokens(list(blocks), forward, prefix_tokens, grid * grid, what)
        return cls(module, tokens, depth=len(blocks), prefix_tokens=prefix_tokens, **fields)


def _triple(value, name: str, what: str) -> Triple:
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3:
        raise VinyError(f"{what}: {name} must be three numbers (R, G, B), got {value!r}")
    return out  # type: ignore[return-value]


def default_name(source: str) -> str:
    """``timm:vit_small_patch16_224,img_size=64`` -> ``vit_small_patch16_224``; ``hf:models/dino`` ->
    ``dino``; ``py:pkg.mod:build`` -> ``build``; a checkpoint path -> its run folder's name."""
    spec = parse_model_spec(source, check=False)
    if spec.prefix == "viny":
        p = Path(spec.target)
        return p.parent.name if p.stem in ("final", "last", "best") or p.stem.startswith("epoch") else p.stem
    if spec.prefix == "hf":
        return Path(spec.target).name or spec.target
    return spec.target.rsplit(":", 1)[-1] or spec.target


# ------------------------------------------------------------------------------------ token reading
class _Stop(Exception):
    """Raised by the hook of the deepest requested block to end a pass that needs nothing later."""


def patch_part(x: Any, prefix: int, num_patches: int, what: str, block: int | str) -> torch.Tensor:
    """``(B, prefix + P, D)`` -> ``(B, P, D)``; anything else is a VinyError naming the counts."""
    if isinstance(x, tuple | list):
        x = x[0]
    if not isinstance(x, torch.Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise VinyError(f"{what}: block {block} gives {shape}, not (B, tokens, D): no patch grid to read")
    if x.shape[1] != prefix + num_patches:
        raise VinyError(
            f"{what}: block {block} gives {x.shape[1]} tokens per image, but the model declares "
            f"{prefix} prefix tokens + {num_patches} patches; its patch grid cannot be read"
        )
    return x[:, prefix:]


def hooked_tokens(
    blocks: list[nn.Module], forward: Callable, prefix: int, num_patches: int, what: str
) -> Tokens:
    """``tokens(images, wanted)`` reading block outputs with forward hooks; the last block's entry is
    ``forward(images)`` (the final-norm output)."""
    depth = len(blocks)

    def tokens(images: torch.Tensor, wanted: Sequence[int]) -> dict[int, torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        final = depth in wanted
        inner = [b for b in wanted if b != depth]
        deepest = max(inner, default=0)

        def keep(block: int):
            def hook(_module, _inputs, output):
                out[block] = patch_part(output, prefix, num_patches, what, block)
                if block == deepest and not final:
                    raise _Stop

            return hook

        handles = [blocks[b - 1].register_forward_hook(keep(b)) for b in inner]
        result = None
        try:
            result = forward(images)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if final:
            out[depth] = patch_part(result, prefix, num_patches, what, depth)
        return out

    return tokens


def bytes_digest(path: str | Path) -> str | None:
    """sha256 of a file's bytes (None when there is no such file): a config or code file in a
    TokenModel's fingerprint."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def module_digest(module: nn.Module) -> str:
    """sha256 of a module's weights (names, dtypes, shapes and bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


# --------------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class SourceOptions:
    """What the command line adds to a model string: a weights file (timm), an input size, and mean /
    std that replace the model's own."""

    weights: str | Path | None = None
    image_size: int | None = None
    mean: Triple | None = None
    std: Triple | None = None


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model string: ``prefix`` (a registered source), ``target`` (a name, folder, module or
    path), ``options`` (the ``KEY=VALUE`` pairs after commas) and the ``text`` as given."""

    prefix: str
    target: str
    options: dict = field(default_factory=dict)
    text: str = ""


@dataclass(frozen=True)
class ModelSource:
    """Where models come from. ``load(spec, options) -> TokenModel``; ``extra`` is the pip extra its
    packages come with (named in the error when they are missing); ``wrap(module) -> TokenModel``, when
    given, turns an encoder object already in memory into a TokenModel (``load_model`` asks the sources
    in turn; the first whose ``accepts(module)`` is true wraps it)."""

    prefix: str
    load: Callable[[ModelSpec, SourceOptions], TokenModel]
    description: str
    example: str
    extra: str | None = None
    wrap: Callable[[nn.Module], TokenModel] | None = None
    accepts: Callable[[nn.Module], bool] | None = None


MODEL_SOURCES: Registry = Registry("model source", builtins="viny_probe.analysis.sources")


def register_source(source: ModelSource) -> ModelSource:
    return MODEL_SOURCES.register(source.prefix, source)


def wrap_module(module: nn.Module) -> TokenModel:
    """A TokenModel around an encoder object, by the first registered source that accepts it."""
    for prefix in MODEL_SOURCES.names():
        source = MODEL_SOURCES.get(prefix)
        if source.wrap is not None and (source.accepts is None or source.accepts(module)):
            return source.wrap(module)
    raise VinyError(
        f"no model source wraps a {type(module).__name__} object; pass a model string "
        "(a checkpoint, timm:NAME, hf:FOLDER, py:MODULE:FUNCTION) or a TokenModel"
    )


def require(package: str, extra: str, prefix: str):
    """``import package``; when it is not installed, a one-line VinyError naming the pip extra."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise VinyError(
            f"{prefix}: models need the '{package}' package, which is not installed: "
            f'pip install "viny-probe[{extra}]"'
        ) from None


_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*):(.*)$")


def _value(text: str) -> Any:
    """``64`` -> 64, ``0.5`` -> 0.5, ``true`` -> True, ``(64, 96)`` -> (64, 96); anything else a string."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split_options(target: str, spec: str) -> tuple[str, dict]:
    if "," not in target or Path(target).exists():
        return target, {}
    head, *pairs = target.split(",")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise VinyError(f"model {spec!r}: options after the name must be KEY=VALUE, got {pair!r}")
        options[key.strip()] = _value(value.strip())
    return head, options


def parse_model_spec(text: str | Path, check: bool = True) -> ModelSpec:
    """``"timm:NAME[,K=V...]"`` | ``"hf:FOLDER"`` | ``"py:MODULE:FUNCTION"`` | ``"viny:PATH"`` | a path.

    A string whose prefix is not a registered source is a viny checkpoint path; when no such file
    exists and the prefix looks like a source name, ``check`` makes that a VinyError listing the
    sources (``tim:vit_small`` is a typo, not a file)."""
    text = str(text)
    match = _PREFIX.match(text)
    if match and match[1] in MODEL_SOURCES and not (match[1] == "viny" and Path(text).exists()):
        prefix, target = match[1], match[2]
        if prefix == "viny":
            target, options = _split_options(target, text)
            return ModelSpec("viny", target, options, text)
        target, options = _split_options(target, text)
        if not target:
            raise VinyError(
                f"model {text!r}: nothing after '{prefix}:'; e.g. {MODEL_SOURCES.get(prefix).example}"
            )
        return ModelSpec(prefix, target, options, text)
    if check and match and not Path(text).exists() and "/" not in match[1] and len(match[1]) > 1:
        raise VinyError(
            f"model {text!r}: no file of that name, and {match[1]!r} is not a model source; "
            f"choose one of {', '.join(p + ':' for p in MODEL_SOURCES.names() if p != 'viny')} or a viny "
            "checkpoint path"
        )
    target, options = _split_options(text, text)  # PATH,heads=N (an authors' state_dict's head count)
    return ModelSpec("viny", target, options, text)


def with_heads(model, heads: int | None):
    """``model`` with a head count (``ModelOptions.heads``, ``--heads N``): a viny model string as
    ``PATH,heads=N`` (how the viny source takes one); ``model`` as it is when ``heads`` is None; a
    timm:/hf:/py:/tokens: model or a built one refused (its head count is its own)."""
    if heads is None:
        return model
    if not isinstance(model, str | Path):
        raise VinyError("heads applies to a model string (a study authors' .pth), not a built model")
    spec = parse_model_spec(model)
    if spec.prefix != "viny":
        raise VinyError(f"--heads is for the study authors' state_dict; {model} is a {spec.prefix}: model")
    return f"{model},heads={heads}"


def load_with(model, options, own_size: bool = False) -> TokenModel:
    """``load_model`` of ``model`` with a ``ModelOptions``' weights, input size (none when ``own_size``:
    the model keeps its own) and mean / std; its ``heads`` are applied by ``with_heads`` beforehand."""
    return load_model(
        model,
        weights=options.weights,
        image_size=None if own_size else options.img_size,
        mean=options.mean,
        std=options.std,
    )


def load_model(
    model: str | Path | TokenModel | nn.Module,
    *,
    weights: str | Path | None = None,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> TokenModel:
    """A ``TokenModel`` from a model string (see ``parse_model_spec``), a ViNy encoder, or a TokenModel
    (returned as is, with ``mean`` / ``std`` applied). ``weights``: a safetensors file or torch
    state_dict for a ``timm:`` model; ``image_size``: the input side (timm's ``img_size``, an hf
    model's interpolated positions, a py callable's ``image_size`` argument; a viny checkpoint's is
    fixed); ``mean`` / ``std``: replace the model's own normalisation."""
    if isinstance(model, TokenModel):
        if weights is not None or image_size not in (None, model.image_size):
            raise VinyError("weights / image_size apply to a model string, not to a TokenModel already built")
        loaded = model
    elif isinstance(model, nn.Module):
        loaded = wrap_module(model)
    elif isinstance(model, str | Path):
        spec = parse_model_spec(model)
        options = SourceOptions(weights, image_size, None, None)
        loaded = MODEL_SOURCES.get(spec.prefix).load(spec, options)
        if spec.prefix != "viny" and loaded.stored is None:
            check_tokens(loaded)
    else:
        raise VinyError(
            f"a model must be a checkpoint path, a model string (timm:NAME, hf:FOLDER, py:MODULE:FUNCTION) "
            f"or a TokenModel, got {type(model).__name__}"
        )
    return with_normalisation(loaded, mean, std)


def check_tokens(model: TokenModel) -> None:
    """One blank image through ``model.tokens`` at its first and last block: each must be ``(1, P, D)``,
    so a model that does not keep its promises fails here, before any data is loaded."""
    module = model.module
    device = next((p.device for p in module.parameters()), torch.device("cpu"))
    x = torch.zeros(1, 3, model.image_size, model.image_size, device=device)
    blocks = sorted({1, model.depth})
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            got = model.tokens(x, blocks)
    finally:
        module.train(was_training)
    want = (1, model.num_patches, model.dim)
    for b in blocks:
        t = got.get(b) if isinstance(got, Mapping) else None
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        if shape != want:
            raise VinyError(
                f"{model.source}: tokens() gives {shape} at block {b} for one image; expected {want} "
                f"({model.grid} x {model.grid} patches of {model.dim} channels, prefix tokens dropped)"
            )


def with_normalisation(model: TokenModel, mean, std) -> TokenModel:
    """``model`` with ``mean`` / ``std`` replaced where given (noted in ``notes``)."""
    if mean is None and std is None:
        return model
    notes = [n for n in model.notes if not n.startswith("mean/std")]
    new_mean = model.mean if mean is None else _triple(mean, "mean", model.source)
    new_std = model.std if std is None else _triple(std, "std", model.source)
    notes.append(f"mean/std {list(new_mean)} / {list(new_std)} as given")
    return replace(model, mean=new_mean, std=new_std, notes=notes, _digest=model._digest)


def square(value, what: str, name: str) -> int:
    """An int, or a pair of equal ints, as one int; a non-square pair is a VinyError."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    pair = tuple(value) if isinstance(value, tuple | list) else None
    if pair and len(pair) == 2 and all(isinstance(v, int) for v in pair):
        if pair[0] != pair[1]:
            raise VinyError(
                f"{what}: {name} is {pair[0]} x {pair[1]}; viny's diagnostics need a square patch grid "
                "(distances, reference patches and maps are laid out on g x g); use a square size"
            )
        return pair[0]
    raise VinyError(f"{what}: cannot read its {name} ({value!r}); no patch grid")


# ----------------------------------------------------------------------------------- weight files
def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A state_dict from a ``.safetensors`` file or a torch file (read with ``weights_only=True``); a
    ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is opened."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise VinyError(f"{what}: weights file not found: {path}")
    if path.suffix == ".safetensors":
        safetensors_torch = require("safetensors.torch", "timm", what.split(":")[0])
        try:
            return dict(safetensors_torch.load_file(str(path), device="cpu"))
        except Exception as e:  # a damaged or foreign file
            raise VinyError(
                f"{what}: {path} is not a readable safetensors file ({type(e).__name__})"
            ) from None
    obj = torch_load_safely(Path(path), f"a state_dict for {what} (safetensors or torch.save of its tensors)")
    for key in ("state_dict", "model", "module"):
        if (
            isinstance(obj, dict)
            and isinstance(obj.get(key), dict)
            and not any(isinstance(v, torch.Tensor) for v in obj.values())
        ):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise VinyError(f"{what}: {path} holds a {type(obj).__name__}, not a state_dict of tensors")
    return obj
