"""Helper package of the course. One module per pipeline stage, in pipeline order:

config → data → prompts → models, embeddings → training (records, trainer, statistics, adapter) → retrieval →
evaluation → serving (the three systems behind an OpenAI-compatible HTTP service), then lab (student versions and
grading of the notebooks themselves). Beside them, used by any stage: quiet (named noise), files (atomic writes),
display (figures and tables in notebooks); and synthetic and facts, the sample's facts and how an answer is read.

``import helpers`` imports nothing else and sets nothing: a stage is imported on first use (``helpers.data``,
``helpers.models`` ...), and the environment the libraries read is set by the profile that needs it
(``helpers.config.active_profile()``, every notebook's first cell; see ``helpers.config.prepare_environment``).
"""
from __future__ import annotations

import importlib

STAGES = ("config", "assets", "synthetic", "facts", "data", "prompts", "models", "embeddings", "training", "retrieval",
          "evaluation", "serving", "lab", "quiet", "display", "files")


def __getattr__(name: str):
    if name in STAGES:
        return importlib.import_module(f"helpers.{name}")
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")


__all__ = list(STAGES)
