import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from viny_probe.data.decode import ImageDecodeError, TrimapError, load_rgb, load_trimap
from viny_probe.errors import VinyError


def _constant(mode: str, value, size=(40, 30)) -> Image.Image:
    return Image.new(mode, size, value)


@pytest.mark.parametrize(
    ("image", "fmt", "expected_rgb"),
    [
        (_constant("RGB", (10, 200, 30)), "PNG", (10, 200, 30)),
        (_constant("L", 100), "PNG", (100, 100, 100)),
        (_constant("LA", (100, 0)), "PNG", (100, 100, 100)),  # alpha dropped, not composited
        (_constant("RGBA", (10, 20, 30, 0)), "PNG", (10, 20, 30)),  # fully transparent: colour kept
        (_constant("CMYK", (0, 0, 0, 0)), "JPEG", (255, 255, 255)),
        (_constant("1", 1), "PNG", (255, 255, 255)),
        (Image.fromarray(np.full((30, 40), 65535, np.uint16)), "PNG", (255, 255, 255)),  # 16-bit greyscale
        (_constant("I", 32896), "TIFF", (128, 128, 128)),  # 32-bit int holding a 16-bit range
        (_constant("F", 0.5), "TIFF", (128, 128, 128)),  # float in [0, 1]
        (_constant("RGB", (1, 2, 3)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG", (1, 2, 3)),
    ],
    ids=["RGB", "L", "LA", "RGBA", "CMYK", "1", "I;16", "I", "F", "P"],
)
def test_odd_modes_come_out_rgb_uint8(tmp_path: Path, image: Image.Image, fmt: str, expected_rgb) -> None:
    path = tmp_path / f"x.{fmt.lower()}"
    image.save(path, format=fmt)
    out = load_rgb(path, 16)
    assert out.shape == (3, 16, 16) and out.dtype == np.uint8
    assert np.abs(out.reshape(3, -1).astype(int) - np.array(expected_rgb)[:, None]).max() <= 1


def test_palette_with_transparency_decodes_without_warning(tmp_path: Path, files) -> None:
    path = tmp_path / "p.png"
    files.noise("P").save(path, transparency=bytes([0, 128, 255, 3]))  # per-entry alpha, as bytes
    with Image.open(path) as image:
        assert isinstance(image.info["transparency"], bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "palette with transparency" warning would fail here
        out = load_rgb(path, 8)
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8


def test_resize_drops_aspect_ratio(tmp_path: Path) -> None:
    pixels = np.zeros((30, 40, 3), np.uint8)
    pixels[:, 20:] = 255  # left half black, right half white
    Image.fromarray(pixels).save(tmp_path / "half.png")
    out = load_rgb(tmp_path / "half.png", 16)
    assert out.shape == (3, 16, 16)
    assert (out[:, :, :7] == 0).all() and (out[:, :, 9:] == 255).all()  # both halves squeezed to 8 px wide


def test_jpeg_shrinks_to_the_right_shape(tmp_path: Path, files) -> None:
    out = load_rgb(files.image(tmp_path / "a.jpg", "RGB"), 24)
    assert out.shape == (3, 24, 24) and out.dtype == np.uint8 and out.std() > 0


@pytest.mark.parametrize("kind", ["garbage", "truncated", "missing", "text", "folder"])
def test_unreadable_file_raises_decode_error_naming_it(tmp_path: Path, files, kind: str) -> None:
    path = tmp_path / "bad.jpg"
    if kind == "garbage":
        files.corrupt(path)
    elif kind == "truncated":
        data = files.image(tmp_path / "ok.jpg").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("hello")
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(path, 16)
    assert isinstance(info.value, VinyError)
    assert str(path) in str(info.value) and info.value.path == path


def test_trimap_values_map_to_pet_background_boundary(tmp_path: Path, files) -> None:
    raw = np.ones((16, 16), np.uint8)  # 1 pet
    raw[:, 8:] = 2  # background
    raw[6:10, :] = 3  # boundary
    out = load_trimap(files.trimap(tmp_path / "t.png", raw), 16)
    assert out.dtype == np.uint8 and out.shape == (16, 16)
    np.testing.assert_array_equal(out, raw - 1)


def test_trimap_resize_is_nearest(tmp_path: Path, files) -> None:
    raw = np.where(np.arange(40)[None, :] < 20, 1, 3).repeat(30, axis=0).astype(np.uint8)
    out = load_trimap(files.trimap(tmp_path / "t.png", raw), 8)
    assert set(np.unique(out)) == {0, 2}  # no blended in-between value such as 1
    assert (out[:, :4] == 0).all() and (out[:, 4:] == 2).all()


def test_palette_trimap_reads_indices(tmp_path: Path) -> None:
    raw = np.array([[1, 2], [3, 1]], np.uint8).repeat(4, 0).repeat(4, 1)
    image = Image.frombytes("P", raw.shape[::-1], raw.tobytes())
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(load_trimap(tmp_path / "p.png", 8), raw - 1)


@pytest.mark.parametrize("bad_value", [0, 4, 255])
def test_trimap_with_other_values_is_an_error_naming_file(tmp_path: Path, files, bad_value: int) -> None:
    raw = np.ones((10, 10), np.uint8)
    raw[0, 0] = bad_value
    path = files.trimap(tmp_path / "bad.png", raw)
    with pytest.raises(TrimapError) as info:
        load_trimap(path, 8)
    assert str(path) in str(info.value) and str(bad_value) in str(info.value)
    # the reason alone (what a skipped-images warning lists) says what was expected
    assert "expected only 1 (pet), 2 (background), 3 (boundary)" in info.value.reason


def test_size_must_be_positive(tmp_path: Path, files) -> None:
    with pytest.raises(VinyError, match="size"):
        load_rgb(files.image(tmp_path / "a.png"), 0)
