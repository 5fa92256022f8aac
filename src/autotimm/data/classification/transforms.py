"""Image transforms for classification, built with `timm.data.create_transform`.

The backbone decides the input size, the normalisation, the interpolation and the
eval crop (its *data config*, as returned by `timm.data.resolve_model_data_config`);
the augmentation preset decides how much randomness the training transform adds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, create_transform
from timm.data.transforms import str_to_interp_mode
from torchvision import transforms as T

from autotimm._deprecation import deprecated_alias, renamed_argument
from autotimm._errors import check_choice, check_image_size

__all__ = [
    "SMALL_IMAGE_SIZE",
    "AugmentationName",
    "ToRGB",
    "build_eval_transform",
    "build_train_transform",
    "check_augmentation_preset",
    "create_eval_transform",
    "create_train_transform",
    "default_data_config",
    "eval_input_box",
    "list_augmentations",
    "resolve_data_config",
]

AugmentationName = Literal["auto", "default", "light", "no_flip", "small", "strong", "none"]

SMALL_IMAGE_SIZE = 64
"""Images whose shorter side is at most this many pixels count as small: the `"auto"` preset trains
them with `"small"` (shift, not crop), and their eval transform keeps the whole image (`crop_pct` 1.0)."""

# Keyword arguments given to `timm.data.create_transform(is_training=True, ...)` per
# preset. `None` means: train with the eval transform (no augmentation at all). The presets
# that depend on the image size (`auto`, `small`, `no_flip`) are built by `create_train_transform`.
_AUGMENTATIONS: dict[str, dict[str, Any] | None] = {
    # timm's standard ImageNet recipe: random-resized-crop (0.08, 1), flip, colour jitter 0.4.
    "default": {},
    # Gentler, for small data sets: keep at least half of the image, no colour jitter.
    "light": {"scale": (0.5, 1.0), "color_jitter": None},
    # RandAugment (timm's usual policy) plus random erasing with per-pixel noise.
    "strong": {"auto_augment": "rand-m9-mstd0.5-inc1", "re_prob": 0.25, "re_mode": "pixel"},
    "none": None,
}
_SIZED_PRESETS = ("auto", "no_flip", "small")

_DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def list_augmentations() -> list[str]:
    """Return the names of the augmentation presets.

    Examples:
        >>> list_augmentations()
        ['auto', 'default', 'light', 'no_flip', 'none', 'small', 'strong']
    """
    return sorted([*_AUGMENTATIONS, *_SIZED_PRESETS])


def default_data_config() -> dict[str, Any]:
    """Return timm's ImageNet defaults, used when no backbone gives its own data config.

    Examples:
        >>> default_data_config()["input_size"]
        (3, 224, 224)
    """
    return {
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "mean": tuple(IMAGENET_DEFAULT_MEAN),
        "std": tuple(IMAGENET_DEFAULT_STD),
        "crop_pct": 0.875,
        "crop_mode": "center",
    }


def resolve_data_config(
    data_config: Mapping[str, Any] | None = None,
    image_size: int | tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Complete a backbone's data config with timm's defaults and apply an image-size override.

    Args:
        data_config: A dict as returned by `timm.data.resolve_model_data_config(model)`
            (keys `input_size`, `mean`, `std`, `interpolation`, `crop_pct`, `crop_mode`).
            Missing keys take timm's ImageNet defaults; unknown keys are ignored.
        image_size: Overrides the height and width of `input_size` (an int for square
            images, or `(height, width)`), each side >= `autotimm._errors.MIN_IMAGE_SIZE` (32).

    Returns:
        A new dict with the six keys above; `input_size` is `(channels, height, width)`. For
        small images (shorter side <= `SMALL_IMAGE_SIZE`, 64 px) `crop_pct` is 1.0: the usual
        centre crop (0.875 for most backbones) would cut off an eighth of the content, and a
        32-px digit with it.

    Raises:
        TypeError: If `data_config` is not a mapping or `image_size` is not an int or pair.
        ValueError: If `input_size` or `image_size` is malformed.

    Examples:
        >>> cfg = resolve_data_config({"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}, image_size=64)
        >>> cfg["input_size"], cfg["mean"], cfg["crop_pct"]
        ((3, 64, 64), (0.5, 0.5, 0.5), 1.0)
    """
    if data_config is not None and not isinstance(data_config, Mapping):
        raise TypeError(
            "Expected `data_config` to be a dict like `timm.data.resolve_model_data_config(model)` returns, "
            f"but got {type(data_config).__name__}: {data_config!r}."
        )
    config = default_data_config()
    config.update({k: v for k, v in (data_config or {}).items() if k in _DATA_CONFIG_KEYS and v is not None})

    input_size = config["input_size"]
    if isinstance(input_size, int) and not isinstance(input_size, bool):
        input_size = (3, input_size, input_size)
    if not (isinstance(input_size, (tuple, list)) and len(input_size) == 3 and all(int(s) >= 1 for s in input_size)):
        raise ValueError(
            f"Expected `input_size` in the data config to be (channels, height, width), but got {input_size!r}."
        )
    if image_size is not None:
        input_size = (input_size[0], *check_image_size(image_size))
    config["input_size"] = tuple(int(s) for s in input_size)
    if _is_small(config):
        config["crop_pct"] = 1.0
    config["mean"] = tuple(float(m) for m in config["mean"])
    config["std"] = tuple(float(s) for s in config["std"])
    return config


