"""Typed JSON records: dataclasses read from a JSON object with every key checked against the type
hints (a missing or ill-typed key is named by its path, "variants[2].best.p50_ms: expected a number,
got str"; every problem at once) and written back with their keys in field order. The report's
schema (`edge_bench.schema`) is made of them. Supported hints: int, float (an int is accepted), str,
bool, Any, X | None, list[X], dict[str, X], dict, and other records.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any

OMIT_NONE = {"omit_none": True}
"""Field metadata: the key is left out of the JSON when the value is None (as the bench writes it)."""


class ReportError(ValueError):
    """A report that does not follow the schema; the message names the file and every key path."""


def field_default(default: Any = None, **kw) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), **kw)
    return field(default=default, **kw)


# ---- the check and conversion, driven by the type hints ----------------------------------------------

_EXPECTED = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """`value` checked against the type hint `tp` (dataclasses built from their dicts); a problem
    naming `path` is recorded (and the value kept) where it does not fit."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (tp,) = [a for a in args if a is not type(None)]
        return _convert(value, tp, path, problems)
    if dataclasses.is_dataclass(tp):
        return (
            tp._from_dict(value, path, problems)
            if isinstance(value, dict)
            else _bad(value, tp, path, problems)
        )
    if origin is list or tp is list:
        if not isinstance(value, list):
            return _bad(value, list, path, problems)
        item = args[0] if args else Any
        return [_convert(x, item, f"{path}[{i}]", problems) for i, x in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return _bad(value, dict, path, problems)
        item = args[1] if args else Any
        return {k: _convert(x, item, f"{path}.{k}", problems) for k, x in value.items()}
    ok = isinstance(value, (int, float) if tp is float else tp) and (
        tp is bool or not isinstance(value, bool)
    )
    return value if ok else _bad(value, tp, path, problems)


def _bad(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    expected = _EXPECTED.get(tp) or {list: "a list", dict: "an object"}.get(tp) or "an object"
    got = "null" if value is None else type(value).__name__
    problems.append(f"{path or '(top level)'}: expected {expected}, got {got}")
    return value


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return value.to_dict()
    if isinstance(value, list):
        return [_encode(x) for x in value]
    if isinstance(value, dict):
        return {k: _encode(x) for k, x in value.items()}
    return value


class JsonRecord:
    """from_dict / to_dict for a schema dataclass."""

    @classmethod
    def _from_dict(cls, d: dict, path: str, problems: list[str]):
        hints = typing.get_type_hints(cls)
        kwargs, missing = {}, False
        for f in dataclasses.fields(cls):
            where = f"{path}.{f.name}" if path else f.name
            if f.name in d:
                kwargs[f.name] = _convert(d[f.name], hints[f.name], where, problems)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{where}: missing")
                missing = True
        return None if missing else cls(**kwargs)

    @classmethod
    def from_dict(cls, d: Any, source: str = "report"):
        """The object of JSON `d`, or a ReportError naming `source` and every bad key path."""
        problems: list[str] = []
        out = _convert(d, cls, "", problems)
        if problems:
            raise ReportError("\n".join(f"{source}: {p}" for p in problems))
        return out

    def to_dict(self) -> dict:
        """The JSON object, keys in the schema's order."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (value is None and f.metadata.get("omit_none")):
                out[f.name] = _encode(value)
        return out


record = dataclass(kw_only=True)
"""Schema classes: keyword-only, so that optional fields can sit where their key is written."""
