"""Preference-scoring throughput: the pipeline's scorer against a naive loop and against the llama_cpp
backend as it was before batched decoding, same drafts, same D_pref.

    .venv/bin/python benchmarks/score_throughput.py [--drafts 16] [--k 8] [--naive_drafts 4]

ARTE's step 2 costs m * n * k student generations (paper: 250 * 4 * 40 = 40,000 per task). This
scores the same drafts on the same k preference questions with:
  naive       transformers `model.generate`, one prompt at a time, no prefix reuse, no stop at </ans>
              (it decodes the whole budget, as a plain HF loop would); on the first --naive_drafts
              drafts only (it is slow), so its evals/s is a rate over those;
  sequential  the llama_cpp backend before batching: `Llama.generate` one prompt at a time, with
              llama-cpp-python's KV reuse of the common prefix of consecutive prompts;
  llama_cpp   `arte.stages.score.score_drafts` on the llama_cpp backend as the pipeline runs it:
              batched decoding of --batch_size sequences, prefix sharing, stop at </ans>;
  hf          the same on the hf backend (batched, shared-prefix KV reuse).
It prints evaluations per second, the speed-ups over naive and over sequential, and the share of
(draft, question) evaluations whose correctness is identical to naive's and to sequential's, then
one JSON line. Targets on a 2-core box: llama_cpp >= 2x sequential with >= 98% identical
correctness (>= 35x naive). Run it on an idle machine: a busy core makes every figure slower.
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


class SequentialLlamaCpp:
    """The llama_cpp backend's generation before batched decoding (for comparison only): prompts
    sorted by tokens, then one at a time through `Llama.generate`, which re-evaluates only the
    tokens after the common prefix with the previous prompt; greedy, stop strings cut as now;
    flash attention off, as llama-cpp-python opened the model then."""

    def __init__(self, cfg: BackendConfig):
        import dataclasses

        from arte.backends.llama_cpp import LlamaCppBackend

        self.inner = LlamaCppBackend(dataclasses.replace(cfg, flash_attn=False))

    def generate(self, prompts, params):
        from arte.backends.base import Generation
        from arte.backends.decoding import find_stop

        b = self.inner
        encoded = [b.encode(b.render(p)) for p in prompts]
        vocab = b._llama_cpp.llama_model_get_vocab(b.llm.model)
        out = [None] * len(prompts)
        for i in sorted(range(len(encoded)), key=lambda i: encoded[i]):
            tokens, text, finish = [], "", "length"
            for tok in b.llm.generate(encoded[i], temp=0.0, repeat_penalty=1.0):
                if b._llama_cpp.llama_vocab_is_eog(vocab, tok):
                    finish = "stop"
                    break
                tokens.append(tok)
                text = b._decode_text(tokens)
                cut = find_stop(text, params.stop)
                if cut is not None:
                    text, finish = text[:cut], "stop"
                    break
                if len(tokens) >= params.max_new_tokens:
                    break
            out[i] = Generation(text, finish, len(encoded[i]), len(tokens))
        return out

    def close(self) -> None:
        self.inner.close()


def pipeline_scores(
    task, drafts, pref, backend_cfg: BackendConfig, max_new_tokens: int, sequential: bool = False
) -> tuple[list[int], float]:
    """Per-evaluation correctness and seconds for `score_drafts` (model load excluded, as for naive)."""
    backend = SequentialLlamaCpp(backend_cfg) if sequential else load_backend(backend_cfg)
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
            prompts_per_call=backend_cfg.call_size,
        )
        seconds = time.perf_counter() - started
        by_qid = {r["qid"]: r["correct"] for r in cache}
    backend.close()
    return [c for d in drafts for c in by_qid[d.qid]], seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="boolean_expressions")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--drafts", type=int, default=16, help="drafts scored (m * n in the pipeline)")
    p.add_argument("--naive_drafts", type=int, default=4, help="drafts the (slow) naive loop scores")
    p.add_argument("--k", type=int, default=8, help="preference questions per draft")
    p.add_argument("--max_new_tokens", type=int, default=96, help="decode budget per evaluation")
    p.add_argument("--threads", type=int, default=0, help="0 = free cores")
    p.add_argument("--batch_size", type=int, default=16, help="sequences decoded together (llama_cpp, hf)")
    p.add_argument("--scorers", default="sequential,llama_cpp,hf", help="scorers to measure besides naive")
    args = p.parse_args()

    task = load_task(args.task, n_validation=args.k + args.drafts, n_test=10)
    pref, drafts = task.validation[: args.k], make_drafts(task, args.drafts)
    n, n_naive = len(drafts) * len(pref), min(args.naive_drafts, len(drafts)) * len(pref)
    naive, naive_s = naive_scores(
        task, drafts[: args.naive_drafts], pref, args.model, args.max_new_tokens, args.threads
    )
    rows = {"naive": {"evals_per_s": n_naive / naive_s, "seconds": naive_s, "accuracy": sum(naive) / n_naive}}
    got_by = {}
    for name in args.scorers.split(","):
        engine = "llama_cpp" if name == "sequential" else name
        cfg = BackendConfig(name=engine, model=args.model, threads=args.threads, batch_size=args.batch_size)
        got, secs = pipeline_scores(
            task, drafts, pref, cfg, args.max_new_tokens, sequential=name == "sequential"
        )
        got_by[name] = got
        rows[name] = {
            "evals_per_s": n / secs,
            "seconds": secs,
            "accuracy": sum(got) / n,
            "speedup_vs_naive": (n / secs) / rows["naive"]["evals_per_s"],
            "same_as_naive": sum(a == b for a, b in zip(naive, got)) / n_naive,
        }
        if "sequential" in got_by and name != "sequential":
            rows[name]["speedup_vs_sequential"] = rows["sequential"]["seconds"] / secs
            rows[name]["same_as_sequential"] = sum(a == b for a, b in zip(got_by["sequential"], got)) / n

    print(
        f"{n} evaluations ({len(drafts)} drafts x k={len(pref)}) on {args.task}, model {args.model}, "
        f"batch_size {args.batch_size}; naive on {n_naive}"
    )
    print(
        f"{'scorer':<11} {'evals/s':>8} {'seconds':>8} {'acc':>5} {'vs naive':>9} {'vs seq':>7} "
        f"{'same as naive':>14} {'same as seq':>12}"
    )
    for name, r in rows.items():
        f = lambda key, spec, r=r: format(r[key], spec) if key in r else "-"  # noqa: E731
        print(
            f"{name:<11} {r['evals_per_s']:>8.2f} {r['seconds']:>8.1f} {r['accuracy']:>5.2f} "
            f"{f('speedup_vs_naive', '.1f'):>8}x {f('speedup_vs_sequential', '.2f'):>6}x "
            f"{f('same_as_naive', '.1%'):>14} {f('same_as_sequential', '.1%'):>12}"
        )
    summary = {
        "task": args.task,
        "evaluations": n,
        "naive_evaluations": n_naive,
        "batch_size": args.batch_size,
    }
    print(json.dumps({**summary, **{k: {m: round(v, 4) for m, v in r.items()} for k, r in rows.items()}}))


if __name__ == "__main__":
    main()
