"""A backend wrapper for tests that counts how the stages call it."""

from __future__ import annotations

from arte.backends import BackendConfig, load_backend


class CountingBackend:
    """The fake backend (`model` names the simulated model); `calls` holds the prompts per call."""

    def __init__(self, model: str):
        self.inner, self.calls = load_backend(BackendConfig(name="fake", model=model)), []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        return self.inner.generate(prompts, params)
