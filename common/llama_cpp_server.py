"""llama-cpp-python's OpenAI-compatible server, started with the project's extra-buffer-type decision
(`common.llama_cpp_loader`), so that it does not crash on Intel CPUs with AMX:

    python -m common.llama_cpp_server [--extra_bufts auto|on|off] --model M.gguf --host 127.0.0.1 ...

Every other argument is `python -m llama_cpp.server`'s own. The decision is printed to stderr
before the server starts. Needs `pip install 'llama-cpp-python[server]'` (the `server` extra).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from common.llama_cpp_loader import decide_extra_bufts, default_params_override


def split_extra_bufts(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(our --extra_bufts value or "auto", the remaining arguments for llama_cpp.server)."""
    setting, rest, args = "auto", [], list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--extra_bufts":
            if not args:
                raise SystemExit("llama_cpp_server: --extra_bufts needs a value: auto, on or off")
            setting = args.pop(0)
        elif arg.startswith("--extra_bufts="):
            setting = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return setting, rest


def main(argv: Sequence[str] | None = None) -> None:
    setting, rest = split_extra_bufts(sys.argv[1:] if argv is None else argv)
    try:
        decision = decide_extra_bufts(setting)
    except ValueError as e:
        raise SystemExit(f"llama_cpp_server: {e}") from None
    try:
        from llama_cpp.server.__main__ import main as server_main
    except ImportError:
        raise SystemExit(
            "llama_cpp_server needs the server extra: pip install 'llama-cpp-python[server]==0.3.36'"
        ) from None
    print(
        f"llama_cpp_server: use_extra_bufts={decision.use_extra_bufts} "
        f"({decision.source}: {decision.reason})",
        file=sys.stderr,
        flush=True,
    )
    sys.argv = [sys.argv[0], *rest]
    with default_params_override(decision.use_extra_bufts):
        server_main()


if __name__ == "__main__":
    main()
