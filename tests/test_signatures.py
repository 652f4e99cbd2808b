"""No function or method of viny_probe takes more than MAX_PARAMETERS parameters (self / cls not
counted): a longer list becomes a parameter object (``analysis.options``: ModelOptions, EvalSet,
ProbeOptions, ...; ``perf.options``, ``engine.StepSettings``, ``data.DecodeOptions``, ...), each default
written once. viny_probe/cli/* is skipped: a typer command's signature is its command line. A function
not reduced yet would be listed in ALLOWED with why (empty since issue 19).

Mutant applied once, failing test_no_function_takes_more_than_ten_parameters: ``probe_checkpoint``
given five more keyword parameters (6 -> 11; ``a``, ``b``, ``c``, ``d``, ``extra``), reported as
``{'viny_probe.analysis.checkpoint_probe:probe_checkpoint': 11}``. An ALLOWED entry whose function was
reduced fails test_the_allow_list_only_names_functions_still_too_long (the list only shrinks).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import viny_probe

MAX_PARAMETERS = 10

# module:qualname -> why it still takes more than MAX_PARAMETERS. Remove an entry when it is reduced.
ALLOWED: dict[str, str] = {}


def _generated(fn) -> bool:
    """A function with no source file: a dataclass's or NamedTuple's generated ``__init__`` / ``__new__``
    (a record's fields, not a parameter list)."""
    return fn.__code__.co_filename.startswith("<")


def _functions(module):
    """``(qualname, function)`` of every function and method defined in ``module`` (classes nested in
    classes included; static and class methods unwrapped)."""

    def members(owner, prefix):
        for name, obj in vars(owner).items():
            if isinstance(obj, staticmethod | classmethod):
                obj = obj.__func__
            elif isinstance(obj, property):
                obj = obj.fget
            if inspect.isfunction(obj) and obj.__module__ == module.__name__ and not _generated(obj):
                yield f"{prefix}{name}", obj
            elif (
                inspect.isclass(obj)
                and obj.__module__ == module.__name__
                and obj.__qualname__.startswith(prefix + name)
            ):
                yield from members(obj, f"{prefix}{name}.")

    yield from members(module, "")


def _modules():
    for info in pkgutil.walk_packages(viny_probe.__path__, "viny_probe."):
        name = info.name
        if name.startswith("viny_probe.cli") or name == "viny_probe.__main__":
            continue  # typer commands: the signature is the command line (__main__ runs it)
        yield importlib.import_module(name)


def parameter_counts() -> dict[str, int]:
    """``module:qualname -> parameters`` (self / cls not counted) of every function in viny_probe."""
    counts = {}
    for module in _modules():
        for qualname, fn in _functions(module):
            names = list(inspect.signature(fn).parameters)
            if "." in qualname and names and names[0] in ("self", "cls"):
                names = names[1:]
            counts[f"{module.__name__}:{qualname}"] = len(names)
    return counts


def test_no_function_takes_more_than_ten_parameters():
    counts = parameter_counts()
    assert "viny_probe.analysis.checkpoint_probe:probe_checkpoint" in counts  # the walk reaches analysis
    too_long = {name: n for name, n in counts.items() if n > MAX_PARAMETERS and name not in ALLOWED}
    assert not too_long, (
        f"more than {MAX_PARAMETERS} parameters (group them into a parameter object, analysis/options.py): "
        f"{too_long}"
    )


def test_the_allow_list_only_names_functions_still_too_long():
    counts = parameter_counts()
    stale = {name: counts.get(name) for name in ALLOWED if counts.get(name, 0) <= MAX_PARAMETERS}
    assert not stale, f"reduced (or gone): remove from ALLOWED: {stale}"
