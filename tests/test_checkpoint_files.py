"""Damaged and foreign checkpoint files end in one line that names the file and the way forward."""

from __future__ import annotations

import pytest
import torch

from viny_probe.checkpoint import load_checkpoint
from viny_probe.errors import VinyError


class _Code:
    def __reduce__(self):
        return (print, ("this must never run",))


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_zero_byte_checkpoint_is_named_empty(tmp_path) -> None:
    """Mutant: the old first-line-of-the-message code (IndexError on torch's empty EOFError message)."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"")
    with pytest.raises(VinyError) as err:
        load_checkpoint(path, if_damaged="Delete it and start again.")
    text = _one_line(err)
    assert str(path) in text and "empty (0 bytes)" in text and text.endswith("Delete it and start again.")


def test_truncated_checkpoint_is_named_damaged(tmp_path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"encoder": {"w": torch.zeros(4096)}, "format_version": 2}, good)
    path = tmp_path / "final.pt"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(VinyError) as err:
        load_checkpoint(path)
    text = _one_line(err)
    assert str(path) in text and "is truncated" in text and "again" in text


def test_pickled_code_is_refused_with_its_name_and_no_advice_to_turn_safety_off(tmp_path) -> None:
    """Mutant: passing torch's message through -> it ends advising `weights_only` set to False."""
    path = tmp_path / "evil.pt"
    torch.save({"encoder": _Code()}, path)
    with pytest.raises(VinyError) as err:
        load_checkpoint(path)
    text = _one_line(err)
    assert "pickled code (print)" in text and "refuses" in text
    assert "weights_only" not in text and "False" not in text


def test_zeroed_checkpoint_is_named_damaged(tmp_path) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"\0" * 5000)
    with pytest.raises(VinyError, match="is zeroed") as err:
        load_checkpoint(path)
    assert str(path) in _one_line(err)


def test_atomic_writes_get_the_usual_file_mode(tmp_path) -> None:
    """Mutant: no fchmod after mkstemp -> run files readable by their owner only (0600)."""
    import os

    from viny_probe.checkpoint import write_json

    path = tmp_path / "config.json"
    write_json(path, {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