def _is_small(config: Mapping[str, Any]) -> bool:
    return min(config["input_size"][1:]) <= SMALL_IMAGE_SIZE


def _shift_transform(config: Mapping[str, Any], *, flip: bool) -> Callable[[Image.Image], Any]:
    """Resize as the eval transform does, then shift: a random crop of the image padded by 1/8 of its side."""
    height, width = config["input_size"][1:]
    steps = [
        T.Resize(
            height if height == width else (height, width), interpolation=str_to_interp_mode(config["interpolation"])
        ),
        T.RandomCrop((height, width), padding=max(1, round(min(height, width) / 8)), pad_if_needed=True),
    ]
    if flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(config["mean"], config["std"])])


def create_eval_transform(data_config: Mapping[str, Any] | None = None) -> Callable[[Image.Image], Any]:
    """Build the deterministic eval transform: resize, centre crop (per `crop_pct`), tensor, normalise.

    Args:
        data_config: A backbone's data config; see `resolve_data_config`.

    Returns:
        A callable mapping an RGB PIL image to a normalised `[C, H, W]` float tensor.

    Examples:
        >>> from PIL import Image
        >>> tf = create_eval_transform({"input_size": (3, 32, 32)})
        >>> tuple(tf(Image.new("RGB", (50, 40))).shape)
        (3, 32, 32)
    """
    cfg = resolve_data_config(data_config)
    return create_transform(
        input_size=cfg["input_size"],
        is_training=False,
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
        crop_pct=cfg["crop_pct"],
        crop_mode=cfg["crop_mode"],
    )


