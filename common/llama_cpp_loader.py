"""The one place that opens llama.cpp models (llama-cpp-python) for the whole project.

llama.cpp's CPU backend can put weights in "extra buffer types": repacked layouts that speed up some
quant types (interleaved Q4_0/IQ4_NL rows for AVX2/AVX-512/NEON, AMX tiles on Intel Xeons of the
Sapphire Rapids class and later). On CPUs with AMX_INT8, llama.cpp as shipped in llama-cpp-python
0.3.36 segfaults in `ggml_backend_amx_mul_mat` for the types the AMX path repacks (Q4_0, Q4_1,
Q8_0, the K-quants; F16 is not repacked and runs): upstream llama.cpp issue #20824. So extra buffer
types are turned off where llama.cpp reports AMX and kept on everywhere else.

Who decides, first match wins:
  1. the caller's setting "on" / "off" (a config field or flag: `--student.extra_bufts`,
     `arte bench --extra_bufts`, `arte export ... --extra_bufts`; the `extra_bufts=` argument here);
  2. the environment variable ARTE_LLAMA_EXTRA_BUFTS = on | off (1/0, true/false) for every load in
     the process and its children;
  3. "auto": off exactly when `llama_print_system_info()` reports AMX (AMX_INT8 = 1 or any AMX_*).

`llama-cpp-python`'s `Llama(...)` has no keyword for `llama_model_params.use_extra_bufts`, but it
builds its model params from `llama_cpp.llama_model_default_params()`. `open_llama` wraps that one
function while it constructs the model (`default_params_override`) and then checks on the loaded
object (`llm.model_params.use_extra_bufts`) that the setting took. The server launcher
(`common.llama_cpp_server`) holds the same override for the whole server process.

Deployment outside this toolkit: `llama-server --no-repack` (llama.cpp's flag for the same field),
or `Llama(...)` inside `with default_params_override(False):`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

ENV_VAR = "ARTE_LLAMA_EXTRA_BUFTS"
ExtraBufts = Literal["auto", "on", "off"]
SETTINGS: tuple[str, ...] = ("auto", "on", "off")
UPSTREAM_BUG = "llama.cpp issue #20824: segfault in ggml_backend_amx_mul_mat"

_ON = {"on", "1", "true", "yes"}
_OFF = {"off", "0", "false", "no"}
_override_lock = threading.RLock()


class LlamaCppSettingError(ValueError):
    """An extra-buffer-type setting that is none of auto/on/off (names where it came from)."""


def parse_system_info(text: str) -> dict[str, str]:
    """{feature: value} from `llama_print_system_info()`, e.g.
    "CPU : SSE3 = 1 | AVX2 = 1 | AMX_INT8 = 1 | REPACK = 1 |" -> {"SSE3": "1", ..., "REPACK": "1"}.
    A backend prefix ("CPU : ") is dropped; pieces without " = " are ignored."""
    out: dict[str, str] = {}
    for piece in text.split("|"):
        name, sep, value = piece.rpartition("=")
        if not sep:
            continue
        name = name.rsplit(":", 1)[-1].strip()
        if name:
            out[name] = value.strip()
    return out


def amx_features(features: Mapping[str, str]) -> list[str]:
    """The AMX features llama.cpp reports as present (AMX_INT8, AMX_BF16, AMX_TILE, ...)."""
    return sorted(k for k, v in features.items() if k.upper().startswith("AMX") and v not in ("0", ""))


def normalize_setting(value: Any, where: str) -> ExtraBufts:
    """ "auto", "on" or "off" from a string or bool (YAML reads a bare on/off as a bool)."""
    if value is None:
        return "auto"
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).strip().lower()
    if text in ("", "auto"):
        return "auto"
    if text in _ON:
        return "on"
    if text in _OFF:
        return "off"
    raise LlamaCppSettingError(f"{where}: expected auto, on or off, got {value!r}")


@dataclass(frozen=True)
class ExtraBuftsDecision:
    """Whether llama.cpp may use extra buffer types, who decided, and why. `as_record()` is what
    reports and manifests store beside figures measured with it."""

    use_extra_bufts: bool
    source: str  # "setting", "env ARTE_LLAMA_EXTRA_BUFTS" or "auto"
    reason: str
    amx: tuple[str, ...] = ()

    def as_record(self) -> dict:
        record = asdict(self)
        record["amx"] = list(self.amx)
        return record


def llama_system_info() -> str:
    """llama.cpp's own report of the CPU features it was built for and found (imports llama_cpp)."""
    import llama_cpp

    return llama_cpp.llama_print_system_info().decode(errors="replace").strip()


