"""Symbolic links in image folders (data.folder.scan_images, the one walk of folder datasets: folder,
imagenet and intel): each file counted once however many names reach it, loops cut, and a
LinkedImagesWarning saying what was left out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from viny_probe.data.folder import LinkedImagesWarning, load_image_folder, scan_images
from viny_probe.data.intel import load_intel
from viny_probe.trainers.splits import fixed_split


def _folder_with_a_linked_copy(root: Path, files) -> Path:
    """a/ 5 images, c/ 10 images, b -> a (the issue's 15 files)."""
    for i in range(5):
        files.image(root / "a" / f"{i}.jpg", seed=i)
    for i in range(10):
        files.image(root / "c" / f"{i}.jpg", seed=10 + i)
    os.symlink("a", root / "b")
    return root


def test_a_linked_subfolder_is_counted_once(tmp_path, files) -> None:
    """Failed before the fix: 15 files gave 20 listed (a and b) and, split with 5 held out, held-out
    images that were also training images under the other name. Mutant watched failing: scan_images
    without its inside-target check (b then dropped for another reason)."""
    root = _folder_with_a_linked_copy(tmp_path / "data", files)
    listing = scan_images(root)
    assert len(listing.files) == 15 and not any(p.startswith("b/") for p in listing.files)
    assert listing.dropped == [("b", "a link to a, listed under that name")]
    with pytest.warns(LinkedImagesWarning, match=r"data: 1 symbolic link\(s\) .* b \(a link to a"):
        images = load_image_folder(root, size=16)
    assert len(images) == 15
    split = fixed_split("folder", images, 5, 0)
    held_out = {bytes(images.images[i].numpy()) for i in split.test.tolist()}
    assert len(held_out) == 3  # at most a fifth of 15
    assert not held_out & {bytes(images.images[i].numpy()) for i in split.pool.tolist()}  # none trains


def test_a_link_listed_before_its_target_leaves_the_target_its_own_name(tmp_path, files) -> None:
    """``0first -> c/deep`` comes first in the walk; the images keep their own name c/deep/x.jpg.
    Mutant watched failing: scan_images without its inside-target check (0first/x.jpg listed)."""
    root = tmp_path / "data"
    files.image(root / "c" / "deep" / "x.jpg")
    os.symlink("c/deep", root / "0first")
    assert scan_images(root).files == ["c/deep/x.jpg"]


@pytest.mark.parametrize(
    "target", ["..", ".", "../..", "loop"], ids=["parent", "itself", "root", "self-link"]
)
def test_link_loops_are_cut(tmp_path, files, target) -> None:
    """Failed before the fix (parent, itself, root): OSError 'Too many levels of symbolic links' after
    walking a/sub/loop/sub/loop/... Mutant watched failing: scan_images without both its
    inside-target check and its ``entered`` set (walked until the OS refuses, 40 links deep); the
    self-link failed (ELOOP from ``DirEntry.is_dir``) until scan_images caught it."""
    root = tmp_path / "data"
    files.image(root / "a" / "0.jpg")
    files.image(root / "a" / "sub" / "1.jpg", seed=1)
    os.symlink(target, root / "a" / "sub" / "loop")
    listing = scan_images(root)
    assert listing.files == ["a/0.jpg", "a/sub/1.jpg"]
    assert [path for path, _ in listing.dropped] == ["a/sub/loop"]  # cut at once, not 40 links deep


def test_a_folder_outside_is_entered_once_and_a_linked_file_kept_once(tmp_path, files) -> None:
    """Two links to one folder outside the dataset: its images once, under the first link's name. A
    file and a link to it: the file's own name is kept. Mutant watched failing: scan_images without
    its ``entered`` set (second/x.jpg listed too)."""
    outside = tmp_path / "outside"
    files.image(outside / "x.jpg")
    root = tmp_path / "data"
    files.image(root / "own.jpg", seed=1)
    os.symlink(outside, root / "first")
    os.symlink(outside, root / "second")
    os.symlink("own.jpg", root / "also.jpg")
    listing = scan_images(root)
    assert listing.files == ["first/x.jpg", "own.jpg"]
    assert [path for path, _ in listing.dropped] == ["also.jpg", "second"]


def test_an_image_in_two_intel_class_folders_counts_once(tmp_path, files) -> None:
    """Intel lists a split once (not one class folder at a time), so a link from one class folder
    into another is found. Failed before: 3 images."""
    split = tmp_path / "intel" / "seg_train" / "seg_train"
    files.image(split / "buildings" / "0.jpg")
    files.image(split / "forest" / "1.jpg", seed=1)
    os.symlink("../buildings/0.jpg", split / "forest" / "2.jpg")
    with pytest.warns(LinkedImagesWarning, match="forest/2.jpg"):
        images = load_intel(tmp_path / "intel", size=16)
    assert images.ids == ["buildings/0", "forest/1"] and torch.equal(images.labels, torch.tensor([0, 1]))
