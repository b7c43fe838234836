"""Writing so that a reader never sees half a file or half a folder: the one place the course does it.

A file is written beside its target under a hidden name and renamed over it (a rename within one folder is atomic
on POSIX). A folder cannot be renamed over another, so it takes two renames, and the old one comes back if the
second fails. Used by the set-up (the converted model), training (adapters) and the service (job state).
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replaced_on_success(path: Path) -> Iterator[Path]:
    """A hidden path beside ``path`` to write to; renamed over ``path`` when the block ends without an error,
    removed when it raises. Nested blocks rename innermost first, so the file that marks a set complete goes
    outermost."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        yield partial
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    with replaced_on_success(path) as partial:
        partial.write_text(text, encoding="utf-8")


def write_json_atomically(path: Path, value) -> None:
    write_text_atomically(path, json.dumps(value))


def replace_folder(new: Path, target: Path) -> None:
    """Put ``new`` where ``target`` is, with two renames (a folder cannot be replaced by one)."""
    retired = target.with_name(f".{target.name}.retired-{os.getpid()}")
    if target.exists():
        target.replace(retired)
    try:
        new.replace(target)
    except OSError:
        if retired.exists():
            retired.replace(target)  # the previous folder goes back where it was
        raise
    shutil.rmtree(retired, ignore_errors=True)
