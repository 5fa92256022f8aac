"""Helpers that give every error in the library the same shape.

One wording everywhere: "Expected `argument` to be <what is allowed>, but got <what was
given>.", a `TypeError` for a value of the wrong type and a `ValueError` for a value of the
right type that is out of range; unknown names list the valid values or the closest matches.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

__all__ = [
    "MIN_IMAGE_SIZE",
    "SEED_RANGE",
    "closest",
    "unknown_choice",
    "check_choice",
    "check_bool",
    "check_number",
    "check_mapping",
    "check_list",
    "check_keys",
    "check_image_size",
    "check_seed",
    "coerce_config",
]

_Config = TypeVar("_Config")

MIN_IMAGE_SIZE = 32
"""The smallest image side (pixels) that every data module, model and export takes: at 32 pixels
the coarsest feature map of a timm backbone (stride 32) still has one cell."""

SEED_RANGE = (0, 2**32)
"""Seeds are ints in `[0, 2**32)`: what `lightning.seed_everything` and NumPy accept."""


def closest(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to `n` entries of `choices` that look most like `value`.

    Examples:
        >>> closest("resnet181", ["resnet18", "resnet50", "vit_base"])
        ['resnet18', 'resnet50']
    """
    return difflib.get_close_matches(str(value).lower(), [str(c) for c in choices], n=n, cutoff=0.6)


def _argument(argument: str) -> str:
    """`argument` as messages show it: a bare name in backticks; a phrase that has its own backticks as is."""
    return argument if "`" in argument else f"`{argument}`"


def unknown_choice(
    argument: str, value: object, choices: Iterable[object], *, show_all: int = 40, sort: bool = True
) -> ValueError:
    """Build the `ValueError` raised for a value that is not one of `choices`.

    The one wording of the library: "Expected `argument` to be one of [...], but got 'x'.
    Did you mean 'y'?". With more than `show_all` choices, their count and the closest
    matches are shown instead of the list.

    Args:
        argument: The argument's name (shown in backticks), or a phrase that names it in
            backticks (``"each key of `optimizer_kwargs`"``).
        value: The value given.
        choices: The valid values.
        show_all: List every valid value up to this many.
        sort: Show the choices sorted; `False` keeps their order.

    Examples:
        >>> print(unknown_choice("optimizer", "adamx", ["adam", "adamw", "sgd"]))
        Expected `optimizer` to be one of ['adam', 'adamw', 'sgd'], but got 'adamx'. Did you mean 'adam'?
    """
    choices = list(dict.fromkeys(choices))
    if sort:
        choices.sort(key=str)
    matches = closest(str(value), [str(c) for c in choices])
    if len(choices) <= show_all:
        hint = f" Did you mean {matches[0]!r}?" if matches else ""
        allowed = f"one of {choices}"
    else:
        hint = f" Closest matches: {matches}." if matches else " None of them is close."
        allowed = f"one of {len(choices)} valid names"
    return ValueError(f"Expected {_argument(argument)} to be {allowed}, but got {value!r}.{hint}")


def check_choice(argument: str, value: object, choices: Iterable[object]) -> None:
    """Raise naming `argument` unless `value` is one of `choices`: a `TypeError` when `value`
    has none of the choices' types (`1` for a name), else the `ValueError` of `unknown_choice`.

    Examples:
        >>> check_choice("method", "trace", ["trace", "script"])  # passes silently
        >>> check_choice("method", "scrpt", ["trace", "script"])
        Traceback (most recent call last):
        ...
        ValueError: Expected `method` to be one of ['trace', 'script'], but got 'scrpt'. Did you mean 'script'?
    """
    choices = list(choices)
    if value in choices:
        return
    if not any(type(value) is type(choice) for choice in choices):
        raise TypeError(f"Expected {_argument(argument)} to be one of {choices}, but got {_got(value)}.")
    raise unknown_choice(argument, value, choices, sort=False)


def _got(value: object) -> str:
    """How a wrongly typed value is shown: its type, then its repr (`str '0.1'`)."""
    return f"{type(value).__name__} {value!r}"


def check_bool(argument: str, value: object) -> bool:
    """Return `value` if it is `True` or `False`, else raise a `TypeError` naming `argument`.

    Strings such as `"no"` and numbers such as `0` are refused: they would otherwise be
    read by their truth value (`"no"` is true).

    Examples:
        >>> check_bool("multi_label", False)
        False
    """
    if not isinstance(value, bool):
        raise TypeError(f"Expected `{argument}` to be True or False, but got {_got(value)}.")
    return value


def _range_text(low: float | None, high: float | None, low_inclusive: bool, high_inclusive: bool) -> str:
    if low is not None and high is not None:
        return f"in {'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
    if low is not None:
        return f"{'>=' if low_inclusive else '>'} {low}"
    if high is not None:
        return f"{'<=' if high_inclusive else '<'} {high}"
    return ""


