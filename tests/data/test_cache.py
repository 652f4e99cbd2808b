import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from viny_probe.data import cache, decode
from viny_probe.data.cache import DecodeOptions, cache_key, cached_imageset, resolve_cache_dir
from viny_probe.data.folder import load_image_folder
from viny_probe.data.pets import load_pets
from viny_probe.errors import VinyError


@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real_rgb, real_mask = decode.load_rgb, decode.load_mask

    def rgb(path, size, *args):
        calls.append(str(path))
        return real_rgb(path, size, *args)

    def mask(path, size, classes):
        calls.append(str(path))
        return real_mask(path, size, classes)

    monkeypatch.setattr(decode, "load_rgb", rgb)
    monkeypatch.setattr(decode, "load_mask", mask)
    return calls


def _entries(cache_dir: Path) -> list[str]:
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


def test_cache_hit_returns_identical_tensors_without_decoding(
    make_pets, decode_calls, tmp_path: Path
) -> None:
    pets = make_pets()
    first = load_pets(pets.parent, size=16, cache_dir=tmp_path / "c")
    assert len(decode_calls) == 2 * len(first)  # every image and every trimap once
    decode_calls.clear()
    second = load_pets(pets.parent, size=16, cache_dir=tmp_path / "c")
    assert decode_calls == []
    assert torch.equal(first.images, second.images) and torch.equal(first.masks, second.masks)
    assert torch.equal(first.labels, second.labels)
    assert (first.ids, first.class_names) == (second.ids, second.class_names)
    assert len(_entries(tmp_path / "c")) == 1


def test_a_different_size_is_a_different_entry(make_pets, tmp_path: Path) -> None:
    pets = make_pets()
    load_pets(pets.parent, size=16, cache_dir=tmp_path / "c")
    load_pets(pets.parent, size=24, cache_dir=tmp_path / "c")
    assert [name.split("-")[1] for name in _entries(tmp_path / "c")] == ["16px", "24px"]


def test_changed_files_change_the_key(loose_folder: Path, decode_calls, files, tmp_path: Path) -> None:
    cache_dir = tmp_path / "c"
    load_image_folder(loose_folder, size=16, cache_dir=cache_dir)
    files.image(loose_folder / "new.png", seed=42)  # a new file: new list
    decode_calls.clear()
    grown = load_image_folder(loose_folder, size=16, cache_dir=cache_dir)
    assert len(grown) == 6 and len(decode_calls) == 6 and len(_entries(cache_dir)) == 2

    os.utime(loose_folder / "a.png", ns=(1, 1))  # only the mtime changes (e.g. rewritten in place)
    decode_calls.clear()
    load_image_folder(loose_folder, size=16, cache_dir=cache_dir)
    assert len(decode_calls) == 6 and len(_entries(cache_dir)) == 3


def test_key_hash_ignores_dict_order_but_not_values() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1, "b": [1, 2]}) != cache_key({"a": 1, "b": [2, 1]})


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        (folder / "images.npy").write_bytes(b"partial")
        raise VinyError("decoding failed")

    with pytest.raises(VinyError, match="decoding failed"):
        cached_imageset({"name": "x", "size": 8}, build, tmp_path / "c")
    assert _entries(tmp_path / "c") == []  # neither an entry nor a leftover temporary folder


def test_a_killed_build_is_cleaned_up_later(tmp_path: Path) -> None:
    key = {"name": "x", "size": 8}
    entry_name = f"x-8px-{cache_key(key)[:16]}"
    stale, fresh = tmp_path / "c" / f".tmp-{entry_name}-old", tmp_path / "c" / f".tmp-{entry_name}-new"
    stale.mkdir(parents=True)
    fresh.mkdir()
    os.utime(stale, (0, 0))  # left by a process killed long ago; "fresh" may still be building

    def build(folder: Path) -> None:
        np.save(folder / "images.npy", np.zeros((1, 3, 8, 8), np.uint8))
        cache.write_meta(folder, name="x", class_names=[], ids=["0"])

    cached_imageset(key, build, tmp_path / "c")
    assert _entries(tmp_path / "c") == [f".tmp-{entry_name}-new", entry_name]


def test_entry_layout_and_meta(tmp_path: Path) -> None:
    def build(folder: Path) -> None:
        np.save(folder / "images.npy", np.full((2, 3, 4, 4), 9, np.uint8))
        np.save(folder / "labels.npy", np.array([1, 0], np.int64))
        cache.write_meta(folder, name="demo", class_names=["a", "b"], ids=["x", "y"])

    data, meta = cached_imageset({"name": "demo", "size": 4}, build, tmp_path / "c")
    (entry,) = (tmp_path / "c").iterdir()
    assert entry.name.startswith("demo-4px-")
    assert sorted(p.name for p in entry.iterdir()) == ["images.npy", "key.json", "labels.npy", "meta.json"]
    assert json.loads((entry / "meta.json").read_text())["ids"] == ["x", "y"] == data.ids
    assert data.labels.tolist() == [1, 0] and data.class_names == ["a", "b"] and meta["name"] == "demo"