def decide_extra_bufts(
    setting: Any = "auto",
    *,
    env: Mapping[str, str] | None = None,
    system_info: str | None = None,
) -> ExtraBuftsDecision:
    """Apply the precedence in the module docstring. `env` defaults to os.environ, `system_info` to
    llama.cpp's report (read only when "auto" has to look at the CPU)."""
    chosen = normalize_setting(setting, "extra_bufts")
    if chosen != "auto":
        return ExtraBuftsDecision(chosen == "on", "setting", f"extra_bufts = {chosen}")
    env = os.environ if env is None else env
    from_env = normalize_setting(env.get(ENV_VAR), f"environment variable {ENV_VAR}")
    if from_env != "auto":
        return ExtraBuftsDecision(from_env == "on", f"env {ENV_VAR}", f"{ENV_VAR}={env[ENV_VAR]}")
    info = llama_system_info() if system_info is None else system_info
    amx = tuple(amx_features(parse_system_info(info)))
    if amx:
        reason = (
            f"llama.cpp reports {', '.join(f'{a} = 1' for a in amx)}; its AMX path crashes ({UPSTREAM_BUG})"
        )
        return ExtraBuftsDecision(False, "auto", reason, amx)
    return ExtraBuftsDecision(True, "auto", "llama.cpp reports no AMX: repacked weight layouts kept on")


@contextlib.contextmanager
def default_params_override(use_extra_bufts: bool) -> Iterator[None]:
    """While active, `llama_cpp.llama_model_default_params()` (the params `Llama(...)` starts from)
    returns params with `use_extra_bufts` set. Re-entrant; other threads wait for it to end."""
    import llama_cpp.llama_cpp as low

    with _override_lock:
        original = low.llama_model_default_params

        def with_setting():
            params = original()
            params.use_extra_bufts = use_extra_bufts
            return params

        low.llama_model_default_params = with_setting
        try:
            yield
        finally:
            low.llama_model_default_params = original


def open_llama(path: str | Path, *, extra_bufts: Any = "auto", **llama_kwargs: Any):
    """`llama_cpp.Llama(model_path=path, **llama_kwargs)` with the extra-buffer-type decision
    applied. The decision is attached to the object as `llm.extra_bufts_decision`. A truncated GGUF
    is a UserError naming the file (`common.gguf_header`); other exceptions from llama.cpp (a bad
    file) pass through for the caller to word."""
    import llama_cpp

    from common.gguf_header import read_gguf_header

    if Path(path).is_file():
        read_gguf_header(Path(path), metadata=False)
    decision = decide_extra_bufts(extra_bufts)
    with default_params_override(decision.use_extra_bufts):
        llm = llama_cpp.Llama(model_path=str(path), **llama_kwargs)
    got = bool(llm.model_params.use_extra_bufts)
    if got != decision.use_extra_bufts:
        llm.close()
        raise RuntimeError(
            f"llama-cpp-python ignored use_extra_bufts={decision.use_extra_bufts} when loading {path}; "
            "this version builds its model params differently: update common/llama_cpp_loader.py"
        )
    llm.extra_bufts_decision = decision
    log.debug("llama.cpp opened %s with use_extra_bufts=%s (%s)", path, got, decision.reason)
    return llm
