"""Helpers that give every error in the library the same shape.

One wording everywhere: "Expected `argument` to be <what is allowed>, but got <what was
given>.", a `TypeError` for a value of the wrong type and a `ValueError` for a value of the
right type that is out of range; unknown names list the valid values or the closest matches.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "closest",
    "unknown_choice",
    "check_choice",
    "check_bool",
    "check_number",
    "check_mapping",
    "check_list",
    "check_keys",
]


def closest(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to `n` entries of `choices` that look most like `value`.

    Examples:
        >>> closest("resnet181", ["resnet18", "resnet50", "vit_base"])
        ['resnet18', 'resnet50']
    """
    return difflib.get_close_matches(str(value).lower(), [str(c) for c in choices], n=n, cutoff=0.6)


def unknown_choice(argument: str, value: object, choices: Iterable[str], *, show_all: int = 40) -> ValueError:
    """Build the `ValueError` raised for a name that is not in a registry.

    Lists every valid name when there are few, otherwise the closest matches.
    """
    choices = sorted(set(choices))
    matches = closest(str(value), choices)
    if len(choices) <= show_all:
        hint = f"Valid values: {choices}."
        if matches:
            hint = f"Did you mean {matches[0]!r}? " + hint
    elif matches:
        hint = f"Closest matches: {matches}."
    else:
        hint = f"{len(choices)} values are valid; none is close to {value!r}."
    return ValueError(f"Unknown {argument} {value!r}. {hint}")


def check_choice(argument: str, value: object, choices: Iterable[object]) -> None:
    """Raise naming `argument` unless `value` is one of `choices`: a `TypeError` when `value`
    has none of the choices' types (`1` for a name), else a `ValueError`."""
    choices = list(choices)
    if value in choices:
        return
    expected = f"Expected `{argument}` to be one of {choices}, but got"
    if not any(type(value) is type(choice) for choice in choices):
        raise TypeError(f"{expected} {_got(value)}.")
    raise ValueError(f"{expected} {value!r}.")


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
        >>> check_keys("logging_config", {"log_lr": True}, ["log_learning_rate", "log_gradient_norm"])
        Traceback (most recent call last):
        ...
        ValueError: Unknown `logging_config` key 'log_lr'. Valid values: ['log_gradient_norm', 'log_learning_rate'].
    """
    allowed = list(allowed)
    for key in value:
        if key not in allowed:
            raise unknown_choice(f"`{argument}` key", key, allowed)