def eval_input_box(data_config: Mapping[str, Any] | None, image_size: tuple[int, int]) -> tuple[float, ...]:
    """Where the eval transform's output lies in an image of `image_size` (`(height, width)`).

    The inverse of the resize and crop (or pad) of `create_eval_transform`, timm's for each `crop_mode`:
    the model's input covers `(left, top, right, bottom)` of the image, in image pixels (beyond the
    image where `crop_mode="border"` pads). Maps drawn on the input (class-activation maps) go back onto
    the image with it.

    Examples:
        >>> eval_input_box({"input_size": (3, 32, 32), "crop_pct": 1.0}, (64, 128))
        (32.0, 0.0, 96.0, 64.0)
    """
    cfg = resolve_data_config(data_config)
    target_h, target_w = cfg["input_size"][1:]
    height, width = image_size
    scale_h, scale_w = (math.floor(s / cfg["crop_pct"]) for s in (target_h, target_w))
    if cfg["crop_mode"] == "squash":
        new_h, new_w = scale_h, scale_w
    elif cfg["crop_mode"] != "border" and scale_h == scale_w:  # torchvision's Resize of the shorter side
        short, long = sorted((height, width))
        new_short, new_long = scale_h, int(scale_h * long / short)
        new_h, new_w = (new_short, new_long) if height <= width else (new_long, new_short)
    else:  # timm's ResizeKeepRatio: the shorter side fits (centre), or the longer side (border)
        ratios = (height / scale_h, width / scale_w)
        ratio = max(ratios) if cfg["crop_mode"] == "border" else min(ratios)
        new_h, new_w = round(height / ratio), round(width / ratio)
    if cfg["crop_mode"] == "border":  # timm's CenterCropOrPad pads first (left/top get the smaller half)
        top = -((target_h - new_h) // 2) if new_h < target_h else int(round((new_h - target_h) / 2))
        left = -((target_w - new_w) // 2) if new_w < target_w else int(round((new_w - target_w) / 2))
    else:  # torchvision's CenterCrop
        top, left = int(round((new_h - target_h) / 2)), int(round((new_w - target_w) / 2))
    sy, sx = height / new_h, width / new_w
    return (left * sx, top * sy, (left + target_w) * sx, (top + target_h) * sy)


def create_train_transform(
    data_config: Mapping[str, Any] | None = None,
    augmentation_preset: AugmentationName = "auto",
    *,
    augmentation: AugmentationName | None = None,
) -> Callable[[Image.Image], Any]:
    """Build the training transform of an augmentation preset.

    Presets (see `list_augmentations()`):

    - `"auto"` (the default): `"small"` for small images (shorter side <= `SMALL_IMAGE_SIZE`,
      64 px), `"default"` for larger ones.
    - `"default"`: timm's standard recipe: random-resized-crop (scale 0.08-1), horizontal
      flip, colour jitter 0.4. Crops down to 8% of the image suit ImageNet-sized photos, not
      a 32-px image.
    - `"small"`: CIFAR's recipe at any size: resize, pad by 1/8 of the side (4 px at 32 px),
      random crop back to the size (a shift), horizontal flip. The whole object stays in view.
    - `"no_flip"`: `"auto"` without the horizontal flip, for data whose orientation matters
      (digits, text, road signs).
    - `"light"`: random-resized-crop with scale (0.5, 1) and horizontal flip, no colour
      jitter; for small data sets.
    - `"strong"`: random-resized-crop, flip, RandAugment `rand-m9-mstd0.5-inc1` and
      random erasing (p=0.25, per-pixel noise).
    - `"none"`: the eval transform, so training sees exactly what evaluation sees.

    Args:
        data_config: A backbone's data config; see `resolve_data_config`.
        augmentation_preset: The preset name.
        augmentation: Deprecated name of `augmentation_preset`.

    Returns:
        A callable mapping an RGB PIL image to a normalised `[C, H, W]` float tensor.

    Raises:
        ValueError: If `augmentation_preset` is not a preset; the message lists the presets.

    Examples:
        >>> from PIL import Image
        >>> tf = create_train_transform({"input_size": (3, 32, 32)}, augmentation_preset="light")
        >>> tuple(tf(Image.new("RGB", (50, 40))).shape)
        (3, 32, 32)
    """
    preset = renamed_argument(
        "augmentation",
        augmentation,
        "augmentation_preset",
        augmentation_preset,
        "auto",
        owner="create_train_transform",
    )
    preset = check_augmentation_preset(preset)
    cfg = resolve_data_config(data_config)
    if preset == "small" or (preset in ("auto", "no_flip") and _is_small(cfg)):
        return _shift_transform(cfg, flip=preset != "no_flip")
    kwargs = {"hflip": 0.0} if preset == "no_flip" else _AUGMENTATIONS["default" if preset == "auto" else preset]
    if kwargs is None:
        return create_eval_transform(data_config)
    return create_transform(
        input_size=cfg["input_size"],
        is_training=True,
        interpolation=cfg["interpolation"],
        mean=cfg["mean"],
        std=cfg["std"],
        **kwargs,
    )


def check_augmentation_preset(preset: object) -> str:
    """Return `preset` if it names a classification augmentation preset, else raise naming it.

    Examples:
        >>> check_augmentation_preset("light")
        'light'
    """
    check_choice("augmentation_preset", preset, list_augmentations())
    return preset  # type: ignore[return-value]


build_eval_transform = deprecated_alias(create_eval_transform, "build_eval_transform")
build_train_transform = deprecated_alias(create_train_transform, "build_train_transform")


class ToRGB:
    """Convert a PIL image of any mode (grayscale, palette, RGBA) to RGB.

    A class rather than a lambda so that datasets using it can be pickled into
    DataLoader worker processes started with `spawn`.

    Examples:
        >>> from PIL import Image
        >>> ToRGB()(Image.new("L", (8, 8))).mode
        'RGB'
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        return image if image.mode == "RGB" else image.convert("RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
