"""One small generic name registry, used by everything a user may choose by name."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar, overload

from cleanai.errors import ConfigError, UnknownArgumentError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions); `create(name, **kw)` calls them.

    Names are case-insensitive and `-`/`_` are interchangeable, so `"StepLR"`-style spellings
    from configs still resolve.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    @staticmethod
    def _key(name: str) -> str:
        return name.strip().lower().replace("-", "_")

    @overload
    def register(self, name: str, obj: T, *, override: bool = False) -> T: ...
    @overload
    def register(self, name: str | None = None, *, override: bool = False) -> Callable[[T], T]: ...

    def register(self, name: str | None = None, obj: T | None = None, *, override: bool = False) -> Any:
        """Register `obj` under `name`; without `obj`, return a decorator (name defaults to `__name__`)."""

        def add(item: T) -> T:
            key = self._key(name or getattr(item, "__name__"))
            if key in self._items and not override:
                raise ConfigError(f"{self.kind} {key!r} is already registered; pass override=True to replace it")
            self._items[key] = item
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Return the registered object, or raise an error that lists the valid names."""
        try:
            return self._items[self._key(name)]
        except (KeyError, AttributeError):
            close = difflib.get_close_matches(self._key(str(name)), self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Valid {self.kind} names: {', '.join(self.names())}"
            ) from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Look up `name` and call it; a keyword it does not take is named with the accepted ones."""
        factory = self.get(name)
        check_kwargs(self.kind, name, factory, kwargs, positional=args)
        return factory(*args, **kwargs)  # type: ignore[operator]

    def known(self, name: str) -> str:
        """`name` unchanged if registered, else the error `get` raises (a config's field validator:
        `Annotated[str, AfterValidator(REGISTRY.known)]`)."""
        self.get(name)
        return name

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def accepted_kwargs(factory: Callable[..., Any], skip: int = 0) -> list[str] | None:
    """Names `factory` accepts by keyword after its first `skip` parameters; None if it takes `**kwargs`."""
    params = list(inspect.signature(factory).parameters.values())[skip:]
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def check_kwargs(kind: str, name: str, factory: Callable[..., Any], kwargs: Mapping[str, Any],
                 positional: Sequence[Any] = (), *, complete: bool = True) -> None:
    """Raise `UnknownArgumentError` naming the bad or missing argument and the accepted ones.

    `complete=False` checks only that every given name is accepted (a config may leave out
    arguments filled in later, such as a scheduler's horizon).
    """
    accepted = accepted_kwargs(factory, skip=len(positional))
    if accepted is not None:
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise UnknownArgumentError(f"{kind} {name!r} does not accept {', '.join(map(repr, unknown))}; "
                                       f"it accepts: {', '.join(accepted) or '(no keyword arguments)'}")
    if complete:
        try:
            inspect.signature(factory).bind(*positional, **kwargs)
        except TypeError as exc:
            raise UnknownArgumentError(f"{kind} {name!r}: {exc}; it accepts: {', '.join(accepted or ['**kwargs'])}") from None
