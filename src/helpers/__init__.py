"""Helper package of the course. One module per pipeline stage, in pipeline order:

config → data → prompts → models → training → retrieval → evaluation → serving (the three systems behind an
OpenAI-compatible HTTP service), then lab (student versions and grading of the notebooks themselves)

``import helpers`` sets the environment the libraries read on import (and asks torch about CUDA); stages import on
first use (``helpers.data``, ``helpers.models`` ...).
"""
from __future__ import annotations

import importlib
import os

from helpers import config as _config
from helpers import quiet as _quiet

# Set before any library is imported: no telemetry, no library progress bars (the course shows its own), no
# tokenizer threads fighting the 2 training cores. Warnings are NOT muted here: a notebook silences only named,
# known-noisy messages (helpers.quiet), and scripts and tests see every warning.
for _name, _value in {
    "ANONYMIZED_TELEMETRY": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "UNSLOTH_DISABLE_STATISTICS": "1",
    **_config.CPU_NUMERICS,
}.items():
    os.environ.setdefault(_name, _value)
_quiet.silence_named_warnings_in_notebooks()
# Offline exactly when the active profile's models are local: the gpu profile downloads its model. Without
# COURSE_PROFILE this asks torch whether CUDA is there (about a second). An unknown COURSE_PROFILE is reported by
# active_profile(), where a notebook or script asks for its profile, not by every import.
try:
    if _config.profile_models_are_local():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
except ValueError:
    pass

STAGES = ("config", "assets", "synthetic", "data", "prompts", "models", "measurement", "training", "retrieval", "evaluation",
          "serving", "lab", "quiet")


def __getattr__(name: str):
    if name in STAGES:
        return importlib.import_module(f"helpers.{name}")
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")


__all__ = list(STAGES)
