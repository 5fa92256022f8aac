"""Reading image files with clear errors, shared by every data format."""

from __future__ import annotations

from PIL import Image

__all__ = ["CorruptImageError", "load_rgb_image"]


class CorruptImageError(OSError):
    """Raised when a file with an image extension cannot be decoded; the message names the file."""


def load_rgb_image(path: str) -> Image.Image:
    """Open an image file as RGB, raising `CorruptImageError` naming `path` if it cannot be decoded.

    A module-level function, so datasets using it pickle into DataLoader workers.

    Examples:
        >>> image = load_rgb_image("cat.png")  # doctest: +SKIP
    """
    try:
        with open(path, "rb") as f, Image.open(f) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:  # PIL's decoders raise all three
        raise CorruptImageError(
            f"Could not read image file '{path}' ({type(e).__name__}: {e}). Remove or replace this file."
        ) from e
