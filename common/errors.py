"""User-facing errors: raised for bad input, printed by the CLI as one clear message, no traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Something the user can fix: bad data, a missing model, an unknown name or option."""


def unknown_name(kind: str, name: str, valid: Iterable[str], where: str = "") -> UserError:
    """A `UserError` for an unknown task/backend/option name that lists the valid names."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    prefix = f"{where}: " if where else ""
    return UserError(f"{prefix}unknown {kind} {name!r}.{hint} Valid: {', '.join(valid)}")


def missing_dependency(module: str, pip_spec: str, purpose: str) -> UserError:
    """A `UserError` naming the exact `pip install` that fixes a missing optional dependency."""
    return UserError(f"{purpose} needs the Python package {module!r}. Install it: pip install '{pip_spec}'")
