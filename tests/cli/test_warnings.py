"""VinyWarnings reach the terminal as one line without Python's source location."""

from __future__ import annotations

import warnings

import pytest

from viny_probe import cli
from viny_probe.data.cache import SkippedImagesWarning


def test_a_vinywarning_is_one_line_without_the_source(capsys, monkeypatch) -> None:
    """Mutant: main() leaving warnings.showwarning as Python's -> "cache.py:NN: SkippedImagesWarning"."""
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    monkeypatch.setattr(
        cli, "app", lambda: warnings.warn("pets: skipped 1 of 9 images", SkippedImagesWarning, stacklevel=1)
    )
    cli.main()
    err = capsys.readouterr().err
    assert err.strip() == "warning: pets: skipped 1 of 9 images"


def test_other_warnings_go_on_as_before(capsys, monkeypatch) -> None:
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    monkeypatch.setattr(cli, "app", lambda: warnings.warn("plain", UserWarning, stacklevel=1))
    with pytest.warns(UserWarning, match="plain"):
        cli.main()
    assert "warning: plain" not in capsys.readouterr().err
