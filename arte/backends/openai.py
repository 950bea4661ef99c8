"""`openai`: any OpenAI-compatible server (vLLM, llama.cpp, Ollama, a hosted API) behind `Backend`.

Requests go to `{base_url}/completions` (the prompt as is), or `{base_url}/chat/completions` with
`chat: true` (the prompt as one user turn; the server applies its chat template).

- Concurrency: the prompts of one `generate` call go out through a pool of `max_concurrency` threads
  and come back in input order. A stage hands the backend one batch and appends its records once it
  returns, so a killed run loses at most the batch in flight and never asks again for a finished one.
- Failures: 429, 408, 5xx, timeouts and connection errors are retried `max_retries` times with
  exponential backoff and jitter (a `Retry-After` header is honoured); then a `UserError` names the URL
  and the last status. Other 4xx fail at once with the server's message.
- The API key is read from the environment variable *named* by `api_key_env` and sent as a bearer
  token. Only the variable's name is in the config (and so in manifest.json); the key is in no log
  line, error message or file.
- Stop strings: servers cut the text *before* the stop string and say only finish_reason "stop",
  which an end-of-sequence token also gives. The backend contract wants the stop string in the text,
  so a completion that ended with "stop" is followed by a probe: a greedy request for a few tokens
  after prompt + text; the stop string the probe starts with is the one that was cut (none: the
  model ended its turn). The probe reuses the server's prefix cache, so it costs a few decode steps.
  It is exact for greedy decoding unless the stop string began inside the last token (rare: the
  text then ends mid-token and the probe sees a different tokenization). Servers that keep the stop
  string (vLLM with `extra_body: {include_stop_str_in_output: true}`) need no probe. With `chat: true`
  a turn cannot be continued, so stops are applied here: the server is not told about them and the
  text is cut after the first stop string (the turn usually ends soon after it anyway).
- Sampling: temperature 0 is greedy; the per-prompt seed follows `arte.backends.decoding.prompt_seed`.
  Engine defaults differ (llama-cpp-python's server applies repeat_penalty 1.1, top_k 40 and min_p
  0.05 unless told otherwise): `extra_body` passes engine-specific fields.
- Log-likelihoods: `echo: true, logprobs: 1, max_tokens: 1` on completions; the continuation's tokens
  are found by their text offsets. Servers without prompt log-probs, and llama-cpp-python's server on
  models without a BOS token (its echoed log-probs are then shifted by one position, which is
  detected), raise NotImplementedError.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from arte.backends import BackendConfig
from arte.backends.base import Generation, SamplingParams
from arte.backends.decoding import find_stop, prompt_seed
from common.errors import UserError, missing_dependency
from common.redact import redact_url

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 60.0
"""Longest wait between two attempts (also caps a server's Retry-After)."""
PROBE_MAX_TOKENS = 64
"""Token budget of a stop-string probe (a token is at least one byte, so len(stop in bytes) suffices)."""
ECHO_CHECK_TEXT = "1, 2, 3, 4, 5,"
"""Scored once to check that a server's echoed log-probs line up with the tokens."""


def is_retryable(status: int) -> bool:
    """Rate limits, request timeouts and server errors are worth retrying; other 4xx are not."""
    return status in (408, 429) or status >= 500


def backoff_seconds(retry: int, base: float, retry_after: str | None = None) -> float:
    """Wait before retry number `retry` (1, 2, ...): the server's Retry-After if it gave one, else
    base * 2**(retry-1) with "equal jitter" (half fixed, half random), capped at MAX_BACKOFF_S."""
    if retry_after:
        with contextlib.suppress(ValueError):
            return min(MAX_BACKOFF_S, max(0.0, float(retry_after)))
    delay = min(MAX_BACKOFF_S, base * 2 ** (retry - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class RequestRefused(UserError):
    """The server answered a request with a 4xx other than 408/429: retrying would not help."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class OpenAIBackend:
    """A model behind an OpenAI-compatible HTTP endpoint (see module docstring)."""

    name = "openai"

    def __init__(self, cfg: BackendConfig):
        try:
            import httpx
        except ImportError as e:
            raise missing_dependency("httpx", "httpx", "backend openai") from e
        if not cfg.base_url:
            raise UserError(
                "backend openai needs base_url, the server's API root (e.g. --teacher.base_url "
                "http://127.0.0.1:8000/v1)"
            )
        self._httpx = httpx
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        key = os.environ.get(cfg.api_key_env, "") if cfg.api_key_env else ""
        self._secret = key  # only for scrubbing server messages; never logged or stored
        self._client = httpx.Client(
            headers={"Authorization": f"Bearer {key}"} if key else {},
            timeout=httpx.Timeout(cfg.timeout_s),
            limits=httpx.Limits(max_connections=cfg.max_concurrency),
        )
        self._pool = ThreadPoolExecutor(cfg.max_concurrency, thread_name_prefix="arte-openai")
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "retries": 0, "probes": 0, "in_flight": 0, "max_in_flight": 0}
        """Counters: HTTP attempts, retries, stop-string probes, and requests in flight (now, at most)."""
        self._echo_checked = False

    # ---- HTTP ---------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    @contextlib.contextmanager
    def _counted(self):
        with self._lock:
            self.stats["requests"] += 1
            self.stats["in_flight"] += 1
            self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])
        try:
            yield
        finally:
            with self._lock:
                self.stats["in_flight"] -= 1

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to `{base_url}{path}` with retries; the decoded JSON answer."""
        url, httpx = self.base_url + path, self._httpx
        shown = redact_url(url)  # a key in the URL's user:password part is never printed
        last, retry_after = "no answer", None
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                wait = backoff_seconds(attempt, self.cfg.retry_backoff_s, retry_after)
                log.warning(
                    "openai: POST %s: %s; retry %d/%d in %.1f s",
                    shown,
                    last,
                    attempt,
                    self.cfg.max_retries,
                    wait,
                )
                with self._lock:
                    self.stats["retries"] += 1
                time.sleep(wait)
            retry_after = None
            try:
                with self._counted():
                    response = self._client.post(url, json=body)
            except httpx.TimeoutException:
                last = f"no answer within {self.cfg.timeout_s:g} s (timeout_s)"
                continue
            except httpx.TransportError as e:
                last = f"connection failed ({type(e).__name__})"
                continue
            if response.is_success:
                return self._decode(response, shown)
            detail = self._scrub(response.text[:300])
            last = f"HTTP {response.status_code} {detail!r}"
            if is_retryable(response.status_code):
                retry_after = response.headers.get("retry-after")
                continue
            raise RequestRefused(self._refusal(shown, response.status_code, detail), response.status_code)
        raise UserError(
            f"backend openai: POST {shown} failed {self.cfg.max_retries + 1} times; last: {last}. Check the "
            "server (and its log), or raise --max_retries / --timeout_s; finished records are kept, so "
            "re-running the same command resumes."
        )

    def _decode(self, response, url: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise UserError(
                f"backend openai: {url} answered with non-JSON: {response.text[:200]!r}"
            ) from None
        if not isinstance(data, dict) or not data.get("choices"):
            raise UserError(f"backend openai: {url} answered without choices: {self._scrub(str(data)[:300])}")
        return data

    def _refusal(self, url: str, status: int, detail: str) -> str:
        hint = ""
        if status in (401, 403):
            have = "is set" if self._secret else "is empty or unset"
            hint = f" The API key comes from ${self.cfg.api_key_env} (--api_key_env), which {have}."
        elif status == 404:
            hint = (
                f" Is base_url the API root ending in /v1, and does the server know model {self.cfg.model!r}?"
            )
        return f"backend openai: POST {url}: HTTP {status} {detail!r}.{hint}"

    def _map(self, fn: Callable[[int], Any], n: int) -> list[Any]:
        """fn(0..n-1) on the pool, results in order; on the first error the rest is cancelled."""
        futures = [self._pool.submit(fn, i) for i in range(n)]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    # ---- generation ---------------------------------------------------------------------------

    def _sampling(self, params: SamplingParams, seed: int, max_tokens: int) -> dict[str, Any]:
        greedy = params.temperature <= 0
        return {
            "model": self.cfg.model,
            "max_tokens": max_tokens,
            "temperature": 0.0 if greedy else params.temperature,
            "top_p": 1.0 if greedy else params.top_p,
            "seed": seed % 0xFFFFFFFF,
            "n": 1,
            **self.cfg.extra_body,
        }

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        prompts = list(prompts)
        return self._map(
            lambda i: self._generate_one(prompts[i], params, prompt_seed(params, i)), len(prompts)
        )

    def _generate_one(self, prompt: str, params: SamplingParams, seed: int) -> Generation:
        if params.max_new_tokens <= 0:
            return Generation("", "length", 0, 0)
        body = self._sampling(params, seed, params.max_new_tokens)
        if self.cfg.chat:  # stops applied here: a chat turn cannot be probed (module docstring)
            data = self.post("/chat/completions", body | {"messages": [{"role": "user", "content": prompt}]})
            choice = data["choices"][0]
            text = (choice.get("message") or {}).get("content") or ""
        else:
            data = self.post(
                "/completions",
                body | {"prompt": prompt, **({"stop": list(params.stop)} if params.stop else {})},
            )
            choice = data["choices"][0]
            text = choice.get("text") or ""
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        cut = find_stop(text, params.stop)
        if cut is not None:  # the server kept the stop string (or, chat, was not told about it)
            text, finish = text[:cut], "stop"
        elif finish == "stop" and params.stop and not self.cfg.chat:
            text += self.stop_that_ended(prompt, text, params.stop, seed)
        usage = data.get("usage") or {}
        return Generation(
            text, finish, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        )

    def stop_that_ended(self, prompt: str, text: str, stops: Sequence[str], seed: int) -> str:
        """The stop string the server cut after `text`, or "" if the model ended by itself.

        A greedy probe continues prompt + text[:b], where b is the last whitespace in the text: a
        token boundary for BPE and SentencePiece vocabularies, so the probe sees the tokens the model
        saw even when the stop string began inside the last token. The probe must give back text[b:]
        and then a stop string (the shortest, if several fit). If it diverges, a probe right after the
        text decides."""
        b = max(0, *(text.rfind(c) for c in " \n\t"))  # no whitespace: from the start of the text
        if len(text[b:].encode()) > PROBE_MAX_TOKENS:
            b = len(text)
        for start in dict.fromkeys((b, len(text))):
            tail = text[start:]
            budget = min(PROBE_MAX_TOKENS * 2, len(tail.encode()) + max(len(s.encode()) for s in stops))
            body = self._sampling(SamplingParams(temperature=0.0), seed, budget)
            with self._lock:
                self.stats["probes"] += 1
            after = self.post("/completions", body | {"prompt": prompt + text[:start]})["choices"][0].get(
                "text"
            )
            after = after or ""
            if after.startswith(tail):
                matched = [s for s in stops if s and after[len(tail) :].startswith(s)]
                return min(matched, key=len) if matched else ""
        return ""

    # ---- scoring ------------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        if self.cfg.chat:
            raise NotImplementedError(
                "backend openai: log-likelihoods need the completions endpoint (echo + logprobs); "
                "chat completions have no prompt log-probabilities. Use chat: false."
            )
        requests = list(requests)
        return self._map(lambda i: self._loglikelihood_one(*requests[i]), len(requests))

    def _echo(self, text: str) -> tuple[str, list[str], list[int], list[float | None]]:
        """(echoed text, tokens, text offsets, log-probs) of `text` + one greedy token."""
        body = self._sampling(SamplingParams(temperature=0.0), 0, 1) | {
            "prompt": text,
            "echo": True,
            "logprobs": 1,
        }
        try:
            choice = self.post("/completions", body)["choices"][0]
        except RequestRefused as e:
            raise NotImplementedError(f"{e} (the server refuses echo + logprobs)") from e
        lp = choice.get("logprobs") or {}
        tokens, offsets, values = (
            lp.get("tokens") or [],
            lp.get("text_offset") or [],
            lp.get("token_logprobs") or [],
        )
        echoed = choice.get("text") or ""
        if not (tokens and len(tokens) == len(offsets) == len(values) and echoed.startswith(text)):
            raise NotImplementedError(self._no_echo_message())
        return echoed, tokens, offsets, values

    def _no_echo_message(self) -> str:
        return (
            f"backend openai: {redact_url(self.base_url)}/completions does not return a log-probability "
            "for every "
            "prompt token and the generated one (echo=true, logprobs=1). vLLM's server does; "
            "llama-cpp-python's does only for models that add a BOS token (otherwise its echoed "
            "log-probs are shifted by one position). Score with the hf or llama_cpp backend instead."
        )

    def check_echo_alignment(self) -> None:
        """Once per backend: the echoed tokens must cover the prompt *and* the generated token; a
        server that pairs each token with the next position's log-probs drops the generated one."""
        if self._echo_checked:
            return
        echoed, tokens, offsets, _ = self._echo(ECHO_CHECK_TEXT)
        if len(echoed) == len(ECHO_CHECK_TEXT) or offsets[-1] + len(tokens[-1]) < len(echoed):
            raise NotImplementedError(self._no_echo_message())
        self._echo_checked = True

    def _loglikelihood_one(self, context: str, continuation: str) -> float:
        if not context:
            raise UserError("backend openai: log-likelihood of a continuation needs a non-empty context")
        self.check_echo_alignment()
        whole = context + continuation
        echoed, tokens, offsets, values = self._echo(whole)
        ends = [*offsets[1:], offsets[-1] + len(tokens[-1])]
        if ends[-1] < len(whole):
            raise NotImplementedError(self._no_echo_message())
        total = 0.0
        for start, end, value in zip(offsets, ends, values):
            if end <= len(context) or start >= len(whole):
                continue  # a context token, or the generated one
            if value is None:
                raise UserError(f"backend openai: no log-probability for the first token of {whole[:60]!r}")
            total += value
        return total

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()