def test_large_arrays_stay_memory_mapped_without_warnings(make_pets, monkeypatch, tmp_path: Path) -> None:
    pets = make_pets()
    in_memory = load_pets(pets.parent, size=16, cache_dir=tmp_path / "c")
    monkeypatch.setattr(cache, "IN_MEMORY_MAX_BYTES", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "not writable" warning must not leak out
        mapped = load_pets(pets.parent, size=16, cache_dir=tmp_path / "c")
    assert torch.equal(mapped.images, in_memory.images) and torch.equal(mapped.masks, in_memory.masks)
    # Proof of the memory map: a write to the file shows through the mapped tensor, not the copy.
    (entry,) = (tmp_path / "c").iterdir()
    on_disk = np.load(entry / "images.npy", mmap_mode="r+")
    on_disk[0, 0, 0, 0] = 255 - on_disk[0, 0, 0, 0]
    on_disk.flush()
    assert mapped.images[0, 0, 0, 0] == 255 - in_memory.images[0, 0, 0, 0]
    subset = mapped.subset([2, 0])  # indexing copies: the usual way to get a writable batch
    assert torch.equal(subset.images[0], in_memory.images[2]) and subset.images.numpy().flags.writeable


def test_unloadable_entry_is_built_again(make_pets, tmp_path: Path) -> None:
    """An images.npy numpy cannot read is set aside and the entry built again, with a warning naming it.
    Mutant watched failing: ``cached_imageset`` without its DamagedCacheEntry branch (the error escapes)."""
    pets = make_pets()
    first = load_pets(pets.parent, size=16, cache_dir=tmp_path / "c")
    (entry,) = (tmp_path / "c").iterdir()
    (entry / "images.npy").write_bytes(b"not numpy")
    with pytest.warns(cache.DamagedCacheWarning, match="building it again") as caught:
        again = load_pets(pets.parent, size=16, cache_dir=tmp_path / "c")
    assert str(entry) in str(caught[0].message)
    assert torch.equal(again.images, first.images) and _entries(tmp_path / "c") == [entry.name]


def test_read_entry_on_a_damaged_entry_says_to_delete_it(make_pets, tmp_path: Path) -> None:
    pets = make_pets()
    load_pets(pets.parent, size=16, cache_dir=tmp_path / "c")
    (entry,) = (tmp_path / "c").iterdir()
    (entry / "meta.json").write_text("{")
    with pytest.raises(VinyError, match="delete that folder") as info:
        cache.read_entry(entry)
    assert str(entry) in str(info.value)


def test_progress_bar_path_decodes_the_same(make_pets, monkeypatch, tmp_path: Path, capsys) -> None:
    pets = make_pets()
    plain = load_pets(pets.parent, size=16, cache_dir=tmp_path / "a")
    monkeypatch.setattr(cache, "PROGRESS_MIN_FILES", 1)
    with_bar = load_pets(pets.parent, size=16, cache_dir=tmp_path / "b", decoding=DecodeOptions(workers=2))
    assert torch.equal(plain.images, with_bar.images)
    assert capsys.readouterr().out == ""  # the bar goes to stderr only


def test_cache_dir_argument_then_environment_then_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VINY_CACHE_DIR", str(tmp_path / "env"))
    assert resolve_cache_dir(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert resolve_cache_dir() == (tmp_path / "env").resolve()
    monkeypatch.delenv("VINY_CACHE_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (
        tmp_path / "home"
    ).mkdir()  # a HOME that names no folder is an error (tests/faults/test_cache_location.py)
    assert resolve_cache_dir() == (tmp_path / "home" / ".cache" / "viny").resolve()


def test_on_error_is_validated(make_pets) -> None:
    with pytest.raises(VinyError, match="on_error"):
        load_pets(make_pets().parent, size=16, decoding=DecodeOptions(on_error="ignore"))


@pytest.mark.parametrize(
    "decoding",
    [
        DecodeOptions(),
        DecodeOptions(workers=2, on_error="fail"),
        DecodeOptions(resize="nearest"),
        DecodeOptions(keep_aspect=True),
        DecodeOptions("nearest", keep_aspect=True, workers=1),
    ],
    ids=["default", "threads-and-fail", "nearest", "aspect", "nearest-aspect"],
)
def test_decode_options_keep_the_cache_keys_entries_were_written_under(
    make_pets, tmp_path: Path, decoding: DecodeOptions
):
    """The decode-cache key (key.json and the entry's folder name) of a Pets load with ``decoding`` is
    the one the loaders built before DecodeOptions grouped their keywords, spelled out here as that
    code built it: name, size, decoder, format, the loader's key, ``resize`` only when not bilinear,
    ``aspect: keep`` only with keep_aspect, class names and samples; workers and on_error in no key. So
    every cache entry written before stays valid. Mutants seen failing: ``key_fields`` writing
    ``resize`` always (the default and aspect keys gain ``"resize": "bilinear"``); ``workers`` added
    to the key."""
    pets = make_pets()
    loaded = load_pets(pets.parent, size=16, cache_dir=tmp_path / "c", decoding=decoding)
    (entry,) = (tmp_path / "c").iterdir()
    folder = pets.folder.resolve()
    earlier = {"name": "pets", "size": 16, "decoder": decode.DECODER_VERSION, "format": cache.CACHE_FORMAT}
    earlier["root"] = str(folder)
    if decoding.resize != "bilinear":
        earlier["resize"] = decoding.resize
    if decoding.keep_aspect:
        earlier["aspect"] = "keep"
    earlier["class_names"] = loaded.class_names
    earlier["samples"] = [
        [
            name,
            label,
            cache.fingerprint(folder / "images" / f"{name}.jpg"),
            cache.fingerprint(folder / "annotations" / "trimaps" / f"{name}.png"),
        ]
        for name, label in zip(pets.names, [c - 1 for c in pets.class_ids], strict=True)
    ]
    assert (entry / "key.json").read_text() == json.dumps(earlier, sort_keys=True, default=str)
    assert entry.name == f"pets-16px-{cache_key(earlier)[:16]}"
