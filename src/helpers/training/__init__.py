"""The training stage, in the order a run goes through it:

records     the prompt/completion pairs of three kinds (title only, with its record, no record)
trainer     the profile's SFTConfig and the SFTTrainer
statistics  what a run measures (time, memory, tokens, losses by kind), the loss curve, LoRA size, cost
adapter     Unsloth's model + LoRA, trained, saved with its fingerprint, retrained when stale (ensure_adapter)

Only ``adapter`` imports Unsloth (through helpers.models); the other three do not, so that a benchmark's plain
baseline trains with the same records, settings and measurement. ``import helpers.training`` imports none of them:
``helpers.training.adapter`` (or any part) is imported on first use.
"""
from __future__ import annotations

import importlib

PARTS = ("records", "trainer", "statistics", "adapter")


def __getattr__(name: str):
    if name in PARTS:
        return importlib.import_module(f"helpers.training.{name}")
    raise AttributeError(f"module 'helpers.training' has no attribute {name!r}")


__all__ = list(PARTS)
