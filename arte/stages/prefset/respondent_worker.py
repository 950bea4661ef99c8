"""A prefset respondent in a process of its own: `python -m arte.stages.prefset.respondent_worker JOB.json`.

The prefset stage (`arte.stages.prefset.respondents.run_in_subprocess`) writes the job file: the engine
section, the sampling parameters, the answer log's path and the prompts still to answer. This
process loads that one engine, appends its answers to the log after each generate call, and exits,
so whatever memory the engine holds (vLLM's GPU memory included) goes with the process.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from arte.backends import BackendConfig, SamplingParams
from arte.run_config import configure_logging
from arte.stages.prefset.respondents import run_in_process
from common.errors import UserError
from common.records import RecordLog


def main(argv: Sequence[str] | None = None) -> int:
    """Answer the job file's prompts with its engine; 0 on success, 1 on a user error, 2 on bad usage."""
    from common.config import from_dict

    configure_logging()
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(
            "usage: python -m arte.stages.prefset.respondent_worker JOB.json (written by the prefset stage)",
            file=sys.stderr,
        )
        return 2
    job = json.loads(Path(args[0]).read_text())
    cfg = from_dict(BackendConfig, job["backend"])
    p = job["params"]
    params = SamplingParams(**{**p, "stop": tuple(p["stop"]), "seeds": tuple(p["seeds"])})
    try:
        run_in_process(cfg, job["jobs"], params, RecordLog(Path(job["answers"])))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
