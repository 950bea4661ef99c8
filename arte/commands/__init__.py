"""Thin CLI layers: each module holds one subcommand's config dataclass and its `run_*` function."""
