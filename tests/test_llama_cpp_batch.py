"""Batched multi-sequence decoding on llama.cpp (common/llama_cpp_batch.py) on the tiny random
Llama GGUF: greedy output against an independent one-prompt-at-a-time loop (llama.cpp's own logits,
argmax), per-sequence budgets and stops, sequences joining and leaving, prefix sharing, seeded
sampling that does not depend on the batch width, and grouped calls (`SamplingParams.seeds`)."""

from __future__ import annotations

import numpy as np
import pytest

from arte.backends import BackendConfig, load_backend
from arte.backends.base import SamplingParams
from common.token_sampling import SamplingSetup

llama_cpp = pytest.importorskip("llama_cpp")

PROMPTS = [
    "Question: what is 2 + 3? Answer:",
    "Question: what is 2 + 3? Answer: Let's think",
    "Question: what is 2 + 3? Answer: Let's think step by step.",
    "The capital of France is",
    "def fibonacci(n):",
    "1, 2, 3, 4,",
    "Question: what is 7 * 6? Answer:",
    "Once upon a time",
    "Question: what is 2 + 3? Answer: five",
    "Zebra",
]


def backend(tiny_model, width: int, n_ctx: int = 256):
    cfg = BackendConfig(
        name="llama_cpp", model=str(tiny_model.gguf_path), threads=1, n_ctx=n_ctx, batch_size=width
    )
    return load_backend(cfg)


TIE = 1e-2
"""Logit gap below which two tokens count as tied: llama.cpp's kernels at another batch shape (and
flash attention over a unified cache) move F32 logits by ~1e-3, so on a random model greedy decoding
may take either of two near-tied tokens (measured: a 0.0021 gap at width 1 on PROMPTS[2])."""


class Reference:
    """One prompt at a time in its own llama.cpp context, the argmax of llama.cpp's logits after
    each token (no batching, no sharing)."""

    def __init__(self, llm):
        self.llm, self.vocab = llm, llama_cpp.llama_model_get_vocab(llm.model)

    def _logits(self) -> np.ndarray:
        ptr = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),))

    def _start(self, text: str) -> None:
        self.llm.reset()
        self.llm.eval(self.llm.tokenize(text.encode(), add_bos=True, special=True))

    def greedy(self, text: str, budget: int) -> list[int]:
        self._start(text)
        out = []
        while len(out) < budget:
            tok = int(self._logits().argmax())
            if llama_cpp.llama_vocab_is_eog(self.vocab, tok):
                break
            out.append(tok)
            self.llm.eval([tok])
        return out

    def worst_gap(self, text: str, tokens: list[int]) -> float:
        """Teacher-forced along `tokens`: the largest (best logit - logit of the token taken). 0 when
        every token was the reference's argmax; below TIE when each departure was a near-tie."""
        self._start(text)
        worst = 0.0
        for tok in tokens:
            x = self._logits()
            worst = max(worst, float(x.max() - x[tok]))
            self.llm.eval([tok])
        return worst

    def check(self, text: str, tokens: list[int], budget: int) -> None:
        """`tokens` is greedy decoding of `text` (up to near-ties), `budget` tokens or up to EOG."""
        assert self.worst_gap(text, tokens) < TIE, text
        want = self.greedy(text, budget)
        if tokens != want:  # a near-tie was taken the other way: the rest may differ, not the length
            assert len(tokens) == budget, text
        return want


@pytest.fixture(scope="module")
def reference(tiny_model):
    from common.llama_cpp_loader import open_llama

    llm = open_llama(tiny_model.gguf_path, n_ctx=256, n_threads=1, n_threads_batch=1, verbose=False)
    yield Reference(llm)
    llm.close()


def no_stop(index: int, tokens: list[int]) -> None:
    return None


@pytest.mark.parametrize("width", [1, 3, 8])
def test_batched_greedy_equals_one_prompt_at_a_time(tiny_model, reference, width):
    b = backend(tiny_model, width)
    try:
        got = b.generate(PROMPTS, SamplingParams(max_new_tokens=24))
        ids = [b.encode(p) for p in PROMPTS]
        tokens = b._decoder().generate(ids, [24] * len(ids), SamplingSetup(), [0] * len(ids), no_stop)
        exact = same_text = 0
        for prompt, g, (toks, finish) in zip(PROMPTS, got, tokens):
            assert g.completion_tokens == len(toks) == 24 and finish == g.finish_reason == "length"
            exact += toks == reference.check(prompt, toks, 24)
            # the backend's calls share other prefixes than this one call: ties may go either way
            same_text += g.text == b._decode_text(toks)
        assert min(exact, same_text) >= len(PROMPTS) - 2  # near-ties are rare
    finally:
        b.close()


