"""Name -> builder registries, so configs choose components by name (``encoder: resnet1d``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named set of builders.

    Example:
        >>> ENCODERS = Registry("encoder")
        >>> @ENCODERS.register("resnet1d")
        ... def build(**kw): ...
        >>> ENCODERS.get("resnet1d")
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = fn
            return fn
        return deco

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._items:
            choices = ", ".join(self.names())
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of: {choices}")
        return self._items[name]

    def build(self, name: str, **kwargs) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


ENCODERS: Registry = Registry("encoder")
PROJECTORS: Registry = Registry("projector")
META_ALGOS: Registry = Registry("meta-learning algorithm")
IMAGE_ENCODERS: Registry = Registry("image encoder")
