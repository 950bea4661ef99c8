"""A deterministic fake runtime for fast tests of the harness, the reports and the plots.

Its logits are a pure function of (model seed, token sequence): a standard normal vector seeded by a
running BLAKE2b digest of the sequence, so prefill(a + b) equals prefill(a) then decode of b's tokens,
and two fakes with the same seed agree. `noise` adds a per-variant perturbation (seeded by
`variant_seed`) so a "quantized" fake can disagree with its "fp32" twin now and then. Sleeps make
the timing code measurable: `load_s` once, `prefill_s_per_token` per prompt token, `decode_s` per
decode call.

Answers with a known accuracy (`accuracy` set, for the statistics tests): when the prompt's last
question ("Question: ... Answer:") holds its answer in double brackets ("... [[cat]] ..."), the
fake writes `<ans>cat</ans>` if u < accuracy and `<ans>wrong-SEED</ans>` otherwise, where u is a
uniform number seeded by (question, `answer_seed`). Two fakes with the same `answer_seed` and
accuracies a <= b are nested (every question the first gets right, the second does too); different
seeds answer independently. The answer's bytes get a +8 logit on top of the random logits, so
`noise` still moves the distributions (KL) without changing the answer.

`path` may be a JSON file describing the variant, e.g.
    {"vocab_size": 256, "seed": 0, "noise": 0.3, "variant_seed": 1, "decode_s": 0.002,
     "size_bytes": 1000000, "bits_per_weight": 4.5}
Keys the runtime does not use stay in `.spec` for whoever reads the variant. Any other path (even
one that does not exist) gives the defaults; keyword arguments override both.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

DEFAULTS = {
    "vocab_size": 256,
    "seed": 0,
    "noise": 0.0,
    "variant_seed": 0,
    "load_s": 0.0,
    "prefill_s_per_token": 0.0,
    "decode_s": 0.0,
    "accuracy": None,
    "answer_seed": 0,
}
ANSWER_LOGIT = 8.0
"""Added to the logit of the scripted answer's next byte."""
_BRACKETS = re.compile(r"\[\[(.*?)\]\]")


class FakeRuntime:
    name = "fake"

    def __init__(self, path: Path | str = "fake", threads: int = 1, **overrides):
        path = Path(path)
        spec = dict(DEFAULTS)
        if path.suffix == ".json" and path.is_file():
            spec.update(json.loads(path.read_text()))
        spec.update(overrides)
        unknown_overrides = set(overrides) - set(DEFAULTS)
        if unknown_overrides:
            raise TypeError(f"FakeRuntime: unknown settings {sorted(unknown_overrides)}")
        self.spec, self.threads = spec, threads
        self.vocab_size = int(spec["vocab_size"])
        self.calls = {"prefill": 0, "decode": 0}
        self._digest: bytes | None = None
        self._script: bytes | None = None
        self._pos = 0
        time.sleep(float(spec["load_s"]))

    def _answer_script(self, ids: Sequence[int]) -> bytes | None:
        """The scripted answer to the prompt's last question, or None (see the module docstring)."""
        if self.spec["accuracy"] is None or self.vocab_size < 256:
            return None
        text = bytes(int(t) for t in ids if 0 <= t < 256).decode("utf-8", errors="replace")
        question = text.rsplit("Question: ", 1)[-1].split(" Answer:", 1)[0]
        m = _BRACKETS.search(question)
        if m is None:
            return None
        h = hashlib.blake2b(f"{self.spec['answer_seed']}:{question}".encode(), digest_size=8).digest()
        u = int.from_bytes(h, "little") / 2**64
        answer = m.group(1) if u < float(self.spec["accuracy"]) else f"wrong-{self.spec['answer_seed']}"
        return f"<ans>{answer}</ans>".encode()

    def _advance(self, digest: bytes, token: int) -> bytes:
        if not 0 <= token < self.vocab_size:
            raise ValueError(f"token id {token} outside the fake vocabulary of {self.vocab_size}")
        return hashlib.blake2b(digest + int(token).to_bytes(8, "little"), digest_size=16).digest()

    def _logits(self) -> np.ndarray:
        seed = int.from_bytes(self._digest, "little")
        logits = np.random.default_rng(seed).standard_normal(self.vocab_size)
        if self.spec["noise"]:
            rng = np.random.default_rng([seed, int(self.spec["variant_seed"])])
            logits += float(self.spec["noise"]) * rng.standard_normal(self.vocab_size)
        if self._script is not None and self._pos < len(self._script):
            logits[self._script[self._pos]] += ANSWER_LOGIT
        return logits.astype(np.float32)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        if not ids:
            raise ValueError("prefill needs at least one token id")
        self.calls["prefill"] += 1
        time.sleep(float(self.spec["prefill_s_per_token"]) * len(ids))
        digest = str(self.spec["seed"]).encode()
        for token in ids:
            digest = self._advance(digest, int(token))
        self._digest = digest
        self._script, self._pos = self._answer_script(ids), 0
        return self._logits()

    def decode(self, token: int) -> np.ndarray:
        if self._digest is None:
            raise RuntimeError("decode before prefill")
        self.calls["decode"] += 1
        time.sleep(float(self.spec["decode_s"]))
        self._digest = self._advance(self._digest, int(token))
        self._pos += 1
        return self._logits()

    def close(self) -> None:
        self._digest = None
