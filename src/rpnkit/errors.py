"""Exception types raised by rpnkit.

Every error that stems from a bad argument or configuration derives from
:class:`ConfigurationError`, itself a :class:`ValueError`, so callers can
catch one type. Unknown registry names raise :class:`UnknownNameError`,
which is both a ``ValueError`` and a ``KeyError``. A component without a closed-form
(sympy) expression raises :class:`NoClosedFormError` during symbolic export.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ConfigurationError", "UnknownNameError", "NoClosedFormError", "closest", "did_you_mean"]


class ConfigurationError(ValueError):
    """A value given to rpnkit is invalid; the message says which and why."""


class UnknownNameError(ConfigurationError, KeyError):
    """A name that is not in a registry (component, optimizer, dataset ...)."""

    def __str__(self) -> str:  # KeyError would otherwise wrap the text in quotes
        return str(self.args[0]) if self.args else ""


class NoClosedFormError(ConfigurationError):
    """A component of the model has no closed-form symbolic (sympy) expression."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """Return the closest valid spelling of ``name`` among ``choices`` (or None)."""
    matches = difflib.get_close_matches(str(name), list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Text fragment ``" (did you mean 'x'?)"`` or an empty string."""
    best = closest(name, choices)
    return f" (did you mean {best!r}?)" if best else ""
