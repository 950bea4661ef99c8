"""Typed configs: dataclasses whose field `help` becomes `--help` text, loaded from YAML and
overridden from the command line (defaults < YAML < flags). A typo names the bad key and the valid
ones; a wrong type names the key, the value and the expected type.

Declare fields with `opt(default, "help text")`; nest dataclasses for sections (`--train.lr`). A
field may also hold a list of sections (`list[BackendConfig]`): YAML mappings, each checked like a
section, or on the command line one YAML flow list (`--x '[{name: hf, model: gpt2}]'`).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from common.errors import UserError, unknown_name

C = TypeVar("C")


def opt(
    default: Any, help: str, *, positional: bool = False, engines: tuple[str, ...] = (), **kw: Any
) -> Any:
    """A config field with a default and the help text shown by `--help`; `positional=True` makes it
    a positional command-line argument (a list field takes one or more values); `engines` names the
    engines an engine section's field applies to (empty: all of them)."""
    meta = {"help": help, "positional": positional, "engines": engines}
    if isinstance(default, (list, dict, set)):
        factory = type(default)(default)
        return dataclasses.field(default_factory=lambda: type(factory)(factory), metadata=meta, **kw)
    if dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: dataclasses.replace(default), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of each field of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def describe_type(tp: Any) -> str:
    """A short human name for a field type, e.g. 'int', 'one of hf, llama_cpp', 'list of str'."""
    tp, optional = _strip_optional(tp)
    if get_origin(tp) is Literal:
        text = "one of " + ", ".join(str(a) for a in get_args(tp))
    elif get_origin(tp) in (list, tuple):
        text = "list of " + describe_type(get_args(tp)[0])
    else:
        text = getattr(tp, "__name__", str(tp))
    return text + (" or null" if optional else "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML or command-line value to the field type, or raise a UserError naming `key`."""
    tp, optional = _strip_optional(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise UserError(f"config key {key!r} cannot be null; expected {describe_type(tp)}")
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and {"on", "off"} <= set(choices):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a bool
        for c in choices:
            if value == c or str(value) == str(c):
                return c
        raise unknown_name("value", str(value), [str(c) for c in choices], where=f"config key {key!r}")
    if origin in (list, tuple) and dataclasses.is_dataclass(get_args(tp)[0]):
        return _coerce_sections(value, get_args(tp)[0], key)
    if origin in (list, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise UserError(f"config key {key!r}: expected a list, got {value!r}")
        inner = get_args(tp)[0]
        out = [coerce(v.strip() if isinstance(v, str) else v, inner, key) for v in items if v != ""]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise UserError(f"config key {key!r}: expected true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool) or (isinstance(value, str) and value.lower() in ("true", "false")):
            raise UserError(f"config key {key!r}: expected {tp.__name__}, got {value!r}")  # not 1 / 0
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(value)
        except (TypeError, ValueError):
            raise UserError(f"config key {key!r}: expected {tp.__name__}, got {value!r}") from None
    if tp in (str, Path):
        if isinstance(value, (dict, list)):
            raise UserError(f"config key {key!r}: expected {tp.__name__}, got {value!r}")
        return tp(value)
    if tp is dict or get_origin(tp) is dict:
        if not isinstance(value, dict):
            raise UserError(f"config key {key!r}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def _coerce_sections(value: Any, cls: type, key: str) -> list:
    """A list of config sections (`list[BackendConfig]`): YAML mappings, or on the command line one
    YAML flow list ("[{name: hf, model: gpt2}, {name: fake, model: x}]"). Each item is built from
    the section's defaults and checked like a section; errors name `key[i]`."""
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value) if value.strip() else []
        except yaml.YAMLError as e:
            raise UserError(
                f"config key {key!r}: not a YAML list of mappings ({getattr(e, 'problem', e)}); "
                "write it like [{name: hf, model: gpt2}]"
            ) from None
    if value is None:
        value = []
    if not isinstance(value, (list, tuple)):
        raise UserError(f"config key {key!r}: expected a list of mappings, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, cls):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(from_dict(cls, item, where=f"{key}[{i}]"))
        else:
            raise UserError(f"config key {key}[{i}]: expected a mapping of {cls.__name__} keys, got {item!r}")
    return out


def from_dict(cls: type[C], data: Mapping[str, Any], *, base: C | None = None, where: str = "") -> C:
    """Build `cls` from a (nested) mapping on top of `base` (or the defaults); unknown keys raise."""
    if not isinstance(data, Mapping):
        raise UserError(
            f"{where or 'config'}: expected a mapping of keys to values, got {type(data).__name__}"
        )
    obj = base if base is not None else cls()
    types_ = field_types(cls)
    updates: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in types_:
            raise unknown_name("config key", full, [f"{where}.{k}" if where else k for k in types_])
        tp = types_[key]
        if dataclasses.is_dataclass(tp):
            updates[key] = from_dict(tp, value or {}, base=getattr(obj, key), where=full)
        else:
            updates[key] = coerce(value, tp, full)
    return _replace(obj, updates, where)


def _replace(obj: C, updates: dict[str, Any], where: str) -> C:
    try:
        return dataclasses.replace(obj, **updates)
    except (ValueError, TypeError) as e:  # __post_init__ validation
        raise UserError(name_flags(str(e), where, obj)) from None


def name_flags(message: str, where: str, obj: Any) -> str:
    """A section's validation message with its flags named in full: "--m must be >= 1" raised by the
    `elicit` section reads "--elicit.m must be >= 1"; other messages get "SECTION: " in front."""
    if not where:
        return message
    fields = {f.name for f in dataclasses.fields(obj)}
    named = re.sub(r"--(\w+)\b(?!\.)", lambda m: f"--{where}.{m[1]}" if m[1] in fields else m[0], message)
    return named if named != message else f"{where}: {message}"


def read_config_text(path: Path) -> str:
    """The text of a config file; one that is not UTF-8 or cannot be read names the file (line)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); "
            "save the config file as UTF-8"
        ) from None
    except OSError as e:
        raise UserError(f"{path}: cannot read the config file: {e.strerror or e}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file; a missing file or a syntax error names the file and line."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(read_config_text(path))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:  # nothing but blank lines and comments: not a silent run of every default
        raise UserError(f"{path}: the config file is empty; write its keys, or leave out --config")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of config keys at the top level")
    return data


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """data['a']['b'] = value for dotted 'a.b', creating sections as needed."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[leaf] = value


def load_config(cls: type[C], yaml_path: str | Path | None = None, overrides: Mapping[str, Any] = ()) -> C:
    """Defaults, then the YAML file, then dotted overrides ({'train.lr': '1e-4'})."""
    cfg = cls()
    if yaml_path:
        try:
            cfg = from_dict(cls, load_yaml(yaml_path), base=cfg)
        except UserError as e:  # the file named once
            raise UserError(str(e) if str(yaml_path) in str(e) else f"{yaml_path}: {e}") from None
    nested: dict[str, Any] = {}
    for key, value in dict(overrides).items():
        set_dotted(nested, key, value)
    return from_dict(cls, nested, base=cfg) if nested else cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML/JSON-serialisable dict of a config (paths as strings, tuples as lists)."""

    def plain(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}
