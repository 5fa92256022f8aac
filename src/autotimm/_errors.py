"""Helpers that give every error in the library the same shape.

One wording everywhere: the argument, what was given, and the valid values or the
closest matches.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["closest", "unknown_choice", "check_choice"]


def closest(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to `n` entries of `choices` that look most like `value`.

    Example:
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
    """Raise a `ValueError` naming `argument` unless `value` is one of `choices`."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"Expected `{argument}` to be one of {choices}, but got {value!r}.")
