"""Option values checked against the type hints of the factory that takes them.

A factory's options (``model_options``, ``task_options``, ``rule_options.NAME``) are read from
its signature with `typing.get_type_hints`, so ``Sequence[int]``, ``tuple[int, ...]``,
``dict[str, Any] | None``, ``Literal["relu", "tanh"]``, ``float | None`` and dataclasses are
understood as written; an option without an annotation takes its default value's type.
[`check_value`][bioplaus.runner.option_types.check_value] validates one value (parsed TOML, ``--set``, a Python call)
against a hint and returns it converted; a mismatch raises `ConfigError` naming the
key, the expected type in words and the value.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Literal, Union

from bioplaus.errors import ConfigError
from bioplaus.registry import Entry, did_you_mean

_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.MutableSequence)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_SCALARS = {
    bool: ("a boolean (true/false)", "booleans (true/false)"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
    type(None): ("None", "None"),
}


def option_hints(entry: Entry[Any]) -> dict[str, Any]:
    """Option name → type hint of a registered factory (``Any`` where neither annotation nor default says).

    Hints come from `typing.get_type_hints` on the factory (a class's ``__init__``); where
    that fails (an annotation naming something the factory's module does not define, a callable
    object), each annotation is resolved on its own. An option without a usable annotation
    takes its default value's type (a list or tuple default: any list; a dict: any table).
    """
    params = entry.options()
    annotations = {name: p.annotation for name, p in params.items() if p.annotation is not inspect.Parameter.empty}
    globalns = getattr(inspect.unwrap(entry.target), "__globals__", {})
    hints = _type_hints(entry.target, annotations, globalns)
    return {name: hints[name] if name in hints else _default_hint(p.default) for name, p in params.items()}


def describe(hint: Any, plural: bool = False) -> str:
    """``hint`` in words: ``a list of integers``, ``a number or None``, ``one of 'relu', 'tanh'``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "values" if plural else "anything"
    if hint in _SCALARS:
        return _SCALARS[hint][plural]
    if origin in (Union, types.UnionType):
        return " or ".join(describe(arg, plural) for arg in args)
    if origin is Literal:
        return f"{'values among' if plural else 'one of'} {', '.join(map(repr, args))}"
    if _is_dataclass(hint):
        names = ", ".join(f.name for f in dataclasses.fields(hint))
        return f"{'tables' if plural else 'a table'} of {hint.__name__} fields ({names})"
    container = origin or hint
    if container in _SEQUENCES:
        words = "lists" if plural else "a list"
        if container is tuple and args and args[-1] is not Ellipsis:
            return f"{words} of {len(args)} items ({', '.join(describe(arg) for arg in args)})"
        return f"{words} of {describe(args[0], plural=True)}" if args and args[0] is not Any else words
    if container in _MAPPINGS:
        words = "tables" if plural else "a table"
        key, value = args or (Any, Any)
        if value is not Any:
            words += f" of {describe(value, plural=True)}"
        return words if key in (Any, str) else f"{words} with {describe(key, plural=True)} as keys"
    name = getattr(hint, "__name__", str(hint))
    return f"{name} objects" if plural else f"a {name}"


def check_value(value: Any, hint: Any, where: str) -> Any:
    """Validate ``value`` against the type hint ``hint``; return it converted.

    An integer for a ``float`` becomes a float (also inside lists and tables); a list for a
    ``tuple`` becomes a tuple; a table for a dataclass becomes that dataclass. ``Any``, type
    variables and classes other than the ones above accept every value.

    Args:
        value: the option's value.
        hint: a type hint, as [`option_hints`][bioplaus.runner.option_types.option_hints] gives it.
        where: the key the value sits at (``model_options.hidden``), for messages.

    Raises:
        ConfigError: naming ``where``, the expected type in words and the value.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return _union(value, args, where)
    if origin is Literal:
        if not any(type(value) is type(choice) and value == choice for choice in args):
            close = did_you_mean(str(value), [str(c) for c in args]) if isinstance(value, str) else ""
            raise ConfigError(f"{where} expects {describe(hint)}, got {value!r}{close}")
        return value
    if hint in _SCALARS:
        return _scalar(value, hint, where)
    if _is_dataclass(hint):
        return _dataclass(value, hint, where)
    container = origin or hint
    if container in _SEQUENCES:
        return _sequence(value, container, args, where)
    if container in _MAPPINGS:
        return _mapping(value, args or (Any, Any), where)
    return value


def _scalar(value: Any, hint: type, where: str) -> Any:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {
        bool: isinstance(value, bool),
        int: number and isinstance(value, int),
        float: number,
        str: isinstance(value, str),
        type(None): value is None,
    }[hint]
    if not ok:
        raise ConfigError(f"{where} expects {describe(hint)}, got {value!r}")
    return float(value) if hint is float else value


def _union(value: Any, args: tuple[Any, ...], where: str) -> Any:
    """The first member of the union that accepts ``value`` converts it; ``X | None`` reports X's error."""
    members = [arg for arg in args if arg is not type(None)]
    if value is None and len(members) < len(args):
        return None
    if len(members) == 1:
        return check_value(value, members[0], where)
    for member in members:
        try:
            return check_value(value, member, where)
        except ConfigError:
            continue
    raise ConfigError(f"{where} expects {' or '.join(map(describe, members))}, got {value!r}")


def _sequence(value: Any, container: Any, args: tuple[Any, ...], where: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where} expects a list, got {value!r}")
    if container is tuple and args and args[-1] is not Ellipsis:
        if len(value) != len(args):
            count = f"{len(value)} item{'s' * (len(value) != 1)}"
            raise ConfigError(f"{where} expects {describe(tuple[args])}, got {value!r} ({count})")
        items = [check_value(v, arg, f"{where}[{i}]") for i, (v, arg) in enumerate(zip(value, args, strict=True))]
    else:
        item = args[0] if args else Any
        items = [check_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    kind = container if container in (list, tuple) else type(value)
    return kind(items)


def _mapping(value: Any, args: tuple[Any, Any], where: str) -> dict[Any, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} expects a table, got {value!r}")
    key_hint, value_hint = args
    return {
        check_value(k, key_hint, f"{where} key {k!r}"): check_value(v, value_hint, f"{where}.{k}")
        for k, v in value.items()
    }


def _dataclass(value: Any, cls: type, where: str) -> Any:
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} expects {describe(cls)}, got {value!r}")
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in value:
        if key not in known:
            raise ConfigError(
                f"{where} has no field '{key}'{did_you_mean(str(key), list(known))}; "
                f"{cls.__name__}'s fields: {', '.join(known)}"
            )
    missing = [
        name
        for name, f in known.items()
        if name not in value and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where} ({cls.__name__}) needs the field(s) {', '.join(missing)}")
    globalns = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
    hints = _type_hints(cls, {name: f.type for name, f in known.items()}, globalns)
    fields = {k: check_value(v, hints.get(k, Any), f"{where}.{k}") for k, v in value.items()}
    try:
        return cls(**fields)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where} is not a valid {cls.__name__}: {err}") from err


def _is_dataclass(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _type_hints(
    owner: Callable[..., Any] | type, annotations: Mapping[str, Any], globalns: dict[str, Any]
) -> dict[str, Any]:
    """``typing.get_type_hints(owner)``, or where that fails each annotation alone (unresolvable ones left out)."""
    try:
        return typing.get_type_hints(owner)
    except Exception:  # an annotation that does not resolve, or a callable object: one by one below
        hints = {}
    for name, annotation in annotations.items():
        holder = types.SimpleNamespace(__annotations__={name: annotation})
        try:
            hints[name] = typing.get_type_hints(holder, globalns=globalns)[name]
        except Exception:  # e.g. a name imported only for type checkers
            continue
    return hints


def _default_hint(default: Any) -> Any:
    if default is inspect.Parameter.empty or default is None:
        return Any
    if isinstance(default, (list, tuple)):
        return collections.abc.Sequence
    if isinstance(default, Mapping):
        return collections.abc.Mapping
    return type(default)
