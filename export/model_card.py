"""The model card of an export folder (OUT/README.md, Hugging Face conventions): the numbers travel
with the model.

YAML front matter: `license` (inherited from the student's base model and the teacher, whose terms
can bind data it generated; "other" with both named when they differ or are unknown), `base_model`,
`tags`, and a `model-index` with the ARTE student's accuracies from the run's summary.json. The body:
the training data's provenance (teacher, tasks, sizes, D_pref selection), the accuracy table with
intervals, the summary's caveats, and each exported variant with its fidelity figures (manifest).

It reads the run directory's files only (manifest.json, summary.json), never `arte` internals.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CARD = "README.md"
LICENSES = (  # substring of a model name (case-folded) -> its license id on the Hugging Face Hub
    ("gemma", "gemma"),
    ("llama-3", "llama3"),
    ("llama3", "llama3"),
    ("llama-2", "llama2"),
    ("qwen", "other"),
    ("mistral", "apache-2.0"),
    ("phi", "mit"),
)


def license_of(model: str) -> str | None:
    """The license id of a known model family in `model`'s name; None when unknown."""
    name = model.casefold()
    return next((lic for key, lic in LICENSES if key in name), None)


def card_license(student: str, teacher: str) -> tuple[str, str]:
    """(front-matter license, a sentence naming both models' terms)."""
    mine, theirs = license_of(student), license_of(teacher)
    said = (
        f"the student's base model {student}: {mine or 'license unknown'}; the teacher {teacher}, "
        f"whose terms can bind the data it generated: {theirs or 'license unknown'}"
    )
    if mine is not None and mine == theirs:
        return mine, f"License {mine}, inherited from {said}."
    return "other", f"License: the terms differ or are unknown, and both apply ({said})."


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def model_index(name: str, summary: Mapping[str, Any]) -> list[dict]:
    """The `model-index` entry: the arte student's accuracy (%) per task and shot setting."""
    results = [
        {
            "task": {"type": "text-generation", "name": "ARTE target task"},
            "dataset": {"name": r["task"], "type": r["task"]},
            "metrics": [
                {"type": "accuracy", "value": round(100 * r["acc"], 2), "name": f"{r['shots']}-shot accuracy"}
            ],
        }
        for r in (summary.get("accuracy") or {}).get("accuracy", [])
        if r["variant"] == "arte" and r["task"] != "macro"
    ]
    return [{"name": name, "results": results}] if results else []


def _front_matter(meta: Mapping[str, Any]) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(dict(meta), sort_keys=False, allow_unicode=True) + "---\n"


def _accuracy_lines(summary: Mapping[str, Any]) -> list[str]:
    rows = (summary.get("accuracy") or {}).get("accuracy", [])
    if not rows:
        return ["No evaluation results (the run has no summary.json)."]
    out = ["| variant | task | shots | accuracy % [95% CI] | n |", "|---|---|---|---|---|"]
    for r in rows:
        cell = f"{100 * r['acc']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"
        out.append(f"| {r['variant']} | {r['task']} | {r['shots']} | {cell} | {r.get('n', '-')} |")
    return out


def _variant_lines(manifest: Mapping[str, Any]) -> list[str]:
    out = ["| format | quant | MB | bits/weight | top-1 agreement | mean KL |", "|---|---|---|---|---|---|"]
    for v in manifest.get("variants", []):
        ver = v.get("verification") or {}
        top1, kl = ver.get("top1_agreement"), ver.get("mean_kl")
        cells = [v["format"], v["quant"], f"{v['size_bytes'] / 1e6:.1f}", f"{v['bits_per_weight']:.2f}"]
        cells += ["-" if top1 is None else f"{top1:.3f}", "-" if kl is None else f"{kl:.4f}"]
        out.append("| " + " | ".join(cells) + " |")
    return out


def _provenance_lines(config: Mapping[str, Any], summary: Mapping[str, Any], teacher: str) -> list[str]:
    data = summary.get("data") or {}
    sizes = data.get("sft_examples_per_task", {}).get("arte", {})
    methods = ", ".join(f"{t} {m}" for t, m in data.get("prefset", {}).items())
    reused = data.get("aligned_teacher_from")
    return [
        f"- teacher: {teacher}" + (f" (aligned in another run: {reused['reused_from']})" if reused else ""),
        f"- tasks: {', '.join(config.get('tasks', [])) or '-'}",
        f"- training examples per task: {', '.join(f'{t} {n}' for t, n in sizes.items()) or '-'}",
        f"- D_pref selection per task: {methods or '-'}",
    ]


def model_card(manifest: Mapping[str, Any], run_dir: str | Path | None = None) -> str:
    """README.md's text for an export folder (see module doc); without `run_dir`, the model and its
    exported variants only."""
    run = Path(run_dir) if run_dir else None
    config = _read(run / "manifest.json").get("config", {}) if run else {}
    summary = _read(run / "summary.json") if run else {}
    source = (manifest.get("source") or {}).get("path", "")
    student = (config.get("student") or {}).get("model") or source
    teacher = (config.get("teacher") or {}).get("model") or "unknown"
    lic, lic_line = card_license(student, teacher)
    formats = sorted({v["format"] for v in manifest.get("variants", [])})
    meta: dict[str, Any] = {"license": lic, "base_model": student, "tags": ["arte", "distillation", *formats]}
    if index := model_index(Path(source).name or "arte-student", summary):
        meta["model-index"] = index
    lines = [f"# {Path(source).name or 'ARTE student'}", "", lic_line, ""]
    lines += ["## Training data (ARTE)", ""] + _provenance_lines(config, summary, teacher) + [""]
    lines += ["## Accuracy", ""] + _accuracy_lines(summary) + [""]
    if caveats := summary.get("caveats"):
        lines += ["## Read these numbers with care", ""] + [f"- {c}" for c in caveats] + [""]
    lines += ["## Exported variants", ""] + _variant_lines(manifest) + [""]
    return _front_matter(meta) + "\n" + "\n".join(lines)


def write_model_card(
    out_dir: str | Path, manifest: Mapping[str, Any], run_dir: str | Path | None = None
) -> Path:
    """Write OUT/README.md (see `model_card`); returns its path."""
    path = Path(out_dir) / CARD
    path.write_text(model_card(manifest, run_dir), encoding="utf-8")
    return path
