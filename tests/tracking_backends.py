"""A stand-in for `load_backend` in tests: fake engines whose loads, closes and calls are counted."""

from __future__ import annotations

import hashlib

from arte.backends import Generation, load_backend


class EngineCrash(RuntimeError):
    """Raised by a tracked engine told to fail (a stand-in for a crash half-way)."""


class TrackedEngine:
    """The fake backend for `cfg`, reporting its generate calls and close to `factory`."""

    def __init__(self, cfg, factory: TrackingFactory):
        self.inner, self.cfg, self.factory = load_backend(cfg), cfg, factory
        self.calls: list[int] = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        crash = self.factory.crash
        if crash and crash[0] == self.cfg.model and len(self.calls) == crash[1]:
            raise EngineCrash(f"{self.cfg.model} crashed at call {len(self.calls)}")
        gens = self.inner.generate(prompts, params)
        share = self.factory.forget.get(self.cfg.model, 0.0)
        return [_forgotten(g) if _unit(self.cfg.model, p) < share else g for p, g in zip(prompts, gens)]

    def close(self):
        self.factory.alive -= 1
        self.factory.closed.append(self.cfg.model)
        self.inner.close()


class TrackingFactory:
    """Call it like `load_backend`: `loads` (models in load order), `alive` / `max_alive` (engines
    open at once), `closed`, `engines`; `crash=(model, n)` makes that model's n-th call raise;
    `forget={model: share}` makes that model fail a share of prompts of its own (a hash of model
    and prompt), so models differ question by question, not only in how many they get right."""

    def __init__(self, crash: tuple[str, int] | None = None, forget: dict[str, float] | None = None):
        self.crash, self.forget = crash, forget or {}
        self.loads: list[str] = []
        self.closed: list[str] = []
        self.engines: list[TrackedEngine] = []
        self.alive = self.max_alive = 0

    def __call__(self, cfg):
        self.loads.append(cfg.model)
        self.alive += 1
        self.max_alive = max(self.max_alive, self.alive)
        self.engines.append(TrackedEngine(cfg, self))
        return self.engines[-1]

    def prompts_asked(self, model: str) -> int:
        return sum(sum(e.calls) for e in self.engines if e.cfg.model == model)


def _unit(*parts: str) -> float:
    return int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest()[:8], "big") / 2**64


def _forgotten(gen: Generation) -> Generation:
    return Generation("I do not know.", "stop", gen.prompt_tokens, 4)
