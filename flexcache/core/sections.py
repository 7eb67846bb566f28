"""Plain nested dicts <-> frozen config dataclasses, with the field types checked on the way in.

A dataclass whose mapping needs a class picked from its content (a tier's
``kind``) defines a ``from_config_dict(data, where)`` staticmethod; the
builder calls it instead of its own constructor.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from flexcache.core.errors import ConfigError
from flexcache.core.units import parse_bytes


def require(condition: bool, message: str) -> None:
    """A config check: `ConfigError(message)` unless `condition` holds (every section validates with it)."""
    if not condition:
        raise ConfigError(message)


def to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def build_section(cls: type, data: Mapping[str, Any], prefix: str) -> Any:
    """`cls` from the mapping `data`; `prefix` names the section in messages (``"store."``)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping; got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"valid keys here: {', '.join(fields)}"
        )
    missing = [name for name, f in fields.items() if name not in data and f.init
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing config key(s) {', '.join(prefix + k for k in missing)}; they have no default")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(hints[name], value, prefix + name) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, name: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        chooser = getattr(hint, "from_config_dict", None)
        return chooser(value, name) if chooser is not None else build_section(hint, value, name + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # e.g. a table or the name of one
        options = typing.get_args(hint)
        if isinstance(value, str) and str in options:
            return value
        if value is None and type(None) in options:
            return None
        return _coerce(next(option for option in options if option is not str), value, name)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list; got {value!r}")
        args = typing.get_args(hint)
        item_hint = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item_hint is None:
            if len(value) != len(args):
                raise ConfigError(f"{name} must have {len(args)} items; got {list(value)}")
            return tuple(_coerce(h, v, name) for h, v in zip(args, value))
        return tuple(_coerce(item_hint, v, name) for v in value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number; got {value!r}")
        return float(value)
    if hint is int:
        if name.endswith("_bytes"):
            try:
                return parse_bytes(value)
            except ConfigError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer; got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string; got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false; got {value!r}")
        return value
    return value
