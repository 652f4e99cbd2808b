"""The embedded sets say when this machine cannot build them as published (no silent fallback)."""

from __future__ import annotations

import pytest

from viny_probe.data import _textures, embedded, load_dataset
from viny_probe.data.cache import resolve_cache_dir
from viny_probe.errors import VinyWarning


def test_missing_sample_photos_are_said_and_give_their_own_cache_entry(monkeypatch) -> None:
    """scikit-image photos that cannot be loaded become procedural tiles: a VinyWarning names them, the
    dataset notes carry them into data.json, and the cache key changes (another machine's "embedded"
    data never shares an entry with this one). Mutant: no stand_in_photos in the key -> same entry."""
    before = set(resolve_cache_dir().glob("*"))
    load_dataset("toy-scenes", size=32, limit=6)
    plain = set(resolve_cache_dir().glob("*")) - before
    monkeypatch.setattr(_textures, "missing_photos", lambda: ("astronaut", "coffee"))
    with pytest.warns(VinyWarning, match="astronaut, coffee could not be loaded"):
        load_dataset("toy-scenes", size=32, limit=6)
    stand_in = set(resolve_cache_dir().glob("*")) - before - plain
    assert len(plain) == 1 and len(stand_in) == 1
    assert "astronaut, coffee" in embedded.data_notes()[0]


def test_no_note_where_every_photo_loads(monkeypatch) -> None:
    monkeypatch.setattr(_textures, "missing_photos", lambda: ())
    assert embedded.data_notes() == []
