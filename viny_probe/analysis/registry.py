"""The diagnostics registry: every per-layer diagnostic declared once, with the Table 2 columns it fills.

A diagnostic is a plain function of one layer's patch tokens (:class:`LayerTokens`) registered with
``register(Diagnostic(...))`` in ``DIAGNOSTICS`` (a ``viny_probe.registry.Registry``; the built-in ones
register themselves in ``viny_probe.analysis.diagnostics``, one line each, loaded on first use).
Everything that computes or shows per-layer diagnostics iterates over :func:`registered`, in
registration order: the metrics of ``viny probe`` and ``viny diagnose`` (:func:`measure_layer`), the
per-block curves (:func:`measure_block`), table2.md/.json, summary.md/.json, the terminal tables and the
sweep report's Table 2. A new diagnostic is one function plus one ``register`` line; a test or a notebook
can add one for a while with ``with temporarily(Diagnostic(...)):``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from viny_probe.analysis.options import DEFAULT_BACKEND
from viny_probe.data.base import SEG_CLASSES
from viny_probe.errors import VinyError
from viny_probe.registry import Registry

# Where a column is shown, beyond table2.json and summary.json (which hold every column):
TABLE2 = "table2"  # table2.md, summary.md and the table `viny diagnose` prints
BLOCKS = "blocks"  # the table `viny probe --layer all` prints, one row per block


def format_value(value: float | None, fmt: str) -> str:
    """``value`` formatted with ``fmt``; "n/a" for a missing (None) or non-finite number."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, fmt)


def _same(result: Any) -> Any:
    return result


@dataclass(frozen=True)
class Column:
    """One number a diagnostic puts in a Table 2 row.

    key: the row's key in table2.json and summary.json (``"probe_acc_pct"``).
    title: the header in table2.md and summary.md (``"probe acc %"``).
    fmt: the number's format spec (``".1f"``).
    value: the diagnostic's result -> this number (default: the result itself, for a scalar).
    short: the header in the terminal tables (default: ``title``).
    report: the header in the sweep report's Table 2; None leaves the column out of the report.
    shown: the tables that show it (``TABLE2``, ``BLOCKS``); ``()`` keeps it in the JSON only.
    """

    key: str
    title: str
    fmt: str
    value: Callable[[Any], float | None] = _same
    short: str | None = None
    report: str | None = None
    shown: tuple[str, ...] = (TABLE2, BLOCKS)

    @property
    def terminal_title(self) -> str:
        return self.short or self.title

    def number(self, result: Any) -> float | None:
        """This column's number for a diagnostic's result (None when the diagnostic did not run)."""
        return None if result is None else self.value(result)


@dataclass
class LayerTokens:
    """What a diagnostic is computed from: one layer's patch tokens of one checkpoint.

    test: ``(N, P, D)`` tokens of the evaluation (test) images; the label-free diagnostics use these.
    test_labels: ``(N, P)`` patch classes of the test images (majority trimap class).
    train, train_labels: ``(M, P, D)`` tokens and ``(M, P)`` classes of the pool images a classifier
        (probe, kNN) is fitted on; at a per-block call, the fewer pool images of the per-block probe.
    seed: the classifiers' own randomness (validation split, kNN bank); not the data split.
    final: at a per-block call, the final layer's results ``{key: result}`` (the per-block probe reuses
        the C chosen there); None at the final layer.
    class_names: the patch classes' names, class index -> name (the dataset's mask classes; Oxford's
        trimap classes by default).
    probe_backend: the linear probe's solver (``ProbeOptions.backend``: ``"auto"``, ``"torch"`` or
        ``"sklearn"``; ``analysis.probe``).
    """

    test: torch.Tensor
    test_labels: torch.Tensor | None = None
    train: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None
    seed: int = 0
    final: Mapping[str, Any] | None = None
    class_names: tuple[str, ...] = SEG_CLASSES
    probe_backend: str = DEFAULT_BACKEND
    _measured: dict = field(default_factory=dict, repr=False)

    def measure(self, fn: Callable[[torch.Tensor], float]) -> float:
        """``fn(self.test)``, computed once per layer: diagnostics sharing a quantity (the ratio and the
        two variances) ask for it here instead of recomputing it."""
        if fn not in self._measured:
            self._measured[fn] = fn(self.test)
        return self._measured[fn]

    def shared(self, fn: Callable[[LayerTokens], Any]) -> Any:
        """``fn(self)``, computed once per layer: work several diagnostics need from the whole layer (the
        kNN diagnostics' neighbour search) is asked for here."""
        key = ("layer", fn)
        if key not in self._measured:
            self._measured[key] = fn(self)
        return self._measured[key]


