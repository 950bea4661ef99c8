"""common.hf_warnings: transformers 4.57's Mistral-regex warning is dropped for other model types
and kept for Mistral's."""

from __future__ import annotations

import json
import logging

import common  # noqa: F401  (installs the filter)
from common.hf_warnings import LOGGER, MistralRegexFalseAlarm


def _warning(directory) -> logging.LogRecord:
    msg = (
        f"The tokenizer you are loading from '{directory}' with an incorrect regex pattern: https://x. "
        "This will lead to incorrect tokenization."
    )
    return logging.LogRecord(LOGGER, logging.WARNING, __file__, 1, msg, None, None)


def test_dropped_for_gemma_kept_for_mistral_and_unknown(tmp_path):
    gemma, mistral = tmp_path / "gemma", tmp_path / "mistral"
    for d, kind in ((gemma, "gemma3_text"), (mistral, "mistral")):
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": kind}))
    f = MistralRegexFalseAlarm()
    assert not f.filter(_warning(gemma))
    assert f.filter(_warning(mistral))
    assert f.filter(_warning(tmp_path / "missing"))  # cannot tell: keep it
    other = logging.LogRecord(LOGGER, logging.WARNING, __file__, 1, "something else", None, None)
    assert f.filter(other)


def test_installed_once_on_the_transformers_logger(tmp_path, caplog):
    from common import hf_warnings

    hf_warnings.install()
    logger = logging.getLogger(LOGGER)
    assert sum(isinstance(f, MistralRegexFalseAlarm) for f in logger.filters) == 1
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        logger.warning(_warning(tmp_path).getMessage())
        logger.warning("kept")
    assert [r.getMessage() for r in caplog.records] == ["kept"]
