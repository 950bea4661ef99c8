"""The `arte` command. Every subcommand is generated from a typed config dataclass: each field is a
`--flag` (nested sections as `--section.field`), its `help` is the `--help` text, `--config FILE.yaml`
loads a file first, and flags override it. The work itself lives in plain functions, imported only
when their subcommand runs, so `arte --help` is instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from arte.stages import PIPELINE
from common.config import describe_type, field_types, load_config
from common.errors import UserError, unknown_name


@dataclass(frozen=True)
class Command:
    """One subcommand: its config class and the function that runs it ("module:function").

    `prepare` ("module:function", optional) is called with the config before `run`, only when the
    process was started as this command (`main()` without argv): it may set up the process itself,
    e.g. re-execute it with an environment that must be in place at start-up."""

    name: str
    config: str
    run: str
    help: str
    prepare: str | None = None
    args: tuple[str, ...] = ()
    """Passed to `run` after the config (a stage command passes its stage's name)."""


COMMANDS: tuple[Command, ...] = (
    Command(
        "run",
        "arte.commands.plan:RunCommandConfig",
        "arte.commands.plan:run_cli",
        "Run (or resume) every ARTE stage in order into one run directory (--dry_run: its plan only).",
    ),
    Command(
        "plan",
        "arte.commands.plan:PlanConfig",
        "arte.commands.plan:run_plan_cli",
        "What a run config will do, without loading a model: stages, generations, pairs, training "
        "tokens and steps, differences from the paper.",
    ),
    *(
        Command(
            stage.name,
            "arte.run_config:RunConfig",
            "arte.pipeline:run_stage_cli",
            stage.help,
            args=(stage.name,),
        )
        for stage in PIPELINE
    ),
    *(
        Command(
            f"export {fmt}",
            f"arte.commands.export:Export{cls}Config",
            f"arte.commands.export:run_export_{fmt}",
            h,
        )
        for fmt, cls, h in (
            ("gguf", "GGUF", "Export a model to GGUF (F16, Q8_0, Q4_K_M, ...), verified against PyTorch."),
            (
                "onnx",
                "Onnx",
                "Export a model to ONNX (fp32, int8, int4) with KV cache, verified against PyTorch.",
            ),
            (
                "all",
                "All",
                "Export every requested GGUF and ONNX variant (of a model or an ARTE run's student).",
            ),
        )
    ),
    Command(
        "bench",
        "arte.commands.bench:BenchConfig",
        "arte.commands.bench:run_bench_cli",
        "Benchmark exported variants on CPU (speed percentiles, memory, accuracy) and recommend one.",
        prepare="arte.commands.bench:prepare_process",
    ),
    Command(
        "models",
        "arte.commands.models:ModelsConfig",
        "arte.commands.models:run_models",
        "List the models available locally (embedded, cached) and where they are.",
    ),
    Command(
        "tasks",
        "arte.commands.tasks:TasksConfig",
        "arte.commands.tasks:run_tasks",
        "List built-in tasks, or load task files and show their splits.",
    ),
    Command(
        "compare-backends",
        "arte.commands.compare_backends:CompareBackendsConfig",
        "arte.commands.compare_backends:run_compare_backends",
        "Run the same few-shot prompts on two backends; report accuracy and answer agreement.",
    ),
)


def _import(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _flags(cls: type, prefix: str = "") -> list[tuple[str, Any, Any, str, bool]]:
    """(dotted key, type, default, help, positional) for every leaf field, depth first."""
    out = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp = field_types(cls)[f.name]
        key = prefix + f.name
        if dataclasses.is_dataclass(tp):
            out += _flags(tp, key + ".")
            continue
        meta = f.metadata
        out.append((key, tp, getattr(defaults, f.name), meta.get("help", ""), meta.get("positional", False)))
    return out


def _show_default(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "(empty)"
    return "(none)" if value is None else str(value)


def add_config_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add `--config` and one flag per config field to `parser`."""
    parser.add_argument("--config", metavar="FILE.yaml", help="Load options from this YAML file first.")
    for key, tp, default, text, positional in _flags(cls):
        kind = describe_type(tp)
        help_ = f"{text} [{kind}; default: {_show_default(default)}]"
        if positional:
            many = kind.startswith("list")
            parser.add_argument(key, nargs="+" if many else "?", default=argparse.SUPPRESS, help=help_)
            continue
        bool_flag = tp is bool
        parser.add_argument(
            f"--{key}",
            dest=key,
            default=argparse.SUPPRESS,
            nargs="?" if bool_flag else None,
            const="true" if bool_flag else None,
            metavar="true|false" if bool_flag else kind.upper().split()[0],
            help=help_.replace("%", "%%"),
        )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would exit(2) with usage; we raise instead
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="arte",
        description="ARTE distillation toolkit: tailor a teacher's training data to a small student, "
        "export it and benchmark it on CPU. Each subcommand takes --config FILE.yaml and flags.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for cmd in COMMANDS:
        if " " in cmd.name:  # a two-word command: `arte export gguf`
            group, name = cmd.name.split(" ", 1)
            if group not in groups:
                gp = sub.add_parser(group, help=f"{group} subcommands", description=f"{group} subcommands")
                groups[group] = gp.add_subparsers(
                    dest="subcommand", metavar="SUBCOMMAND", parser_class=_Parser
                )
            p = groups[group].add_parser(name, help=cmd.help, description=cmd.help)
        else:
            p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        add_config_flags(p, _import(cmd.config))
    return parser


def parse(argv: Sequence[str]) -> tuple[Command, Any]:
    """The chosen command and its config (defaults < --config YAML < flags)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(list(argv))
    if not args.command:
        parser.print_help()
        raise SystemExit(0)
    name = " ".join(n for n in (args.command, getattr(args, "subcommand", None)) if n)
    cmd = next((c for c in COMMANDS if c.name == name), None)
    if cmd is None:  # a group without its subcommand
        valid = [c.name.split(" ", 1)[1] for c in COMMANDS if c.name.startswith(name + " ")]
        raise UserError(f"arte {name}: give a subcommand: {', '.join(valid)} (see arte {name} --help)")
    cls = _import(cmd.config)
    if extra:
        valid = ["--config"] + [f"--{k}" for k, *_, positional in _flags(cls) if not positional]
        raise unknown_name("option", extra[0].split("=")[0], valid, where=f"arte {cmd.name}")
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "subcommand", "config")}
    return cmd, load_config(cls, args.config, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `arte` console script. User errors, and paths that cannot be written, print
    one line and exit 2."""
    try:
        cmd, cfg = parse(sys.argv[1:] if argv is None else argv)
        if argv is None and cmd.prepare:
            _import(cmd.prepare)(cfg)
        result = _import(cmd.run)(cfg, *cmd.args)
        return int(result or 0)
    except UserError as e:
        print(f"arte: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be written (no permission, read-only, disk full)
        from common.paths import describe_write_error

        message = describe_write_error(e)
        if message is None:
            raise
        print(f"arte: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "arte: interrupted; finished records are kept, re-run the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
