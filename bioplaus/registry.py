"""A small name → factory registry, shared by rules, models and tasks.

Each registry validates keyword arguments against the factory's signature, so an unknown
option is reported with the list of allowed ones instead of a ``TypeError`` deep inside a
constructor. A name is registered once: a second factory under a taken name is an error, unless
it is the same factory defined again (same module and qualified name: a notebook cell run
twice) or the registration asks for ``replace=True``.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bioplaus.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered factory: its name, the callable and a one-line description."""

    name: str
    factory: Callable[..., T]
    description: str

    @property
    def target(self) -> Callable[..., Any]:
        """The callable whose signature holds the options: a class's ``__init__``, else the factory."""
        return self.factory.__init__ if inspect.isclass(self.factory) else self.factory

    def options(self) -> dict[str, inspect.Parameter]:
        """Keyword options the factory accepts (everything but ``self``, ``spec`` and ``*args``)."""
        params = inspect.signature(self.target).parameters
        skip = {"self", "spec"}
        return {
            name: p
            for name, p in params.items()
            if name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }


def did_you_mean(word: str, choices: list[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _origin(factory: Callable[..., Any]) -> str:
    """``module.qualname`` of a factory (of its class, for a callable object), as error messages name it."""
    named = factory if hasattr(factory, "__qualname__") else type(factory)
    return f"{named.__module__}.{named.__qualname__}"


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class Registry(Generic[T]):
    """Maps names to factories of one kind (``"rule"``, ``"model"``, ``"task"``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self,
        name: str,
        factory: Callable[..., T] | None = None,
        *,
        description: str | None = None,
        replace: bool = False,
    ) -> Callable[..., T] | Callable[[Callable[..., T]], Callable[..., T]]:
        """Register ``factory`` under ``name``; usable as a decorator.

        A name holds one factory. Registering a factory with the same ``__module__`` and
        ``__qualname__`` as the registered one replaces it, so a notebook cell that defines and
        registers a rule can be run again; any other factory under a taken name is refused
        unless ``replace=True``.

        Args:
            name: the name users type in configs, the CLI and ``get``.
            factory: a class or function; omitted when used as ``@register("name")``.
            description: one line for ``bioplaus rules``/``models``; defaults to the docstring's first line.
            replace: replace whatever is registered under ``name`` (a deliberate override of a built-in).

        Returns:
            The factory itself (decorator form: a decorator returning it).

        Raises:
            ConfigError: for an empty name, or a name already registered to another factory.
        """

        def add(fn: Callable[..., T]) -> Callable[..., T]:
            if not name or not isinstance(name, str):
                raise ConfigError(f"a {self.kind} name must be a non-empty string, got {name!r}")
            old = self._entries.get(name)
            if old is not None and not replace and _origin(old.factory) != _origin(fn):
                raise ConfigError(
                    f"{self.kind} '{name}' is already registered to {_origin(old.factory)}; cannot register "
                    f"{_origin(fn)} under the same name: choose another name, or pass replace=True to override it"
                )
            self._entries[name] = Entry(name, fn, description or _first_line(fn))
            if inspect.isclass(fn) and hasattr(fn, "name"):
                fn.name = name
            return fn

        return add if factory is None else add(factory)

    def entry(self, name: str) -> Entry[T]:
        """The entry called ``name``; an unknown name raises ``ConfigError`` listing the known ones."""
        if name not in self._entries:
            known = ", ".join(self.available())
            raise ConfigError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self.available())}; known {self.kind}s: {known}"
            )
        return self._entries[name]

    def check_options(self, name: str, options: dict[str, Any]) -> None:
        """Raise ``ConfigError`` if ``options`` holds a key the factory does not take."""
        allowed = self.entry(name).options()
        for key in options:
            if key not in allowed:
                listing = ", ".join(allowed) or "none"
                raise ConfigError(
                    f"{self.kind} '{name}' has no option '{key}'{did_you_mean(key, list(allowed))}; "
                    f"its options: {listing}"
                )

    def build(self, name: str, *args: Any, **options: Any) -> T:
        """Build the named object after checking ``options`` against the factory's signature."""
        self.check_options(name, options)
        return self.entry(name).factory(*args, **options)

    def available(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Name → one-line description, sorted by name."""
        return {name: self._entries[name].description for name in self.available()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.available())
