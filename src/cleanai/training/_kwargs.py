"""Check keyword arguments against a registered factory's signature, so a typo fails with the valid names."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def accepted_kwargs(factory: Callable[..., Any], skip: int = 0) -> list[str] | None:
    """Names `factory` accepts by keyword after its first `skip` parameters; None if it takes `**kwargs`."""
    params = list(inspect.signature(factory).parameters.values())[skip:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_kwargs(kind: str, name: str, factory: Callable[..., Any], kwargs: Mapping[str, Any],
                 positional: Sequence[Any] = (), *, complete: bool = True) -> None:
    """Raise TypeError naming the bad or missing argument and the accepted ones.

    `complete=False` checks only that every given name is accepted (a config may leave out
    arguments the Trainer fills in later, such as a scheduler's horizon).
    """
    accepted = accepted_kwargs(factory, skip=len(positional))
    if accepted is not None:
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise TypeError(f"{kind} {name!r} does not accept {', '.join(map(repr, unknown))}; "
                            f"it accepts: {', '.join(accepted) or '(no keyword arguments)'}")
    if complete:
        try:
            inspect.signature(factory).bind(*positional, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{kind} {name!r}: {exc}; it accepts: {', '.join(accepted or ['**kwargs'])}") from None
