"""Keep notebook output about the course, not about the libraries.

Library warnings carry timestamps, process ids and install paths, and their progress bars carry timings: they
would make every re-execution differ (nbval compares stderr too) and bury the story. The course shows its own
tqdm bars on its own long loops instead.
"""
from __future__ import annotations

import logging
import warnings

NOISY_LOGGERS = (
    "transformers",
    "datasets",
    "huggingface_hub",
    "sentence_transformers",
    "bitsandbytes",
    "bitsandbytes.backends.cpu.ops",
    "accelerate",
    "peft",
    "trl",
    "unsloth",
    "unsloth_zoo",
    "chromadb",
    "chromadb.telemetry",
    "httpx",
    "torch",
    "torchao",
)


def quiet_libraries() -> None:
    """Silence warnings and library progress bars; idempotent, cheap to call from every helper."""
    warnings.filterwarnings("ignore")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        import datasets

        datasets.utils.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except ImportError:
        pass


def progress(iterable=None, **kwargs):
    """A tqdm bar on stdout for the course's own long loops.

    stdout, not tqdm's default stderr: Jupyter may interleave the two streams in a different order on each run,
    and nbval compares that order. On one stream, only the bar's final state and its timings (sanitized) remain.
    """
    import sys

    from tqdm import tqdm

    kwargs.setdefault("file", sys.stdout)
    # A fixed bar width: with a width that adapts, the length of the rate text would change the bar itself.
    kwargs.setdefault("bar_format", "{l_bar}{bar:30}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]")
    return tqdm(iterable, **kwargs)