def test_per_sequence_budgets_and_stops_with_joining_and_leaving(tiny_model, reference):
    """10 prompts through 3 slots: each sequence stops at its own budget or its own stop rule, the
    others keep going, waiting prompts take the freed slots."""
    b = backend(tiny_model, 3)
    try:
        ids = [b.encode(p) for p in PROMPTS]
        budgets = [1 + (i * 7) % 20 for i in range(len(PROMPTS))]
        cut_at = {2: 3, 5: 1, 9: 6}  # prompt index -> stop after this many tokens

        def stop(i: int, tokens: list[int]) -> str | None:
            return "stop" if len(tokens) == cut_at.get(i, -1) else None

        out = b._decoder().generate(ids, budgets, SamplingSetup(), [0] * len(ids), stop)
        for i, (tokens, finish) in enumerate(out):
            n = min(cut_at.get(i, budgets[i]), budgets[i])
            assert len(tokens) == n and reference.worst_gap(PROMPTS[i], tokens) < TIE, i
            assert finish == ("stop" if cut_at.get(i, 99) <= budgets[i] else "length"), i
    finally:
        b.close()


def test_stop_strings_and_context_budgets_match_width_one(tiny_model):
    params = SamplingParams(max_new_tokens=40, stop=(" the", "\n"))
    one, many = backend(tiny_model, 1, n_ctx=48), backend(tiny_model, 8, n_ctx=48)
    try:
        long = "word " * 30  # leaves fewer than 40 tokens of context: its own, smaller budget
        prompts = [*PROMPTS, long]
        a, c = one.generate(prompts, params), many.generate(prompts, params)
        assert sum(x == y for x, y in zip(a, c)) >= len(prompts) - 1  # one near-tie may flip
        for x, y in zip(a, c):
            assert x.prompt_tokens == y.prompt_tokens
            for g in (x, y):
                cut = min((g.text.find(s) + len(s) for s in params.stop if s in g.text), default=None)
                assert cut in (None, len(g.text)) and (g.finish_reason == "stop") == (cut is not None)
                assert g.prompt_tokens + g.completion_tokens <= 48
                assert g.finish_reason == "stop" or g.completion_tokens == min(40, 48 - g.prompt_tokens)
        assert a[-1].completion_tokens == c[-1].completion_tokens < 40  # the context's own budget
    finally:
        one.close()
        many.close()


def test_shared_prefixes_are_copied_not_recomputed(tiny_model, reference):
    """Prompts that share a long prefix: the batch decodes each shared prefix once (fewer prompt
    tokens than the prompts hold) and still gives the reference's tokens."""
    b = backend(tiny_model, 4)
    try:
        demo = "Task: add the numbers. Question: 1 + 1 Answer: 2. Question: 2 + 2 Answer: 4. " * 3
        prompts = [demo + f"Question: {i} + {i} Answer:" for i in range(6)]
        ids = sorted(b.encode(p) for p in prompts)
        dec = b._decoder()
        fed = []
        original = dec._step

        def counting_step(active):
            before = {s.index: len(s.pending) for s in active}
            rows = original(active)
            fed.append(sum(before[s.index] - len(s.pending) for s in active))
            return rows

        dec._step = counting_step
        out = dec.generate(ids, [8] * len(ids), SamplingSetup(), [0] * len(ids), lambda i, t: None)
        prompt_tokens_fed = sum(fed)
        assert prompt_tokens_fed < sum(len(x) for x in ids) / 2
        for x, (tokens, _) in zip(ids, out):
            reference.check(_text(b, x), tokens, 8)
    finally:
        b.close()


def _text(b, ids: list[int]) -> str:
    """The prompt text of token ids that `encode` made (BOS dropped: `reference` adds it)."""
    bos = b.llm.token_bos()
    return b.llm.detokenize([t for t in ids if t != bos], special=True).decode()


@pytest.mark.parametrize("width", [1, 8])
def test_seeded_sampling_does_not_depend_on_the_batch_width(tiny_model, width):
    params = SamplingParams(max_new_tokens=20, temperature=0.9, top_p=0.95, seed=7)
    base, other = backend(tiny_model, 1), backend(tiny_model, width)
    try:
        a, c = base.generate(PROMPTS, params), other.generate(PROMPTS, params)
        assert [g.text for g in a] == [g.text for g in c]
        again = other.generate(PROMPTS, params)
        assert [g.text for g in again] == [g.text for g in c]
        reseeded = other.generate(PROMPTS, SamplingParams(max_new_tokens=20, temperature=0.9, seed=8))
        assert [g.text for g in reseeded] != [g.text for g in c]
    finally:
        base.close()
        other.close()


def test_grouped_calls_sample_like_separate_calls(tiny_model):
    """`SamplingParams.seeds`: n copies of one prompt in one call give what n calls would."""
    b = backend(tiny_model, 4)
    try:
        prompt, n = PROMPTS[0], 4
        one_by_one = [
            b.generate([prompt], SamplingParams(max_new_tokens=16, temperature=1.0, seed=s))[0].text
            for s in range(10, 10 + n)
        ]
        grouped = b.generate(
            [prompt] * n, SamplingParams(max_new_tokens=16, temperature=1.0, seeds=tuple(range(10, 10 + n)))
        )
        assert [g.text for g in grouped] == one_by_one
        assert len(set(one_by_one)) > 1
    finally:
        b.close()


