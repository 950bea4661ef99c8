"""A false alarm of transformers 4.57.3-4.57.x silenced: every local model directory saved by those
versions gets "The tokenizer you are loading from 'DIR' with an incorrect regex pattern ... This will
lead to incorrect tokenization", whatever the model (the check reads only the saving version). The
regex it means is Mistral's; for any other model type the warning is dropped. Our own exports prove
their tokenizers by id parity (`export.onnx_verify.tokenizer_parity`).

Installed on import of `common` (no transformers import): a filter on the logger transformers uses.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

LOGGER = "transformers.tokenization_utils_base"
MISTRAL_TYPES = {"mistral", "mistral3", "voxtral", "ministral", "pixtral"}
"""The model types the warning is about (transformers' own list)."""
_PATH = re.compile(r"loading from '(.+?)' with an incorrect regex pattern")


def model_type(directory: str) -> str | None:
    try:
        return json.loads((Path(directory) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


class MistralRegexFalseAlarm(logging.Filter):
    """Drops the warning for a directory whose config names a non-Mistral model type."""

    def filter(self, record: logging.LogRecord) -> bool:
        m = _PATH.search(record.getMessage())
        if m is None:
            return True
        kind = model_type(m.group(1))
        return kind is None or kind in MISTRAL_TYPES


def install() -> None:
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(f, MistralRegexFalseAlarm) for f in logger.filters):
        logger.addFilter(MistralRegexFalseAlarm())
