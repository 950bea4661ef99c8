"""How closely a variant follows its fp32 reference, beside (not mixed with) its task accuracy.

Two measurements, named by what they are (the keys of a report variant's `fidelity`):
- `manifest`: the export's own verification, read from the export directory's `manifest.json` (the
  variant's `verification` record, written by `arte export`): next-token top-1 agreement and mean KL
  (reference || variant) over fixed prompts fed token by token through the KV cache (6 prompts x 17
  positions there), the greedy-text check and the export's flag. None when the variant did not come
  from a manifest, or the manifest has no verification.
- `bench`: measured in this run on the task's own prompts (`edge_bench.accuracy`): teacher-forced
  along the reference's greedy answers, top-1 agreement at every step and mean / max KL at the first
  steps of each answer (`kl_positions` of them).

`rank_fidelity` orders variants by the bench's mean KL (every variant with a reference has it, on the
same positions); `rank_accuracy` orders them by task accuracy. The two orders answer different
questions and often differ: a variant can keep the task's answers while its distributions drift.
"""

from __future__ import annotations

import json
from pathlib import Path

from edge_bench.schema import VariantResult

MANIFEST = "manifest.json"
EXPORT_KEYS = ("top1_agreement", "mean_kl", "max_kl", "positions", "flagged", "reason")


def export_verification(source: str | Path, fmt: str, quant: str, path: str | Path) -> dict | None:
    """The verification figures `manifest.json` in `source` records for the variant (format, quant;
    the file name must match too), or None. A manifest that cannot be read gives None: the bench's
    own discovery reports unreadable manifests."""
    manifest_path = Path(source) / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    for rec in manifest.get("variants", []):
        if rec.get("format") != fmt or rec.get("quant") != quant:
            continue
        if Path(str(rec.get("path", ""))).name != Path(path).name:
            continue
        ver = rec.get("verification")
        if not isinstance(ver, dict) or ver.get("top1_agreement") is None:
            return None
        out = {k: ver.get(k) for k in EXPORT_KEYS}
        out["greedy_identical"] = (ver.get("greedy") or {}).get("identical")
        out["what"] = "export verification (manifest.json): fixed prompts through the KV cache"
        return out
    return None


def bench_fidelity(top1_matches: int, top1_steps: int, kl_sum: float, kl_max, kl_positions: int) -> dict:
    """The bench's own top-1 agreement and KL from the summed counts of its accuracy runs."""
    return {
        "top1_agreement": top1_matches / top1_steps if top1_steps else None,
        "top1_positions": top1_steps,
        "mean_kl": kl_sum / kl_positions if kl_positions else None,
        "max_kl": kl_max,
        "kl_positions": kl_positions,
        "what": "this bench: task prompts, teacher-forced along the reference's greedy answers",
    }


def rank_fidelity(variants: list[VariantResult]) -> list[str]:
    """Names of the variants with a bench mean KL, closest to their reference first."""
    kl = {v.name: v.fidelity.bench.mean_kl for v in variants if v.fidelity.bench}
    return sorted((name for name, x in kl.items() if x is not None), key=kl.__getitem__)


def rank_accuracy(variants: list[VariantResult]) -> list[str]:
    """Names of the variants with an accuracy, most accurate first (point estimates: read them with
    their intervals)."""
    have = [v for v in variants if v.accuracy is not None]
    return [v.name for v in sorted(have, key=lambda v: -v.accuracy)]
