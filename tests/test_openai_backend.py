"""The `openai` backend against a real OpenAI-compatible server that these tests start on 127.0.0.1:
llama-cpp-python's, started through our launcher (`python -m common.llama_cpp_server`, which applies
the extra-buffer-type decision of common/llama_cpp_loader.py), as a subprocess.

Fast tests use the tiny random Llama GGUF: greedy text equal to the llama_cpp backend's, stop
strings, the bounded pool, retries (through a small local proxy that answers 429/5xx/slowly before
it forwards), the API key, log-likelihoods. Slow tests use the embedded SmolLM2 GGUF: stop strings
on a real model, a stage killed with its server and resumed, and a whole smoke run with
teacher = openai and student = llama_cpp.

Reference facts the assertions rely on (llama-cpp-python 0.3.36):
- The server detokenizes with errors="ignore", the llama_cpp backend with errors="replace": where a
  random model emits a broken UTF-8 sequence, the backend's text has U+FFFD and the server's has
  nothing; texts are compared with U+FFFD removed.
- The tiny random model's logits are nearly tied (top-2 within 1e-4), and llama.cpp's logits for a
  prompt evaluated in one batch and token by token differ by ~1e-3, so a greedy continuation can
  depend on the server's KV-cache history. Prompts here start with different tokens, so every
  request is evaluated from scratch, as in the reference backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from arte.backends import BackendConfig
from arte.backends.base import SamplingParams
from arte.stages import STAGE_NAMES
from common.errors import UserError

httpx = pytest.importorskip("httpx")
pytest.importorskip("llama_cpp")
for _module in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
    pytest.importorskip(_module, reason="the llama.cpp server needs: pip install 'arte-edge[server]'")

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
API_KEY_ENV = "ARTE_TEST_OPENAI_KEY"
API_KEY = "sk-arte-test-" + secrets.token_hex(12)
PLAIN = {"repeat_penalty": 1.0}  # llama-cpp-python's server defaults to 1.1; the backends use none
PROMPTS = [  # each starts with a different token: every request is evaluated from scratch
    "Question: 1 + 1 =",
    "The capital of France is",
    "Hello",
    "<ans>42",
    "Once upon a time",
    "def f(x):",
    "Zebra crossing",
    "Why is the sky blue?",
    "Mary had a little lamb",
    "1, 2, 3,",
    "import numpy as np",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`python -m common.llama_cpp_server` (llama_cpp.server with our llama.cpp settings) serving one
    GGUF on 127.0.0.1:port (1 thread)."""

    def __init__(self, model: Path, port: int, log: Path, *args: str, api_key: str | None = None):
        self.model, self.port, self.log, self.args, self.api_key = model, port, log, args, api_key
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120.0) -> LlamaServer:
        cmd = [
            sys.executable,
            "-m",
            "common.llama_cpp_server",
            "--model",
            str(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_threads",
            "1",
            "--n_threads_batch",
            "1",
            "--n_ctx",
            "2048",
            *self.args,
            *(["--api_key", self.api_key] if self.api_key else []),
        ]
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/models", headers=headers, timeout=2).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama.cpp server not healthy within {timeout} s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class Proxy:
    """A local HTTP server in front of `upstream` that records every POST body and header, counts
    requests in flight, and first answers with the scripted `faults` (an HTTP status, or "slow":
    wait `slow_s` before forwarding) before it forwards."""

    def __init__(self, upstream: str, *, port: int = 0, faults=(), records: list | None = None, slow_s=1.0):
        self.upstream, self.faults, self.slow_s = upstream.rstrip("/"), list(faults), slow_s
        self.records = records if records is not None else []
        self.lock, self.in_flight, self.max_in_flight = threading.Lock(), 0, 0
        self.client = httpx.Client(timeout=300)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with proxy.lock:
                    proxy.records.append(
                        {
                            "path": self.path,
                            "body": json.loads(body or b"{}"),
                            "authorization": self.headers.get("authorization"),
                        }
                    )
                    fault = proxy.faults.pop(0) if proxy.faults else None
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                try:
                    if isinstance(fault, int):
                        answer = (fault, b'{"error": "scripted fault"}', {"Retry-After": "0"})
                    else:
                        if fault == "slow":
                            time.sleep(proxy.slow_s)
                        answer = self._forward(body)
                finally:
                    with proxy.lock:  # before answering: the client may send its next request at once
                        proxy.in_flight -= 1
                self._answer(*answer)

            def _forward(self, body: bytes) -> tuple:
                path = self.path.removeprefix("/v1")
                headers = {k: v for k, v in self.headers.items() if k.lower() == "authorization"}
                try:
                    r = proxy.client.post(
                        proxy.upstream + path,
                        content=body,
                        headers={**headers, "content-type": "application/json"},
                    )
                except httpx.HTTPError:
                    return 502, b'{"error": "upstream down"}', {}
                return r.status_code, r.content, {}

            def _answer(self, status: int, payload: bytes, headers: dict | None = None):
                with contextlib.suppress(OSError):
                    self.send_response(status)
                    for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def posts(self) -> int:
        return len(self.records)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def openai_config(url: str, **kw) -> BackendConfig:
    kw.setdefault("extra_body", PLAIN)
    return BackendConfig(name="openai", model="tiny", base_url=url, api_key_env=API_KEY_ENV, **kw)


def make_openai(url: str, **kw):
    from arte.backends.openai import OpenAIBackend

    return OpenAIBackend(openai_config(url, **kw))


def make_llama_cpp(gguf: Path):
    from arte.backends.llama_cpp import LlamaCppBackend

    # flash attention off, as llama-cpp-python's server has it: greedy text the same bit for bit
    cfg = BackendConfig(name="llama_cpp", model=str(gguf), threads=1, n_ctx=2048, flash_attn=False)
    return LlamaCppBackend(cfg)


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(API_KEY_ENV, API_KEY)


@pytest.fixture(scope="module")
def tiny_server(tiny_model, module_tmp):
    """The tiny random Llama behind a server that wants API_KEY."""
    server = LlamaServer(
        tiny_model.gguf_path, free_port(), module_tmp.mktemp("srv") / "tiny.log", api_key=API_KEY
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reference(tiny_model):
    backend = make_llama_cpp(tiny_model.gguf_path)
    yield backend
    backend.close()


def greedy_one_by_one(backend, prompts, params):
    """The reference: one prompt per call, so each starts from a fresh KV state like the server."""
    return [backend.generate([p], params)[0] for p in prompts]


# ---- generation against the llama_cpp backend ------------------------------------------------------


def test_server_was_started_with_the_extra_bufts_decision(tiny_server):
    from common.llama_cpp_loader import decide_extra_bufts

    want = decide_extra_bufts()
    assert (
        f"llama_cpp_server: use_extra_bufts={want.use_extra_bufts} ({want.source}"
        in tiny_server.log.read_text()
    )


def test_greedy_generation_equals_the_llama_cpp_backend(tiny_server, reference):
    params = SamplingParams(max_new_tokens=24)
    want = greedy_one_by_one(reference, PROMPTS, params)
    backend = make_openai(tiny_server.url, max_concurrency=4)
    got = backend.generate(PROMPTS, params)  # concurrently, answers back in input order
    for w, g in zip(want, got, strict=True):
        assert g.text == w.text.replace("\ufffd", "")  # see module docstring (UTF-8 error handling)
        assert (g.finish_reason, g.prompt_tokens, g.completion_tokens) == (
            w.finish_reason,
            w.prompt_tokens,
            w.completion_tokens,
        )
    assert backend.stats["probes"] == 0 and backend.stats["retries"] == 0
    backend.close()


def test_stop_strings_are_kept_in_the_text_like_the_llama_cpp_backend(tiny_server, reference):
    """Stops at word boundaries, on completions whose tokens are the tokenizer's own tokenization of
    their text. (A random model may emit e.g. "sole" + "te" where the tokenizer writes "sol" + "ete";
    the stop-string probe re-tokenizes the text, so it cannot retrace such a completion. A trained
    model practically never does this: the SmolLM2 test below has no such filter.)"""
    greedy = greedy_one_by_one(reference, PROMPTS, SamplingParams(max_new_tokens=24))
    backend = make_openai(tiny_server.url)
    checked = 0
    for prompt, g in zip(PROMPTS, greedy):
        words = [i for i, c in enumerate(g.text) if c == " " and i > 0]
        canonical = len(reference.encode(prompt + g.text)) == g.prompt_tokens + g.completion_tokens
        if "\ufffd" in g.text or len(words) < 3 or not canonical:
            continue  # the probe re-tokenizes the text: see the test's docstring
        stop = g.text[words[1] : words[2]]  # the third word, with its leading space (a token boundary)
        params = SamplingParams(max_new_tokens=24, stop=(stop, "</never>"))
        want = reference.generate([prompt], params)[0]
        got = backend.generate([prompt], params)[0]
        assert got.text.endswith(stop) and got.finish_reason == want.finish_reason == "stop"
        assert got.text == want.text and got.completion_tokens == want.completion_tokens
        checked += 1
    assert checked >= 4 and backend.stats["probes"] >= checked  # the server cut the stop; a probe found it
    never = backend.generate([PROMPTS[0]], SamplingParams(max_new_tokens=24, stop=("</never>",)))[0]
    assert never.finish_reason == "length" and never.text == greedy[0].text.replace("\ufffd", "")
    backend.close()


def test_stop_probe_finds_which_stop_was_cut_and_none_after_end_of_sequence(monkeypatch):
    """The probe logic on scripted answers: a stop that began inside the last token (the probe from
    the last whitespace gives it back), several stops, and an end-of-sequence (no stop appended)."""
    from arte.backends.openai import OpenAIBackend

    backend = OpenAIBackend(openai_config("http://127.0.0.1:9/v1"))
    answers = iter([" 42</ans> more", " 42", " is 4", "\nQuestion"])
    monkeypatch.setattr(backend, "post", lambda path, body: {"choices": [{"text": next(answers)}]})
    # The probe continues from the last whitespace: it must give back " 42", then a stop string.
    assert backend.stop_that_ended("Q: x", "The answer is 42", ["</ans>", "</never>"], 0) == "</ans>"
    assert backend.stop_that_ended("Q: x", "The answer is 42", ["</ans>"], 0) == ""  # the model ended
    # That probe diverges (" is 4" is not " 4..."): a probe right after the text decides; the
    # shortest of the stops it starts with is the one the server matched first.
    assert backend.stop_that_ended("Q: x", "The answer is 4", ["\nQ", "\n"], 0) == "\n"
    assert backend.stats["probes"] == 4
    backend.close()


def test_chat_completions_match_the_llama_cpp_backend_with_chat(tiny_server, tiny_model):
    """chat: true: the server applies the GGUF's chat template like the llama_cpp backend does; stop
    strings are applied here (the server is not told), so the server's token count runs on."""
    from arte.backends.llama_cpp import LlamaCppBackend

    reference = LlamaCppBackend(
        BackendConfig(name="llama_cpp", model=str(tiny_model.gguf_path), threads=1, n_ctx=2048, chat=True)
    )
    backend = make_openai(tiny_server.url, chat=True)
    for prompt in ["Hello", "What is 2 + 2?", "Tell me a story"]:  # one at a time, same order on both
        want = reference.generate([prompt], SamplingParams(max_new_tokens=16))[0]
        assert backend.generate([prompt], SamplingParams(max_new_tokens=16))[0] == want
        stop = " " + want.text.split(" ")[2]
        params = SamplingParams(max_new_tokens=16, stop=(stop,))
        got = backend.generate([prompt], params)[0]
        assert got.text == reference.generate([prompt], params)[0].text and got.text.endswith(stop)
        assert got.finish_reason == "stop" and got.completion_tokens == 16
    assert backend.stats["probes"] == 0  # a chat turn is not probed
    reference.close()
    backend.close()


# ---- the pool, retries, timeouts, the API key --------------------------------------------------------


def test_requests_in_flight_never_exceed_max_concurrency(tiny_server):
    proxy = Proxy(tiny_server.url)
    backend = make_openai(proxy.url, max_concurrency=3)
    prompts = [f"{n} green bottles hanging on the wall" for n in range(12)]
    gens = backend.generate(prompts, SamplingParams(max_new_tokens=6))
    assert [g.prompt_tokens > 0 for g in gens] == [True] * 12
    assert sorted(r["body"]["prompt"] for r in proxy.records) == sorted(prompts)  # one request each
    assert 2 <= proxy.max_in_flight <= 3 and 2 <= backend.stats["max_in_flight"] <= 3  # a pool, bounded
    backend.close()
    proxy.stop()


def test_429_twice_then_success_is_retried_with_backoff(tiny_server, reference):
    proxy = Proxy(tiny_server.url, faults=[429, 429])
    backend = make_openai(proxy.url, retry_backoff_s=0.01)
    got = backend.generate([PROMPTS[1]], SamplingParams(max_new_tokens=8))[0]
    want = reference.generate([PROMPTS[1]], SamplingParams(max_new_tokens=8))[0]
    assert got.text == want.text.replace("\ufffd", "")
    assert backend.stats["retries"] == 2 and proxy.posts == 3
    assert all(r["body"] == proxy.records[0]["body"] for r in proxy.records)  # the same request again
    backend.close()
    proxy.stop()


def test_5xx_and_timeouts_are_retried_other_4xx_are_not(tiny_server):
    proxy = Proxy(tiny_server.url, faults=[503, "slow", 500], slow_s=4.0)
    backend = make_openai(proxy.url, retry_backoff_s=0.01, timeout_s=2.0)
    assert backend.generate(["Hello"], SamplingParams(max_new_tokens=4))[0].completion_tokens == 4
    assert backend.stats["retries"] == 3 and proxy.posts == 4
    proxy.faults = [400]
    with pytest.raises(UserError, match="HTTP 400"):
        backend.generate(["Hello"], SamplingParams(max_new_tokens=4))
    assert proxy.posts == 5  # a bad request is not repeated
    backend.close()
    proxy.stop()


def test_retries_give_up_with_an_error_naming_url_and_last_status(tiny_server):
    proxy = Proxy(tiny_server.url, faults=[502] * 10)
    backend = make_openai(proxy.url, retry_backoff_s=0.01, max_retries=2)
    with pytest.raises(UserError) as err:
        backend.generate(["Hello"], SamplingParams(max_new_tokens=4))
    assert f"{proxy.url}/completions failed 3 times" in str(err.value) and "HTTP 502" in str(err.value)
    assert proxy.posts == 3
    backend.close()
    proxy.stop()
    nothing = make_openai(f"http://127.0.0.1:{free_port()}/v1", retry_backoff_s=0.01, max_retries=1)
    with pytest.raises(UserError, match="failed 2 times; last: connection failed"):
        nothing.generate(["Hello"], SamplingParams(max_new_tokens=4))
    nothing.close()


def test_api_key_is_sent_but_never_logged_nor_in_errors(tiny_server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)  # httpx/httpcore debug logs included
    proxy = Proxy(tiny_server.url, faults=[429])
    backend = make_openai(proxy.url, retry_backoff_s=0.01)
    backend.generate(["Hello"], SamplingParams(max_new_tokens=4))
    assert {r["authorization"] for r in proxy.records} == {f"Bearer {API_KEY}"}
    assert "retry 1/" in caplog.text and API_KEY not in caplog.text
    assert API_KEY not in repr(backend.cfg) and API_KEY not in json.dumps(backend.stats)
    backend.close()
    monkeypatch.delenv(API_KEY_ENV)  # no key: the server says 401, the error names the variable
    keyless = make_openai(proxy.url)
    with pytest.raises(UserError) as err:
        keyless.generate(["Hello"], SamplingParams(max_new_tokens=4))
    assert "HTTP 401" in str(err.value) and f"${API_KEY_ENV}" in str(err.value) and "unset" in str(err.value)
    assert proxy.records[-1]["authorization"] is None
    monkeypatch.setenv(API_KEY_ENV, "sk-wrong-" + API_KEY[::-1])
    wrong = make_openai(proxy.url)
    with pytest.raises(UserError) as err:
        wrong.generate(["Hello"], SamplingParams(max_new_tokens=4))
    assert "HTTP 401" in str(err.value) and API_KEY[::-1] not in str(err.value) and "is set" in str(err.value)
    assert API_KEY not in caplog.text and API_KEY[::-1] not in caplog.text
    keyless.close()
    wrong.close()
    proxy.stop()


def test_run_directory_holds_the_key_variable_name_never_the_key(tiny_server, tmp_path):
    """The elicit stage through the server (the tiny random teacher writes no parsable question, so
    the stage ends with that error after its calls): manifest.json names the variable only."""
    from arte.pipeline import run_pipeline
    from arte.run_config import RunConfig
    from common.config import load_config

    cfg = load_config(
        RunConfig,
        SMOKE,
        {
            "run_dir": str(tmp_path / "run"),
            "tasks": "boolean_expressions",
            "elicit.m": "5",
            "elicit.max_calls_factor": "2",
            "elicit.question_max_new_tokens": "16",
        },
    )
    cfg = dataclasses.replace(cfg, teacher=openai_config(tiny_server.url))
    with pytest.raises(UserError, match="no parsable question"):
        run_pipeline(cfg, only=["elicit"])
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["config"]["teacher"]["api_key_env"] == API_KEY_ENV
    calls = [
        json.loads(line)
        for line in (tmp_path / "run" / "elicit" / "boolean_expressions.questions.jsonl").open()
    ]
    assert [c["call"] for c in calls] == [0, 1]  # one record per teacher call
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(errors="replace"), path


# ---- log-likelihoods ----------------------------------------------------------------------------------


def reference_loglikelihood(gguf: Path, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens | context) by llama.cpp directly, BOS forced on."""
    import numpy as np

    from common.llama_cpp_loader import open_llama
    from common.token_ids import common_prefix_len

    llm = open_llama(
        gguf,
        n_ctx=256,
        n_threads=1,
        logits_all=True,
        verbose=False,
        kv_overrides={"tokenizer.ggml.add_bos_token": True},
    )
    ctx = llm.tokenize(context.encode(), add_bos=True, special=True)
    whole = llm.tokenize((context + continuation).encode(), add_bos=True, special=True)
    n = common_prefix_len(ctx, whole)
    llm.eval(whole)
    logits = np.asarray(llm.scores[: len(whole)], dtype=np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    value = float(sum(logits[j - 1, whole[j]] - logz[j - 1] for j in range(n, len(whole))))
    llm.close()
    return value


def test_loglikelihood_from_echoed_logprobs(tiny_model, tiny_server, tmp_path):
    # The tiny model's GGUF adds no BOS: llama-cpp-python's echoed log-probs are then shifted by one
    # position, which the backend detects and refuses.
    backend = make_openai(tiny_server.url)
    with pytest.raises(NotImplementedError, match="BOS"):
        backend.loglikelihood([("Question: 1 + 1 =", " 2")])
    backend.close()
    bos = LlamaServer(
        tiny_model.gguf_path,
        free_port(),
        tmp_path / "bos.log",
        "--kv_overrides",
        "tokenizer.ggml.add_bos_token=bool:true",
    ).start()
    try:
        backend = make_openai(bos.url)
        requests = [
            ("Question: 1 + 1 =", " 2"),
            ("The capital of France is", " Paris, of course."),
            ("Hello", " world"),
        ]
        got = backend.loglikelihood(requests)
        want = [reference_loglikelihood(tiny_model.gguf_path, c, x) for c, x in requests]
        assert got == pytest.approx(want, abs=2e-2)  # batch vs token-by-token evaluation: ~1e-3
        backend.close()
    finally:
        bos.stop()
    chat = make_openai(tiny_server.url, chat=True)
    with pytest.raises(NotImplementedError, match="chat"):
        chat.loglikelihood([("a", "b")])
    chat.close()


def test_openai_backend_needs_base_url():
    from arte.backends import load_backend

    with pytest.raises(UserError, match="base_url"):
        load_backend(BackendConfig(name="openai"))
    with pytest.raises(ValueError, match="max_concurrency"):
        BackendConfig(name="openai", max_concurrency=0)


# ---- slow: a real model (SmolLM2), kill-and-restart, a whole smoke run ----------------------------------


@pytest.fixture(scope="module")
def smol_server(smollm2_gguf, module_tmp):
    server = LlamaServer(smollm2_gguf, free_port(), module_tmp.mktemp("srv") / "smol.log").start()
    yield server
    server.stop()


FEW_SHOT = (
    "Question: What is 2 + 3?\nAnswer: 2 + 3 = 5. <ans>5</ans>\n"
    "Question: What is 7 - 4?\nAnswer: 7 - 4 = 3. <ans>3</ans>\n"
    "Question: What is {q}?\nAnswer:"
)


@pytest.mark.slow
def test_real_model_stops_and_end_of_turn_match_the_llama_cpp_backend(smol_server, smollm2_gguf):
    reference = make_llama_cpp(smollm2_gguf)
    backend = make_openai(smol_server.url)
    questions = ["4 + 4", "9 - 1", "6 + 1"]  # few-shot prompts share a prefix: one at a time, in order
    prompts = [FEW_SHOT.format(q=q) for q in questions]
    # The model answers "The capital of France is Paris." and ends its turn (<|im_end|>).
    chatml = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    cases = [*((p, ("</ans>", "\nQuestion:")) for p in prompts), (chatml, ("Paris", "</never>"))]
    for prompt, stop in cases:
        params = SamplingParams(max_new_tokens=48, stop=stop)
        want, got = reference.generate([prompt], params)[0], backend.generate([prompt], params)[0]
        assert got == want and got.finish_reason == "stop" and got.text.endswith(stop[0])
    params = SamplingParams(max_new_tokens=48, stop=("</never>",))
    got = backend.generate([chatml], params)[0]
    assert got == reference.generate([chatml], params)[0]
    assert got.text == "The capital of France is Paris." and got.finish_reason == "stop"  # nothing appended
    reference.close()
    backend.close()


def _write_config(path: Path, run_dir: Path, url: str, **sections) -> Path:
    import yaml

    cfg = yaml.safe_load(SMOKE.read_text())
    cfg.update(run_dir=str(run_dir), tasks=["boolean_expressions"])
    cfg["teacher"] = {
        "name": "openai",
        "model": "smollm2-135m",
        "base_url": url,
        "api_key_env": API_KEY_ENV,
        "extra_body": PLAIN,
        "batch_size": 4,
        "max_concurrency": 2,
    }
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(cfg.get(key), dict) else value
    path.write_text(yaml.safe_dump(cfg))
    return path


def _arte(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "arte.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ.copy(),
    )


@pytest.mark.slow
def test_server_killed_mid_stage_then_restarted_resumes_without_loss_or_duplicates(smol_server, tmp_path):
    """elicit with SmolLM2 behind the server (through a counting proxy): kill the server and the proxy
    after the first rationale batch is recorded; the stage fails with a clear error; restart both on
    the same ports and re-run the same command: every call is recorded once, and no finished prompt
    is asked for again."""
    from arte.stages.elicit import strategy_prompt, teacher_example
    from common.tasks import load_tasks

    records: list = []
    proxy = Proxy(smol_server.url, records=records)
    run = tmp_path / "run"
    config = _write_config(
        tmp_path / "run.yaml",
        run,
        proxy.url,
        # batch_size 1: 4 prompts per call (BackendConfig.call_size), so 12 rationales take 3 calls
        teacher={"max_retries": 1, "retry_backoff_s": 0.1, "batch_size": 1},
        elicit={
            "m": 4,
            "strategies": ["expert", "rules", "plain"],
            "temperature": 0.8,
            "question_max_new_tokens": 160,
            "rationale_max_new_tokens": 48,
        },
    )
    rationales = run / "elicit" / "boolean_expressions.rationales.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "arte.cli", "elicit", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if rationales.exists() and len(rationales.read_text().splitlines()) >= 4:
            break
        time.sleep(0.02)
    smol_server.kill()
    proxy.stop()
    assert proc.wait(timeout=120) == 2
    err = proc.stderr.read()
    assert f"POST {proxy.url}/completions failed 2 times" in err and "connection failed" in err, err
    assert not (run / "elicit" / "done.json").exists()
    before = [json.loads(line) for line in rationales.open()]
    assert 4 <= len(before) < 12, "the kill should land between rationale batches"
    questions_before = (run / "elicit" / "boolean_expressions.questions.jsonl").read_text()
    n_before = len(records)

    smol_server.start()
    proxy = Proxy(smol_server.url, port=proxy.port, records=records)
    try:
        done = _arte("elicit", "--config", str(config))
        assert done.returncode == 0, done.stderr
    finally:
        proxy.stop()
    after = [json.loads(line) for line in rationales.open()]
    assert after[: len(before)] == before  # nothing lost or rewritten
    keys = [(r["qid"], r["strategy"]) for r in after]
    assert len(keys) == len(set(keys)) == 4 * 3  # nothing duplicated; m x n drafts
    assert (run / "elicit" / "boolean_expressions.questions.jsonl").read_text() == questions_before
    drafts = [json.loads(line) for line in (run / "elicit" / "drafts.jsonl").open()]
    assert (
        len(drafts) == 12
        and json.loads((run / "elicit" / "done.json").read_text())["counts"]["boolean_expressions"]["drafts"]
        == 12
    )
    # The server was not asked again for a finished rationale (nor for any brainstorm call).
    task = load_tasks(["boolean_expressions"], n_validation=12, n_test=8, seed=0)[0]
    questions = {d["qid"]: d["question"] for d in drafts}
    finished = {
        strategy_prompt(task, r["strategy"], questions[r["qid"]], teacher_example(task, True)) for r in before
    }
    asked_again = [r["body"]["prompt"] for r in records[n_before:] if r["body"].get("stop")]
    assert asked_again and not finished & set(asked_again)
    assert not [r for r in records[n_before:] if r["body"]["max_tokens"] == 160]
    for path in run.rglob("*"):
        if path.is_file():
            assert API_KEY not in path.read_text(errors="replace")


@pytest.mark.slow
def test_smoke_run_with_openai_teacher_and_llama_cpp_student(smol_server, tmp_path):
    """`arte run` end to end: teacher = SmolLM2 behind the server (openai), student = SmolLM2 on
    llama_cpp; DPO/SFT on the materialised SmolLM2; the aligned teacher on llama_cpp (its GGUF)."""
    run = tmp_path / "run"
    config = _write_config(
        tmp_path / "run.yaml",
        run,
        smol_server.url,
        student={"name": "llama_cpp", "model": "smollm2-135m", "threads": 1},
        elicit={
            "m": 4,
            "strategies": ["expert", "rules"],
            "temperature": 0.8,
            "question_max_new_tokens": 160,
            "rationale_max_new_tokens": 48,
        },
        prefset={"k": 6, "shots": [0, 1], "extra_respondents": [], "max_new_tokens": 24},
        score_max_new_tokens=24,
        align={"max_length": 384, "max_prompt_length": 256},
        aligned_teacher={"name": "llama_cpp", "model": "", "threads": 1},
        # A 135M aligned teacher answers "The answer is True." to almost everything (issue 11): with 4
        # candidates and the verifier on, some seeds left the tailored set empty. This test is about
        # the engines, so: 8 candidates, verifier off.
        generate={
            "questions": {
                "m": 8,
                "temperature": 0.8,
                "question_max_new_tokens": 160,
                "max_calls_factor": 6.0,
            },
            "rationale_max_new_tokens": 48,
            "verify": False,
            # The engines are under test, not the yield: 4 kept per teacher, no label check (this test
            # took 384 s in CI with smoke.yaml's 12 kept and 200 calls).
            "n_examples": 4,
            "max_calls": 100,
            "label_check": 0,
        },
        gain={"n_examples": 2},
        train={"max_length": 256, "learning_rate": 1.0e-5},
        evaluate={"shots": [0], "n_test": 4, "max_new_tokens": 24, "n_boot": 50},
    )
    done = _arte("run", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest["stages"]) == list(STAGE_NAMES)
    assert manifest["config"]["teacher"]["name"] == "openai"
    assert manifest["config"]["student"]["name"] == "llama_cpp"
    summary = json.loads((run / "summary.json").read_text())
    assert {row["variant"] for row in summary["accuracy"]["accuracy"]} == {"vanilla", "original", "arte"}
    for path in run.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".jsonl", ".md", ".yaml"):
            assert API_KEY not in path.read_text(errors="replace")
