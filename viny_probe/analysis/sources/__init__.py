"""Where the diagnosed model comes from: one file per source, registered by prefix in ``MODEL_SOURCES``.

=========  ===============================================  ==========================
prefix     what                                             file
=========  ===============================================  ==========================
``viny``   a viny checkpoint or the authors' state_dict     ``viny.py`` (also: a bare path)
``timm``   ``timm.create_model(NAME)`` + ``--weights FILE``  ``timm_models.py``
``hf``     a local Hugging Face ``save_pretrained`` folder  ``hf_models.py``
``py``     your function returning a ``TokenModel``         ``py_callable.py``
=========  ===============================================  ==========================

A new source is one file with ``load(spec, options) -> TokenModel`` and one
``register_source(ModelSource(prefix, load, description, example, extra))`` line, imported below.
"""

# Registration, in the order help texts list the sources.
from . import viny, timm_models, hf_models, py_callable, tokens  # noqa: F401, I001
from .base import (
    MODEL_SOURCES,
    ModelSource,
    ModelSpec,
    SourceOptions,
    TokenModel,
    load_model,
    load_with,
    parse_model_spec,
    register_source,
    with_heads,
)

__all__ = [
    "MODEL_SOURCES",
    "ModelSource",
    "ModelSpec",
    "SourceOptions",
    "TokenModel",
    "load_model",
    "load_with",
    "parse_model_spec",
    "register_source",
    "with_heads",
]
