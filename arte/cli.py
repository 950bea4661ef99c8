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

from arte.backends import engine_fields
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
    sections: tuple[str, ...] = ()
    """A stage command's flags: the run config's shared fields and these sections (empty: every
    field of the config is a flag). Its --config YAML may still set every field."""
    summary: bool = False
    """`--help` lists the top-level fields and the engines' common fields one by one, and each stage
    section and the engine-specific fields in one line each (`arte run`, `arte plan`): every field
    is still a flag."""


SHARED = ("run_dir", "tasks", "seed", "n_validation", "n_test", "on_config_change")
"""The run config's fields every stage command takes."""
ENGINE_SECTIONS = ("teacher", "student", "aligned_teacher")
"""Engine sections whose common fields `arte run --help` lists one by one."""


COMMANDS: tuple[Command, ...] = (
    Command(
        "run",
        "arte.commands.plan:RunCommandConfig",
        "arte.commands.plan:run_cli",
        "Run (or resume) every ARTE stage in order into one run directory (--dry_run: its plan only).",
        summary=True,
    ),
    Command(
        "plan",
        "arte.commands.plan:PlanConfig",
        "arte.commands.plan:run_plan_cli",
        "What a run config will do, without loading a model: stages, generations, pairs, training "
        "tokens and steps, differences from the paper.",
        summary=True,
    ),
    *(
        Command(
            stage.name,
            "arte.run_config:RunConfig",
            "arte.pipeline:run_stage_cli",
            stage.help,
            args=(stage.name,),
            sections=SHARED + stage.sections,
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


def _within(key: str, sections: tuple[str, ...]) -> bool:
    return not sections or any(key == s or key.startswith(s + ".") for s in sections)


def _listed(key: str, engine_fields: dict[str, tuple[str, ...]]) -> bool:
    """Whether a summary `--help` lists `key` on a line of its own."""
    head, _, leaf = key.rpartition(".")
    return not head or (head in ENGINE_SECTIONS and leaf not in engine_fields)


def _summary_epilog(cls: type, engine_fields: dict[str, tuple[str, ...]]) -> str:
    """The lines of a summary `--help` for what it does not list one by one."""
    counts: dict[str, int] = {}
    for key, *_ in _flags(cls):
        head = key.split(".")[0]
        if not _listed(key, engine_fields) and head not in ENGINE_SECTIONS:
            counts[head] = counts.get(head, 0) + 1
    by_engine: dict[str, list[str]] = {}
    for name, engines in engine_fields.items():
        by_engine.setdefault("/".join(engines), []).append(name)
    lines = [
        "Every field of the run config is a flag. Stage sections (`arte STAGE --help` lists each one's):",
        *(f"  {head}: --{head}.FIELD ({n} option{'s' * (n > 1)})" for head, n in counts.items()),
        "Engine-specific fields of --teacher., --student., --aligned_teacher., --evaluate.backend. "
        "(an error on another engine):",
        *(f"  {engines}: {', '.join(names)}" for engines, names in by_engine.items()),
    ]
    return "\n".join(lines)


def _show_default(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) or "(empty)"
    return "(none)" if value is None else str(value)


def add_config_flags(
    parser: argparse.ArgumentParser, cls: type, sections: tuple[str, ...] = (), summary: bool = False
) -> None:
    """Add `--config` and one flag per config field (of `sections` only, when given) to `parser`;
    a `summary` help lists only some of them (`Command.summary`)."""

    engines = engine_fields()
    parser.add_argument("--config", metavar="FILE.yaml", help="Load options from this YAML file first.")
    for key, tp, default, text, positional in _flags(cls):
        if not _within(key, sections):
            continue
        kind = describe_type(tp)
        only = engines.get(key.rpartition(".")[2]) if "." in key else None
        default_text = f"{kind}; default: {_show_default(default)}"
        help_ = f"{text} [{default_text}" + (f"; {'/'.join(only)} only]" if only else "]")
        if summary and not _listed(key, engines):
            help_ = argparse.SUPPRESS
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
            help=help_ if help_ == argparse.SUPPRESS else help_.replace("%", "%%"),
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
            epilog = None
            if cmd.summary:
                epilog = _summary_epilog(_import(cmd.config), engine_fields())
            p = sub.add_parser(
                cmd.name,
                help=cmd.help,
                description=cmd.help,
                epilog=epilog,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
        add_config_flags(p, _import(cmd.config), cmd.sections, cmd.summary)
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
        flag = extra[0].split("=")[0]
        known = [f"--{k}" for k, *_, positional in _flags(cls) if not positional]
        if flag in known:  # a run-config field that this stage command does not take as a flag
            raise UserError(
                f"arte {cmd.name}: {flag} is not an option of this stage (its options: arte {cmd.name} "
                f"--help); set it in the --config YAML, or use arte run"
            )
        valid = ["--config"] + [k for k in known if _within(k[2:], cmd.sections)]
        raise unknown_name("option", flag, valid, where=f"arte {cmd.name}")
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
