"""Writing so that a reader never sees half a file or half a folder: the one place the course does it.

A file is written beside its target under a hidden name and renamed over it (a rename within one folder is atomic
on POSIX). A folder cannot be renamed over another, so it takes two renames, and the old one comes back if the
second fails. Used by the set-up (the converted model), training (adapters) and the service (job state).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


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
