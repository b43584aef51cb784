"""One small generic name registry, used by everything a user may choose by name."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from cleanai.errors import UnknownNameError

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
                raise ValueError(f"{self.kind} {key!r} is already registered; pass override=True to replace it")
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

    def create(self, name: str, **kwargs: Any) -> Any:
        """Look up `name` and call it with `kwargs`."""
        return self.get(name)(**kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
