"""Named, known-noisy messages kept out of notebook output; every other message stays visible.

Nothing here mutes warnings wholesale. Each entry of ``KNOWN_NOISE`` names one message and why it is noise: it
either carries the machine's thread count (so a re-execution on another laptop would differ, and nbval compares
output) or it warns about something the course already handles. In scripts and tests, library warnings are shown
as the libraries emit them; only Unsloth's machine-specific banner lines are dropped there too, because they are
printed (not warned) on every load.

The course shows its own tqdm bars on its own long loops (``progress``) instead of the libraries' bars.
"""
from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import warnings
from collections.abc import Iterator

# Printed by Unsloth on import and on every model load; the thread count and CPU features differ between machines.
PRINTED_NOISE = {
    "Unsloth's CPU banner (CPU features, thread count)": re.compile(r"^Unsloth [\d.]+: no GPU found, training on CPU"),
    "Unsloth's CPU load line (thread count)": re.compile(r"^Unsloth \(CPU\): \w+ on \d+ CPU threads"),
}
# Logged or warned by libraries while the course runs in a notebook.
NOTEBOOK_NOISE = {
    # tqdm.auto (imported by datasets) looks for Jupyter widgets; the course's bars are text bars on purpose, and
    # the warning carries the install path, which differs between clones.
    "tqdm: IProgress not found (ipywidgets is not installed)": re.compile(r"IProgress not found"),
}


# Logged by a library's own logger in every process, notebook, script or test alike: logger name → named messages.
LOGGED_NOISE = {
    "bitsandbytes.backends.cpu.ops": {
        # Logged once, on import, and only on CPUs whose CPUID reports AVX512-BF16 (bitsandbytes' own check, which
        # ATEN_CPU_CAPABILITY does not reach): it looked for an optional compiled bfloat16 kernel in the `kernels`
        # package, which the course does not install (no download at run time). helpers.models keeps bitsandbytes
        # off that bfloat16 kernel on the float32 path, so the message is about a path the course does not take,
        # and it would make a notebook run on such a CPU differ from one on an AVX2 laptop.
        "bitsandbytes: optional bfloat16 CPU kernel not installed (AVX512-BF16 CPUs only)":
            re.compile(r"^Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'"),
    },
}


def is_known_noise(line: str, patterns: dict[str, re.Pattern]) -> bool:
    return any(pattern.search(line) for pattern in patterns.values())


class NamedLineFilter(io.TextIOBase):
    """A text stream that passes every complete line on to ``target`` at once, except PRINTED_NOISE lines."""

    def __init__(self, target) -> None:
        self.target, self.partial = target, ""

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        for line in lines:
            if not is_known_noise(line, PRINTED_NOISE):
                self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def finish(self) -> None:
        """Write what is left of an unfinished last line."""
        if self.partial and not is_known_noise(self.partial, PRINTED_NOISE):
            self.target.write(self.partial)
        self.partial = ""


@contextlib.contextmanager
def without_printed_noise() -> Iterator[None]:
    """Run a block (an Unsloth import or load) and pass on, line by line as it comes, everything it prints except
    the PRINTED_NOISE lines. Nothing is held back: a crash or a long download shows what was printed before it."""
    out, err = NamedLineFilter(sys.stdout), NamedLineFilter(sys.stderr)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield
    finally:
        out.finish()
        err.finish()


class NamedNoiseFilter(logging.Filter):
    def __init__(self, patterns: dict[str, re.Pattern] = NOTEBOOK_NOISE) -> None:
        super().__init__()
        self.patterns = patterns

    def filter(self, record: logging.LogRecord) -> bool:
        return not is_known_noise(record.getMessage(), self.patterns)


def silence_logged_noise() -> None:
    """Drop the LOGGED_NOISE messages at their loggers. Call before the library is imported: a logger can be
    configured before its module exists, and these messages are logged on import. Idempotent."""
    for logger_name, patterns in LOGGED_NOISE.items():
        logger = logging.getLogger(logger_name)
        if not any(isinstance(existing, NamedNoiseFilter) and existing.patterns is patterns
                   for existing in logger.filters):
            logger.addFilter(NamedNoiseFilter(patterns))


def in_notebook() -> bool:
    return "ipykernel" in sys.modules


def silence_named_warnings_in_notebooks() -> None:
    """In a Jupyter kernel only: ignore the warnings named in NOTEBOOK_NOISE (``helpers.config.prepare_environment`` calls this)."""
    if in_notebook():
        for pattern in NOTEBOOK_NOISE.values():
            warnings.filterwarnings("ignore", message=f".*{pattern.pattern}")


def silence_known_noise_in_notebooks() -> None:
    """In a Jupyter kernel only: drop NOTEBOOK_NOISE from warnings and from transformers' log handlers.

    Call after transformers is imported (helpers.models does, once Unsloth has patched it). Idempotent.
    """
    if not in_notebook():
        return
    silence_named_warnings_in_notebooks()
    import transformers.utils.logging as transformers_logging

    # With CI=true in the environment, transformers also hands every record to the root logger, and Jupyter then
    # prints each warning a second time in another format: the same notebook would differ between CI and a laptop.
    transformers_logging._get_library_root_logger().propagate = False
    for handler in transformers_logging._get_library_root_logger().handlers:
        if not any(isinstance(existing, NamedNoiseFilter) for existing in handler.filters):
            handler.addFilter(NamedNoiseFilter())


def progress(iterable=None, **kwargs):
    """A tqdm bar on stdout for the course's own long loops.

    stdout, not tqdm's default stderr: Jupyter may interleave the two streams in a different order on each run,
    and nbval compares that order. On one stream, only the bar's final state and its timings (sanitized) remain.
    """
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stdout)
    # A fixed bar width: with a width that adapts, the length of the rate text would change the bar itself.
    kwargs.setdefault("bar_format", "{l_bar}{bar:30}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]")
    return tqdm(iterable, **kwargs)
