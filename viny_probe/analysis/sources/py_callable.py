"""``py:MODULE:FUNCTION[,KEY=VALUE...]`` or ``py:path/to/file.py:FUNCTION``: your own code builds the model.
MODULE is looked up in the current folder first, then on ``sys.path``.

``FUNCTION(**options)`` returns a :class:`~viny_probe.analysis.sources.TokenModel` (the module, its
``tokens(images, blocks)`` function, depth, width, patch and input size, mean/std); ``--img-size`` and
``--weights`` are passed as ``image_size=`` / ``weights=`` to a function that takes them. For a ViT-like
module with a list of blocks, ``TokenModel.from_blocks`` reads the tokens with forward hooks.
docs/any-model.md has a worked example.

The sha256 of the file that defines FUNCTION is in the model's fingerprint, so that an edit of that file
is a new token-cache key. A file path is run from the bytes that were digested (no ``__pycache__``
bytecode, which an edit of the same size within the same second would leave in use). Code that file
imports from other files of yours is not covered: pass ``--no-cache`` after editing it.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import replace
from pathlib import Path

from viny_probe.analysis.sources.base import (
    ModelSource,
    ModelSpec,
    SourceOptions,
    TokenModel,
    bytes_digest,
    register_source,
)
from viny_probe.errors import VinyError


def _module(where: str, what: str) -> tuple[object, str | None]:
    """The module ``where`` names and the sha256 of its source file (None for one without a file)."""
    if where.endswith(".py") or "/" in where:
        path = Path(where).expanduser()
        if not path.is_file():
            raise VinyError(f"{what}: file not found: {path}")
        source = path.read_bytes()
        name = "viny_py_source_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102 - py: runs the user's file
        except Exception as e:  # the user's code: say where it failed, in one line
            raise VinyError(f"{what}: importing {path} failed ({type(e).__name__}: {e})") from None
        return module, hashlib.sha256(source).hexdigest()
    # The current folder first, as `python -m` would have it: the installed `viny` script does not put
    # it on sys.path, so `py:my_models:build` beside my_models.py would not be found.
    here = str(Path.cwd())
    added = here not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        module = importlib.import_module(where)
    except ModuleNotFoundError as e:
        raise VinyError(
            f"{what}: no module named {e.name!r} in the current folder or on PYTHONPATH (or give a file "
            "path ending in .py)"
        ) from None
    finally:
        if added:
            sys.path.remove(here)
    file = getattr(module, "__file__", None)
    return module, bytes_digest(file) if file else None


def _kwargs(fn, spec: ModelSpec, options: SourceOptions, what: str) -> dict:
    kwargs = dict(spec.options)
    params = inspect.signature(fn).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value, flag in (
        ("image_size", options.image_size, "--img-size"),
        ("weights", options.weights, "--weights"),
    ):
        if value is None:
            continue
        if key not in params and not open_ended:
            raise VinyError(f"{what}: {flag} was given, but {fn.__name__}() takes no {key} argument")
        kwargs[key] = value
    return kwargs


def load(spec: ModelSpec, options: SourceOptions) -> TokenModel:
    what = spec.text or f"py:{spec.target}"
    where, sep, function = spec.target.rpartition(":")
    if not sep or not where or not function:
        raise VinyError(f"{what}: expected py:MODULE:FUNCTION or py:path/to/file.py:FUNCTION")
    module, code = _module(where, what)
    fn = getattr(module, function, None)
    if not callable(fn):
        raise VinyError(f"{what}: {where} has no function {function!r}")
    try:
        model = fn(**_kwargs(fn, spec, options, what))
    except TypeError as e:
        raise VinyError(f"{what}: calling {function}() failed ({e})") from None
    if not isinstance(model, TokenModel):
        raise VinyError(
            f"{what}: {function}() returned a {type(model).__name__}; it must return a "
            "viny_probe.analysis.sources.TokenModel (module, tokens, depth, dim, patch_size, image_size, "
            "mean, std): see docs/any-model.md"
        )
    if model.source == "python":
        model = replace(model, source=what, name=model.name if model.name != "python" else "", _digest=None)
    return replace(model, fingerprint={**model.fingerprint, "code": code}, _digest=model._digest)


register_source(
    ModelSource(
        "py",
        load,
        "your own function returning a TokenModel: py:MODULE:FUNCTION or py:path/to/file.py:FUNCTION",
        "py:my_models.py:build",
    )
)