@dataclass(frozen=True)
class Diagnostic:
    """A per-layer diagnostic and everything shown about it.

    key: its result's key in the per-layer metrics (summary.json ``final_layer``, ``viny probe --json``).
    label: its name in sentences and terminal rows (``"within-image variance"``).
    description: what it computes, in a few words (summary.md's legend under Table 2).
    compute: ``LayerTokens -> result`` at the final (or a chosen) layer: a float, or a JSON-ready dict
        whose numbers ``columns`` pick out.
    columns: the Table 2 columns it fills, in order.
    per_block: also measured at every block of ``viny diagnose`` (the depth curves), with
        ``block_compute`` (default ``compute``), which must return a float; its curve is ``curve_key``
        (default ``key``).
    needs_labels: needs the patch labels and the pool images' tokens (a fitted classifier); only such a
        diagnostic makes the per-block pass embed the pool images at every block.
    switch: the name of an option that turns it off (``"knn"``: ``--no-knn``); its result is then None.
    settings: the constants it runs with, written into summary.json's ``settings`` under ``key``.
    rows: ``result -> [(label, text)]``, its rows in a one-layer terminal table (default: ``label`` and
        its first shown column).
    """

    key: str
    label: str
    description: str
    compute: Callable[[LayerTokens], Any]
    columns: tuple[Column, ...] = ()
    per_block: bool = False
    block_compute: Callable[[LayerTokens], float | None] | None = None
    curve_key: str | None = None
    needs_labels: bool = False
    switch: str | None = None
    settings: Mapping[str, Any] | None = None
    rows: Callable[[Any], list[tuple[str, str]]] | None = None

    @property
    def curve(self) -> str:
        return self.curve_key or self.key

    def terminal_rows(self, result: Any) -> list[tuple[str, str]]:
        """Rows of a one-layer terminal table (none when the diagnostic did not run)."""
        if result is None:
            return []
        if self.rows is not None:
            return self.rows(result)
        shown = [c for c in self.columns if c.shown] or list(self.columns)
        return [(self.label, format_value(shown[0].number(result), shown[0].fmt))] if shown else []


# The built-in diagnostics register themselves in viny_probe.analysis.diagnostics, imported on first use.
DIAGNOSTICS: Registry = Registry("diagnostic", builtins="viny_probe.analysis.diagnostics")


def register(diagnostic: Diagnostic) -> Diagnostic:
    """Add ``diagnostic`` after those registered so far. Its key, curve and column keys must be new."""
    if not isinstance(diagnostic, Diagnostic):
        raise VinyError(f"register takes a Diagnostic, got {type(diagnostic).__name__}")
    known = registered()
    if diagnostic.key in DIAGNOSTICS:
        raise VinyError(f"a diagnostic '{diagnostic.key}' is registered already; unregister it first")
    taken = {c.key for d in known for c in d.columns} | {"checkpoint"}
    clash = [c.key for c in diagnostic.columns if c.key in taken]
    if clash:
        raise VinyError(f"column key(s) {clash} of '{diagnostic.key}' are taken by registered diagnostics")
    if diagnostic.per_block and diagnostic.curve in {d.curve for d in known if d.per_block}:
        raise VinyError(f"a per-block curve '{diagnostic.curve}' is registered already")
    return DIAGNOSTICS.register(diagnostic.key, diagnostic)


def unregister(key: str) -> Diagnostic:
    """Remove the diagnostic registered under ``key`` and return it."""
    if key not in DIAGNOSTICS:
        raise VinyError(f"no diagnostic '{key}' is registered; registered: {', '.join(DIAGNOSTICS)}")
    diagnostic = DIAGNOSTICS.get(key)
    DIAGNOSTICS.unregister(key)
    return diagnostic


@contextmanager
def temporarily(diagnostic: Diagnostic) -> Iterator[Diagnostic]:
    """Register ``diagnostic`` inside a ``with`` block and unregister it on the way out."""
    register(diagnostic)
    try:
        yield diagnostic
    finally:
        DIAGNOSTICS.unregister(diagnostic.key)


def registered() -> tuple[Diagnostic, ...]:
    """The registered diagnostics, in registration order (the built-in ones first)."""
    return tuple(DIAGNOSTICS.values())


def columns(where: str | None = None) -> list[Column]:
    """Every registered column in order; with ``where`` (``TABLE2`` | ``BLOCKS``) those shown there."""
    return [c for d in registered() for c in d.columns if where is None or where in c.shown]


def report_columns() -> list[Column]:
    """The columns of the sweep report's Table 2."""
    return [c for c in columns() if c.report]


def measure_layer(layer: LayerTokens, off: Sequence[str] = ()) -> dict[str, Any]:
    """``{key: result}`` of every registered diagnostic on one layer; a diagnostic whose ``switch``
    is in ``off`` gets None."""
    return {d.key: None if d.switch in off else d.compute(layer) for d in registered()}


def measure_block(layer: LayerTokens, off: Sequence[str] = ()) -> dict[str, float | None]:
    """``{curve: value}`` of every per-block diagnostic on one block (``layer.final`` set)."""
    return {
        d.curve: None if d.switch in off else (d.block_compute or d.compute)(layer)
        for d in registered()
        if d.per_block
    }


def table_row(results: Mapping[str, Any]) -> dict[str, float | None]:
    """``{column key: number}`` of one layer's ``measure_layer`` results, in column order."""
    return {c.key: c.number(results.get(d.key)) for d in registered() for c in d.columns}


def settings(off: Sequence[str] = ()) -> dict[str, Any]:
    """``{key: settings}`` of the diagnostics that declare settings (None for one switched off)."""
    return {
        d.key: None if d.switch in off else dict(d.settings) for d in registered() if d.settings is not None
    }


def switched_off(**switches: bool) -> tuple[str, ...]:
    """``switched_off(knn=False)`` -> ``("knn",)``: the switches that are off, for ``measure_layer``."""
    return tuple(name for name, on in switches.items() if not on)