def test_sample_row_matches_the_distribution():
    """Temperature / top-p sampling of one row against the probabilities it should follow."""
    from common.token_sampling import sample_row

    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], dtype=np.float32))
    rng = np.random.default_rng(0)
    draws = np.bincount([sample_row(logits, SamplingSetup(1.0, 1.0), rng) for _ in range(20000)], minlength=4)
    assert np.allclose(draws / 20000, [0.5, 0.3, 0.15, 0.05], atol=0.015)
    nucleus = np.bincount(
        [sample_row(logits, SamplingSetup(1.0, 0.7), rng) for _ in range(20000)], minlength=4
    )
    assert nucleus[2] == nucleus[3] == 0  # 0.5 + 0.3 >= 0.7: only the first two survive
    assert abs(nucleus[0] / nucleus[:2].sum() - 0.5 / 0.8) < 0.015


def test_sample_rows_draws_each_row_from_its_own_distribution_and_stream():
    """The vectorised sampler: zero-mass entries never drawn, the frequencies of a row's distribution,
    and each row's token the same as that row sampled alone with the same generator state (batch
    independence), with and without top-p."""
    from common.token_sampling import sample_row, sample_rows

    n = 1000
    probs = np.zeros(n)
    probs[[3, 260, 700, n - 1]] = [0.1, 0.4, 0.3, 0.2]
    with np.errstate(divide="ignore"):
        row = np.log(probs).astype(np.float32)
    rng = np.random.default_rng(1)
    picked = sample_rows(np.tile(row, (20000, 1)), SamplingSetup(1.0, 1.0), [rng] * 20000)
    draws = np.bincount(picked, minlength=n)
    assert set(np.flatnonzero(draws)) == {3, 260, 700, n - 1}
    assert np.allclose(draws[[3, 260, 700, n - 1]] / 20000, [0.1, 0.4, 0.3, 0.2], atol=0.015)

    logits = np.random.default_rng(2).standard_normal((6, n)).astype(np.float32) * 4
    for top_p in (1.0, 0.8):
        s = SamplingSetup(0.7, top_p)
        together = sample_rows(logits, s, [np.random.default_rng(10 + r) for r in range(6)])
        alone = [sample_row(logits[r], s, np.random.default_rng(10 + r)) for r in range(6)]
        assert together.tolist() == alone
        assert len(set(alone)) > 1


@pytest.mark.slow
def test_score_killed_mid_batch_resumes_without_loss_or_duplicates(tiny_model, tmp_path):
    """The score stage on a llama_cpp student (the tiny GGUF, batch width 4, 2 drafts per call),
    SIGKILLed while calls are in flight, then resumed: its scores equal an uninterrupted run's, and
    the cache holds each draft once."""
    import os
    import signal
    import time

    import yaml
    from smoke_runs import SMOKE, arte, arte_bg

    from common.records import RecordLog

    config = yaml.safe_load(SMOKE.read_text())  # stage commands take other sections from the file
    config["student"] = {
        "name": "llama_cpp",
        "model": str(tiny_model.gguf_path),
        "batch_size": 12,
        "threads": 1,
    }
    config["prefset"] = {**config["prefset"], "extra_respondents": [], "k": 6}
    config["score_max_new_tokens"] = 64
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))

    def smoke(run, *flags):
        return ["--config", str(tmp_path / "config.yaml"), "--run_dir", str(run), *flags]

    runs = {name: tmp_path / name for name in ("reference", "killed")}
    for run in runs.values():
        for stage in ("elicit", "prefset"):
            done = arte(stage, *smoke(run))
            assert done.returncode == 0, done.stderr[-2000:]
    done = arte("score", *smoke(runs["reference"]))
    assert done.returncode == 0, done.stderr[-2000:]
    total = len(RecordLog(runs["reference"] / "score" / "cache.jsonl").read())

    cache = runs["killed"] / "score" / "cache.jsonl"
    proc = arte_bg("score", *smoke(runs["killed"]))
    deadline = time.time() + 120
    while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 4):
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = len(RecordLog(cache).read())
    assert 4 <= before < total, (before, total)  # killed half-way, between or during calls

    done = arte("score", *smoke(runs["killed"]))
    assert done.returncode == 0, done.stderr[-2000:]
    keys = [r["key"] for r in RecordLog(cache)]
    assert len(keys) == len(set(keys)) == total
    want = RecordLog(runs["reference"] / "score" / "scores.jsonl").read()
    assert RecordLog(runs["killed"] / "score" / "scores.jsonl").read() == want


def test_bench_runtime_times_parallel_sequences(tiny_model):
    """edge_bench's llama.cpp runtime: N distinct sequences decoded together, every one its full
    budget, with aggregate figures that add up."""
    from edge_bench.runtimes.llama_cpp import LlamaCppRuntime

    rt = LlamaCppRuntime(tiny_model.gguf_path, threads=1, n_ctx=128)
    try:
        got = rt.parallel_decode(list(range(5, 25)), n_decode=6, sequences=3)
    finally:
        rt.close()
    assert (got["sequences"], got["prompt_tokens"], got["decode_steps"]) == (3, 20, 6)
    assert got["tokens_per_s"] * got["seconds"] == pytest.approx(18, rel=0.01)
    assert got["decode_tokens_per_s"] > got["tokens_per_s"] > 0  # prefill excluded from the former
