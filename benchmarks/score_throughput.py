"""Preference-scoring throughput: the pipeline's scorer against a naive loop, same drafts, same D_pref.

    .venv/bin/python benchmarks/score_throughput.py [--task boolean_expressions] [--drafts 4] [--k 8]

ARTE's step 2 costs m * n * k student generations (paper: 250 * 4 * 40 = 40,000 per task). This
scores the same drafts on the same k preference questions with:
  naive     transformers `model.generate`, one prompt at a time, no prefix reuse, no stop at </ans>
            (it decodes the whole budget, as a plain HF loop would);
  pipeline  `arte.stages.score.score_drafts` on each scorer backend (llama_cpp: the GGUF with prefix reuse
            across the k prompts of a draft; hf: batched, shared-prefix KV reuse), stopping at </ans>.
It prints evaluations per second, the speed-up over naive, and the share of (draft, question)
evaluations whose correctness is identical, then one JSON line. Target on a 2-core box: >= 10x with
>= 95% identical correctness. Run it on an idle machine: a busy core makes every figure slower.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arte.backends import BackendConfig, load_backend  # noqa: E402
from arte.stages.elicit import Draft  # noqa: E402
from arte.stages.score import score_drafts  # noqa: E402
from common.prompts import icl_prompt  # noqa: E402
from common.records import RecordLog  # noqa: E402
from common.tasks import load_task  # noqa: E402


def make_drafts(task, n: int) -> list[Draft]:
    """n drafts from validation questions (past the ones used as D_pref), half with a wrong answer."""
    drafts = []
    for i, ex in enumerate(task.validation[-n:]):
        answer = ex.target if i % 2 == 0 else "unknown"
        rationale = f"Let me work it out. The answer is {answer}. <ans>{answer}</ans>"
        drafts.append(Draft(task.name, f"q{i}", ex.input, ex.target, "bench", rationale))
    return drafts


def naive_scores(
    task, drafts, pref, model_spec: str, max_new_tokens: int, threads: int
) -> tuple[list[int], float]:
    """Per-evaluation correctness and seconds for the naive loop (HF generate, one prompt at a time)."""
    import torch

    from arte.models import resolve_hf
    from common.hf_models import load_hf_model
    from common.threads import configure_torch_threads, pick_threads

    configure_torch_threads(pick_threads(threads))
    tokenizer, model = load_hf_model(resolve_hf(model_spec))
    correct, started = [], time.perf_counter()
    for d in drafts:
        for ex in pref:
            prompt = icl_prompt(task.description, [(d.question, d.rationale)], ex.input)
            ids = tokenizer(prompt, return_tensors="pt")
            with torch.inference_mode():
                out = model.generate(
                    **ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
                )
            text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            correct.append(int(task.is_correct(text, ex.target)))
    return correct, time.perf_counter() - started


def pipeline_scores(
    task, drafts, pref, backend_cfg: BackendConfig, max_new_tokens: int
) -> tuple[list[int], float]:
    """Per-evaluation correctness and seconds for `score_drafts` (model load excluded, as for naive)."""
    backend = load_backend(backend_cfg)
    with tempfile.TemporaryDirectory() as tmp:
        cache = RecordLog(Path(tmp) / "cache.jsonl")
        started = time.perf_counter()
        score_drafts(
            task,
            drafts,
            pref,
            backend,
            student_id="bench",
            cache=cache,
            max_new_tokens=max_new_tokens,
            progress=False,
        )
        seconds = time.perf_counter() - started
        by_qid = {r["qid"]: r["correct"] for r in cache}
    backend.close()
    return [c for d in drafts for c in by_qid[d.qid]], seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="boolean_expressions")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--drafts", type=int, default=4, help="drafts scored (m * n in the pipeline)")
    p.add_argument("--k", type=int, default=8, help="preference questions per draft")
    p.add_argument("--max_new_tokens", type=int, default=96, help="decode budget per evaluation")
    p.add_argument("--threads", type=int, default=0, help="0 = free cores")
    p.add_argument("--scorers", default="llama_cpp,hf", help="pipeline backends to measure")
    args = p.parse_args()

    task = load_task(args.task, n_validation=args.k + args.drafts, n_test=10)
    pref, drafts = task.validation[: args.k], make_drafts(task, args.drafts)
    n = len(drafts) * len(pref)
    naive, naive_s = naive_scores(task, drafts, pref, args.model, args.max_new_tokens, args.threads)
    rows = {"naive": {"evals_per_s": n / naive_s, "seconds": naive_s, "accuracy": sum(naive) / n}}
    for name in args.scorers.split(","):
        cfg = BackendConfig(name=name, model=args.model, threads=args.threads, batch_size=args.k)
        got, secs = pipeline_scores(task, drafts, pref, cfg, args.max_new_tokens)
        same = sum(a == b for a, b in zip(naive, got)) / n
        rows[name] = {
            "evals_per_s": n / secs,
            "seconds": secs,
            "accuracy": sum(got) / n,
            "speedup": naive_s / secs,
            "identical_correctness": same,
        }

    print(f"{n} evaluations ({len(drafts)} drafts x k={len(pref)}) on {args.task}, model {args.model}")
    print(
        f"{'scorer':<10} {'evals/s':>9} {'seconds':>9} {'accuracy':>9} {'speed-up':>9} {'same as naive':>14}"
    )
    for name, r in rows.items():
        speed = f"{r['speedup']:.1f}x" if "speedup" in r else "1.0x"
        same = f"{r['identical_correctness']:.1%}" if "identical_correctness" in r else "-"
        print(
            f"{name:<10} {r['evals_per_s']:>9.2f} {r['seconds']:>9.1f} {r['accuracy']:>9.2f} "
            f"{speed:>9} {same:>14}"
        )
    print(
        json.dumps(
            {
                "task": args.task,
                "evaluations": n,
                **{k: {m: round(v, 3) for m, v in r.items()} for k, r in rows.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