def check_number(
    argument: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = False,
    integer: bool = False,
) -> Any:
    """Return `value` if it is a finite real number (an int with `integer=True`) in range.

    Booleans and strings are not numbers here. Infinite and NaN values are refused.

    Args:
        argument: The argument's name, used in the message.
        value: The value to check.
        low: The lower bound, or `None` for none.
        high: The upper bound, or `None` for none.
        low_inclusive: Whether `low` itself is allowed.
        high_inclusive: Whether `high` itself is allowed.
        integer: Require an int.

    Raises:
        TypeError: If `value` is not a number (an int with `integer=True`).
        ValueError: If it is not finite or out of range.

    Examples:
        >>> check_number("label_smoothing", 0.1, low=0, high=1)
        0.1
        >>> check_number("label_smoothing", 1.5, low=0, high=1)
        Traceback (most recent call last):
        ...
        ValueError: Expected `label_smoothing` to be a finite number in [0, 1), but got 1.5.
    """
    kind = "an int" if integer else "a finite number"
    bounds = _range_text(low, high, low_inclusive, high_inclusive)
    expected = f"{kind} {bounds}".strip()
    wanted_type = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, wanted_type):
        raise TypeError(f"Expected `{argument}` to be {expected}, but got {_got(value)}.")
    if not math.isfinite(value):
        raise ValueError(f"Expected `{argument}` to be {expected}, but got {value!r}.")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        raise ValueError(f"Expected `{argument}` to be {expected}, but got {value!r}.")
    return value


def check_mapping(argument: str, value: object, *, optional: bool = False) -> dict[str, Any]:
    """Return a copy of `value` as a `dict` if it is a mapping with string keys.

    With `optional=True`, `None` gives an empty dict.

    Examples:
        >>> check_mapping("optimizer_kwargs", None, optional=True)
        {}
    """
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        allowed = "a dict or None" if optional else "a dict"
        raise TypeError(f"Expected `{argument}` to be {allowed}, but got {_got(value)}.")
    for key in value:
        if not isinstance(key, str):
            raise TypeError(f"Expected the keys of `{argument}` to be strings, but got {_got(key)}.")
    return dict(value)


def check_list(argument: str, value: object, *, of: str) -> list[Any]:
    """Return `value` as a list if it is a list or tuple; a string is refused as a whole.

    `of` names what the entries should be, for the message ("MetricConfig").

    Examples:
        >>> check_list("metrics", "accuracy", of="MetricConfig")
        Traceback (most recent call last):
        ...
        TypeError: Expected `metrics` to be a list of MetricConfig, but got str 'accuracy'.
    """
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"Expected `{argument}` to be a list of {of}, but got {_got(value)}.")
    return list(value)


def check_keys(argument: str, value: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Raise a `ValueError` naming the first key of `value` that is not in `allowed`.

    Examples:
        >>> check_keys("backbone", {"pretraind": True}, ["model_name", "pretrained"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected each key of `backbone` to be one of [...], but got 'pretraind'. Did you mean 'pretrained'?
    """
    allowed = list(allowed)
    for key in value:
        if key not in allowed:
            raise unknown_choice(f"each key of `{argument}`", key, allowed)


def check_seed(value: object, argument: str = "seed") -> int:
    """Return `value` if it is an int in `SEED_RANGE`, else raise naming `argument`.

    Examples:
        >>> check_seed(42)
        42
        >>> check_seed(-1)
        Traceback (most recent call last):
        ...
        ValueError: Expected `seed` to be an int in [0, 4294967296), but got -1.
    """
    return check_number(argument, value, low=SEED_RANGE[0], high=SEED_RANGE[1], integer=True)


def check_image_size(value: object, argument: str = "image_size", *, pair: bool = True) -> Any:
    """Return an image size whose sides are ints >= `MIN_IMAGE_SIZE`, else raise naming `argument`.

    With `pair=True`, `value` is an int (a square) or a `(height, width)` pair and comes
    back as `(height, width)`; with `pair=False` only an int is taken, and returned as is.

    Examples:
        >>> check_image_size(64)
        (64, 64)
        >>> check_image_size((48, 64))
        (48, 64)
        >>> check_image_size(16, pair=False)
        Traceback (most recent call last):
        ...
        ValueError: Expected `image_size` to be an int >= 32, but got 16.
    """
    if not pair:
        return check_number(argument, value, low=MIN_IMAGE_SIZE, integer=True)
    expected = f"Expected `{argument}` to be an int or a (height, width) pair of ints, each >= {MIN_IMAGE_SIZE}"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        size = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in value)
    ):
        size = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{expected}, but got {_got(value)}.")
    if min(size) < MIN_IMAGE_SIZE:
        raise ValueError(f"{expected}, but got {value!r}.")
    return size


def coerce_config(cls: type[_Config], argument: str, value: object, expected: str) -> _Config:
    """Return `value` if it is a `cls` (a dataclass), build one from its dict form, else raise a `TypeError`.

    The dict's keys must be fields of `cls` (a misspelt key is named with its closest match).
    `expected` says what `argument` may be, for the message.

    Examples:
        >>> @dataclasses.dataclass
        ... class Size:
        ...     side: int = 32
        >>> coerce_config(Size, "size", {"side": 64}, "`size` to be a Size or its dict form")
        Size(side=64)
        >>> coerce_config(Size, "size", 64, "`size` to be a Size or its dict form")
        Traceback (most recent call last):
        ...
        TypeError: Expected `size` to be a Size or its dict form, but got int 64.
    """
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        check_keys(argument, value, [f.name for f in dataclasses.fields(cls)])  # type: ignore[arg-type]
        return cls(**value)
    raise TypeError(f"Expected {expected}, but got {type(value).__name__} {value!r}.")
