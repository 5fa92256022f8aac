"""Old names kept for a while: each use warns with a `FutureWarning` that names the new one."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["deprecated_alias", "renamed_argument"]

_F = TypeVar("_F", bound=Callable[..., Any])


def renamed_argument(old: str, old_value: Any, new: str, new_value: Any, default: Any, *, owner: str) -> Any:
    """Return the value to use for argument `new`, given a deprecated argument `old` that was renamed.

    `old_value is None` means the old name was not used: `new_value` is returned. Otherwise
    a `FutureWarning` names the new argument, and `old_value` is returned, unless `new` was
    given too (not left at `default`), which is an error.

    Raises:
        TypeError: If both names were given.

    Examples:
        >>> renamed_argument("augmentation", None, "augmentation_preset", "light", "default", owner="ImageDataModule")
        'light'
    """
    if old_value is None:
        return new_value
    if new_value != default:
        raise TypeError(f"{owner} got both `{new}` and its deprecated name `{old}`; pass `{new}={new_value!r}` only.")
    warnings.warn(
        f"`{owner}({old}=...)` is deprecated and will be removed; use `{new}={old_value!r}` instead.",
        FutureWarning,
        stacklevel=3,
    )
    return old_value


def deprecated_alias(function: _F, old: str) -> _F:
    """Return `function` under its former public name `old`; each call warns with a `FutureWarning`.

    Examples:
        >>> def create_thing() -> int:
        ...     return 1
        >>> make_thing = deprecated_alias(create_thing, "make_thing")
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     make_thing()
        1
        >>> str(caught[0].message)
        '`make_thing` is deprecated and will be removed; use `create_thing` instead.'
    """

    @functools.wraps(function)
    def alias(*args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"`{old}` is deprecated and will be removed; use `{function.__name__}` instead.",
            FutureWarning,
            stacklevel=2,
        )
        return function(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = old
    alias.__doc__ = f"Deprecated alias of `{function.__name__}`."
    return alias  # type: ignore[return-value]
