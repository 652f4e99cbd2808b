"""Registries by name: the one place where viny looks up regimes, datasets and diagnostics.

Each concept owns its facts (a regime its schedule phase and head, a dataset its loader and split
rule) and registers itself once, in its own file; everyone else reads them from here. The built-in
entries are registered when their package is first imported; a lookup imports that package first
(``builtins``), so ``REGIMES.get("simmim")`` works from anywhere without importing upward. Code
outside viny (a user's module, a test) registers its own entries the same way.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from .errors import VinyError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order."""

    def __init__(self, kind: str, builtins: str | None = None) -> None:
        self.kind, self.builtins = kind, builtins
        self._entries: dict[str, T] = {}
        self._loaded = builtins is None

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            importlib.import_module(self.builtins)

    def register(self, name: str, entry: T, *, replace: bool = False) -> T:
        if not name:
            raise VinyError(f"a {self.kind} needs a name to be registered")
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise VinyError(f"{self.kind} {name!r} is already registered; pick another name")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    @contextlib.contextmanager
    def registered(self, name: str, entry: T, *, replace: bool = False) -> Iterator[T]:
        """``entry`` registered as ``name`` for the duration of a ``with`` block (tests, notebooks);
        with ``replace``, in place of the entry of that name, which is restored afterwards."""
        self._load_builtins()
        previous = self._entries.get(name)
        self.register(name, entry, replace=replace)
        try:
            yield entry
        finally:
            self.unregister(name)
            if previous is not None:
                self._entries[name] = previous

    def get(self, name: str) -> T:
        self._load_builtins()
        if name not in self._entries:
            raise VinyError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self._entries)}")
        return self._entries[name]

    def names(self) -> tuple[str, ...]:
        self._load_builtins()
        return tuple(self._entries)

    def values(self) -> list[T]:
        self._load_builtins()
        return list(self._entries.values())

    __getitem__ = get

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries


# The regimes (viny_probe.trainers, one file each) and the datasets (viny_probe.data).
REGIMES: Registry = Registry("regime", builtins="viny_probe.trainers")
DATASETS: Registry = Registry("dataset", builtins="viny_probe.data")
