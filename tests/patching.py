"""Replace a function everywhere the project's modules hold it: the module that defines it and every
`arte`/`export`/`edge_bench`/`common` module that imported it by name (`from x import f` binds its
own reference, which patching `x.f` alone would miss)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

PACKAGES = ("arte", "export", "edge_bench", "common")


def patch_everywhere(monkeypatch, target: str, value: Any) -> None:
    """`target` is "package.module.name"; every loaded project module holding the same object gets
    `value` instead, for the test's duration."""
    module_name, name = target.rsplit(".", 1)
    original = getattr(importlib.import_module(module_name), name)
    for loaded in list(sys.modules.values()):
        if (
            getattr(loaded, "__name__", "").split(".")[0] in PACKAGES
            and getattr(loaded, name, None) is original
        ):
            monkeypatch.setattr(loaded, name, value)
