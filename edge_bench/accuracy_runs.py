"""The accuracy side of one benchmark run: which questions each variant answered, its answers, and
the figures the report draws from them.

`AccuracyRuns` holds the task's prompts, each reference's completions (what its variants are
teacher-forced along, with the log-probabilities kept for the KL) and, per variant, its answer
records and summed fidelity counts. A run covers a range of questions: the sweep runs the first ones
(all of them for a fixed --n_questions, the pilot for auto), `edge_bench.auto_questions` may extend
them. `variant_fields` turns a variant's records into the report's figures: accuracy with its Wilson
interval, the paired comparison with its reference on the same questions (`edge_bench.paired`) and
both fidelity measurements (`edge_bench.fidelity`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from edge_bench.accuracy import Completion, Tokenizer, evaluate_runtime
from edge_bench.fidelity import bench_fidelity, export_verification
from edge_bench.measure import log
from edge_bench.paired import accuracy_summary, paired_accuracy
from edge_bench.settings import BenchSettings

KL_MAX_POSITIONS = 512
"""Reference distributions kept for the bench's KL, per reference: 512 x vocab x 4 bytes (100 MB at
SmolLM2's 49152 tokens). Positions past it get top-1 agreement only."""


class AccuracyRuns:
    """Accuracy runs of one benchmark: the task's items, the references' completions, the answers."""

    def __init__(self, task, items: list[tuple[str, str]], first_n: int, s: BenchSettings):
        self.task, self.items, self.first_n, self.s = task, items, first_n, s
        self.available = len(task.test)
        """The task's test questions (items may be fewer: the first --n_questions)."""
        self.reference_completions: dict[str, list[Completion]] = {}
        self.kl_left: dict[str, int] = {}
        self.runs: dict[str, dict[str, Any]] = {}

    def _state(self, name: str) -> dict[str, Any]:
        return self.runs.setdefault(
            name,
            {
                "records": [],
                "top1_matches": 0,
                "top1_steps": 0,
                "kl_sum": 0.0,
                "kl_max": None,
                "kl_positions": 0,
                "seconds": 0.0,
            },
        )

    def answered(self, name: str) -> int:
        """How many questions the variant `name` has answered."""
        return len(self.runs.get(name, {}).get("records", []))

    def runner(
        self, name: str, reference: str | None, tokenizer: Tokenizer, start: int, stop: int
    ) -> Callable[[Any], dict]:
        """A function of a loaded runtime that answers questions [start, stop) as variant `name`,
        teacher-forced along `reference`'s completions (None: it is a reference)."""

        def run(rt) -> dict:
            ref = self.reference_completions.get(reference) if reference else None
            if ref is not None and len(ref) < stop:  # the reference failed: accuracy without fidelity
                ref = None
            is_ref = reference is None
            t0 = time.perf_counter()
            summary, comps = evaluate_runtime(
                rt,
                tokenizer,
                self.task,
                self.items[start:stop],
                self.s.max_new_tokens,
                ref[start:stop] if ref else None,
                first_index=start,
                kl_positions=self.kl_left.setdefault(name, KL_MAX_POSITIONS) if is_ref else 0,
            )
            st = self._state(name)
            st["seconds"] += time.perf_counter() - t0
            if is_ref:
                self.reference_completions.setdefault(name, []).extend(comps)
                self.kl_left[name] -= sum(len(c.logprobs or ()) for c in comps)
            st["records"] += summary.pop("records")
            for key in ("top1_matches", "top1_steps", "kl_sum", "kl_positions"):
                st[key] += summary[key]
            if summary["kl_max"] is not None:
                st["kl_max"] = max(st["kl_max"] or 0.0, summary["kl_max"])
            correct = sum(r["correct"] for r in st["records"])
            log(
                f"{name}: {correct} of {len(st['records'])} correct; top-1 agreement with its reference "
                f"{summary['top1_agreement']} on questions {start}-{stop - 1}"
            )
            return summary

        return run

    def answers(self) -> list[dict]:
        """Every answer record, labelled with its variant (answers.jsonl)."""
        return [{"variant": name, **r} for name, st in self.runs.items() for r in st["records"]]

    def variant_fields(self, entry: dict, tolerance: float) -> dict:
        """The report's accuracy and fidelity fields of one variant entry (see edge_bench.report)."""
        st = self.runs.get(entry["name"])
        if st is None or not st["records"]:
            return {}
        acc = accuracy_summary(st["records"])
        out: dict[str, Any] = {
            "accuracy": acc["accuracy"],
            "accuracy_ci": acc["accuracy_ci"],
            "correct": acc["correct"],
            "n_questions": acc["n"],
            "missing_tag": sum(r["answer"] is None for r in st["records"]),
            "accuracy_seconds": round(st["seconds"], 3),
        }
        ref = self.runs.get(entry["reference"]) if entry.get("reference") else None
        if ref is not None:
            asked = {r["index"] for r in st["records"]}
            same = [r for r in ref["records"] if r["index"] in asked]  # the variant's questions only
            out["paired"] = paired_accuracy(same, st["records"], tolerance)
            out["accuracy_drop"] = out["paired"]["drop"]
            bench = bench_fidelity(
                st["top1_matches"], st["top1_steps"], st["kl_sum"], st["kl_max"], st["kl_positions"]
            )
            out["top1_agreement"], out["top1_steps"] = bench["top1_agreement"], bench["top1_positions"]
            out["fidelity"] = {**entry["fidelity"], "bench": bench}
        return out


def export_fidelity(entry: dict) -> dict:
    """{bench: None, manifest: the export verification manifest.json records, or None} for a new entry."""
    export = export_verification(entry["source"], entry["format"], entry["quant"], entry["path"])
    return {"bench": None, "manifest": export}
