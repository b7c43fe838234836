"""Helper package of the course. One module per pipeline stage, in pipeline order:

config → data → prompts → models → training → retrieval → evaluation

``import helpers`` is cheap; stages import on first use (``helpers.data``, ``helpers.models`` ...).
"""
from __future__ import annotations

import importlib
import os

# Set before any library is imported: no telemetry, no hub calls on the offline default, no tokenizer threads
# fighting the 2 training cores. The gpu profile downloads its model, so offline mode is only a default.
for _name, _value in {
    "ANONYMIZED_TELEMETRY": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "UNSLOTH_DISABLE_STATISTICS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "PYTHONWARNINGS": "ignore",
}.items():
    os.environ.setdefault(_name, _value)
if os.environ.get("COURSE_PROFILE", "cpu") != "gpu":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

STAGES = ("config", "assets", "synthetic", "data", "prompts", "models", "training", "retrieval", "evaluation", "quiet")


def __getattr__(name: str):
    if name in STAGES:
        return importlib.import_module(f"helpers.{name}")
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")


__all__ = list(STAGES)
