"""What `predict` reads: sources of every kind, converted to 8-bit RGB; bad sources named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from autotimm.inference import NotAnImageError, collect_images, iter_batches, to_rgb


def test_16_bit_grey_rgba_and_palette_images_become_8_bit_rgb():
    deep = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=np.uint16))
    assert [to_rgb(deep).getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (100, 100, 100), (255, 255, 255)]
    assert to_rgb(Image.new("RGBA", (2, 2), (10, 20, 30, 0))).getpixel((0, 0)) == (10, 20, 30)
    assert to_rgb(Image.new("L", (2, 2), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert to_rgb(Image.new("P", (2, 2))).mode == "RGB"


def test_arrays_and_tensors_of_each_layout_and_dtype():
    grey = np.full((4, 6), 200, dtype=np.uint8)
    floats = np.full((4, 6, 3), 0.5)
    deep = np.full((4, 6, 1), 65535, dtype=np.uint16)
    batch = torch.rand(3, 3, 4, 6)
    found = collect_images([grey, floats, deep, batch])
    assert [s.name for s in found] == [f"image_{i}" for i in range(6)]
    assert all(s.image.mode == "RGB" and s.image.size == (6, 4) for s in found)
    assert found[1].image.getpixel((0, 0)) == (128, 128, 128) and found[2].image.getpixel((0, 0)) == (255, 255, 255)
    assert np.array_equal(np.asarray(found[3].image), (batch[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))


@pytest.mark.parametrize(
    ("source", "error", "match"),
    [
        (np.zeros((2, 2, 2, 2), dtype=np.uint8), ValueError, r"\[H, W\].*shape \(2, 2, 2, 2\)"),
        (np.zeros((2, 2), dtype=np.int64), TypeError, "dtype int64"),
        (torch.zeros(2, 5, 4, 4), ValueError, r"\[B, 3, H, W\].*\(2, 5, 4, 4\)"),
        (3.5, TypeError, "got float"),
        ([], ValueError, "holds no images"),
    ],
)
def test_bad_sources_are_named(source: object, error: type[Exception], match: str):
    with pytest.raises(error, match=match):
        collect_images(source)


def test_folders_and_globs_list_image_files_recursively_in_order(tmp_path: Path):
    for name in ("b.png", "a.jpg", "sub/c.PNG", "notes.txt", ".hidden.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        if name.lower().endswith((".png", ".jpg")):
            Image.new("RGB", (4, 4)).save(tmp_path / name, format="PNG")
        else:
            (tmp_path / name).write_text("x")
    assert [Path(s.name).name for s in collect_images(tmp_path)] == ["a.jpg", "b.png", "c.PNG"]
    assert [Path(s.name).name for s in collect_images(str(tmp_path / "**" / "*.PNG"))] == ["c.PNG"]


def test_unreadable_files_are_skipped_and_listed_or_raise(tmp_path: Path):
    Image.new("RGB", (4, 4)).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    sources = collect_images(tmp_path)
    skipped: list[str] = []
    batches = list(iter_batches(sources, 8, "skip", skipped))
    assert [s.name for s in batches[0][0]] == [str(tmp_path / "good.png")] and skipped == [str(tmp_path / "bad.png")]
    with pytest.raises(NotAnImageError, match="bad.png"):
        list(iter_batches(sources, 8, "raise"))
