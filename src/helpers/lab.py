"""Lab mode: student versions of the notebooks and a grader, both through nbgrader.

The solution notebooks in notebooks/ are the single source. Their exercise cells carry nbgrader's metadata and
markers (``### BEGIN SOLUTION``, ``### BEGIN HIDDEN TESTS``); nbgrader's ``generate_assignment`` turns them into the
student versions, and its ``autograde`` re-executes a submission in a fresh kernel, with the hidden tests put back.

Grading runs every submission in a folder of its own: the kernel's course root (``COURSE_ROOT``) is a copy of what
the notebooks read (the sample, the prerequisites under outputs/), so the notebooks write there. The kernel starts
with an audit hook that refuses, and records, every Python-level write into the repository (open for writing,
remove, rename, mkdir, rmtree ...): the cell gets a PermissionError and the report says what was refused. What gets
past it (a shell command run from a cell) is found by comparing the repository before and after, and reported. Grading uses the ``lab``
profile by default: the same code on a tiny slice, so a notebook grades in a minute or two. Whether a submission's
checked outputs reproduce the solution's is judged against the solution notebook executed the same way, on the same
machine and profile (cached under outputs/grading/), by nbval's rules.

    python -m helpers.lab student [--out student]        # make student
    python -m helpers.lab release DEST                   # make release DEST=...: the student copy of the course
    python -m helpers.lab progress [FOLDER]              # make test in a student copy: exercises passing
    python -m helpers.lab grade PATH [--report-dir DIR]  # make grade SUBMISSION=PATH (a notebook or a folder)
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import signal
import subprocess
from contextlib import contextmanager
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import nbformat

from helpers.config import PROFILE_ENV_VAR, ROOT_ENV_VAR, paths

logger = logging.getLogger(__name__)

GRADE_PROFILE = "lab"
# A cell of the lab profile takes at most about two minutes on a 2-core laptop (notebook 06's comparison).
CELL_TIMEOUT_S = 600
NOTEBOOK_TIMEOUT_S = 1800
STUDENT_DIR = "student"
REPORTS_DIR = "graded"
SUMMARY_FILE = "summary.csv"
SUMMARY_JSON = "summary.json"
TESTS_SUFFIX = "_tests"
# What a notebook reads from the repository; everything else it needs is rebuilt from these by the helpers.
COPIED_INPUTS = ("data/raw",)
LINKED_INPUTS = ("data/models",)  # converted once at set-up, large, only read
# Never compared: what Python and Jupyter write while a submission runs. The grader's own folder (prerequisites,
# reference runs) is watched like the rest, and also checked by hash (grading_files_changed).
UNWATCHED = {".git", "__pycache__", ".ipynb_checkpoints", ".pytest_cache"}


class LabError(RuntimeError):
    """nbgrader could not build a student version or grade a submission; the message says why."""


@dataclass(frozen=True)
class Submission:
    path: Path
    notebook: str  # the solution notebook's stem, e.g. "01_preprocessing"
    student: str


# --- The solution notebooks and nbgrader's course folder -----------------------------------------------------------


def solution_notebooks() -> dict[str, Path]:
    """Every numbered solution notebook, by stem."""
    return {path.stem: path for path in sorted(paths().notebooks.glob("[0-9][0-9]_*.ipynb"))}


def nbgrader_config(course: Path):
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(course)
    config.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    return config


def environment_bin_on_path() -> None:
    """nbgrader runs its database migrations with the `alembic` command: it must be found in this environment even
    when the environment is not activated (make calls .venv/bin/python directly)."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])


def release(notebook: str, course: Path) -> Path:
    """nbgrader's generate_assignment on one solution notebook: the student version (solutions replaced, outputs
    cleared, hidden tests removed), and the gradebook that autograde restores the hidden tests from."""
    from nbgrader.apps import NbGraderAPI

    environment_bin_on_path()
    source = course / "source" / notebook
    source.mkdir(parents=True, exist_ok=True)
    shutil.copy2(solution_notebooks()[notebook], source / f"{notebook}.ipynb")
    result = NbGraderAPI(config=nbgrader_config(course)).generate_assignment(notebook)
    if not result["success"]:
        raise LabError(f"nbgrader generate_assignment failed for {notebook}:\n{result.get('error') or result.get('log')}")
    return course / "release" / notebook / f"{notebook}.ipynb"


def write_student_versions(target: Path | None = None) -> list[Path]:
    """student/NN_*.ipynb from the solution notebooks (``make student``)."""
    target = Path(target or paths().root / STUDENT_DIR)
    target.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="course-release-") as course:
        for notebook in solution_notebooks():
            written.append(Path(shutil.copy2(release(notebook, Path(course)), target / f"{notebook}.ipynb")))
    return written


# --- The student copy of the course: what a class is handed -------------------------------------------------------

RELEASE_MARKER = ".course-release"
# Instructor-only: the tests read the solutions (some hold answers), CI runs them; the executed results are the
# solutions' and every student's own `make course` writes its own.
NOT_RELEASED = ("tests/", ".ci/", "outputs/")
RELEASE_NOTE = """
> **Student copy.** `notebooks/` holds the exercises (`# YOUR CODE HERE`). `make course` sets up and runs every
> notebook; an exercise you have not done yet shows its error in place and the run goes on. `make test` says, per
> exercise, whether its visible tests pass in your executed notebooks. The hidden tests and the solutions are not
> part of this copy: the instructor's pages (`docs/instructors.md`; `make docs` builds the site) describe your
> instructor's copy, which grades yours.
"""


def write_release(destination: Path) -> dict:
    """A student copy of the course at ``destination`` (``make release DEST=...``): every file the repository tracks
    except the solutions and the instructor's tests, with the student notebooks in the solutions' place."""
    destination, root = Path(destination).resolve(), paths().root
    if destination.is_relative_to(root) or (destination.exists() and any(destination.iterdir())):
        raise LabError(f"{destination}: a release goes to a new or empty folder outside the repository")
    solutions = {str(path.relative_to(root)) for path in solution_notebooks().values()}
    copied = []
    for relative in tracked_files(root):
        if relative in solutions or relative.startswith(NOT_RELEASED):
            continue
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, destination / relative)
        copied.append(relative)
    students = write_student_versions(destination / "notebooks")
    (destination / "outputs").mkdir(exist_ok=True)
    readme = destination / "README.md"
    title, _, rest = readme.read_text().partition("\n")
    readme.write_text(f"{title}\n{RELEASE_NOTE}{rest}")
    (destination / RELEASE_MARKER).write_text(json.dumps({"from commit": source_commit(root)}) + "\n")
    return {"destination": destination, "files": len(copied), "notebooks": [path.name for path in students]}


def tracked_files(root: Path) -> list[str]:
    completed = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True)
    if completed.returncode != 0:
        raise LabError(f"a release is made from the course's git repository: git ls-files failed in {root}: "
                       f"{completed.stderr.strip()}")
    return [name for name in completed.stdout.split("\0") if name and (root / name).is_file()]


def source_commit(root: Path) -> str:
    completed = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    return completed.stdout.strip() or "unknown"


def exercise_progress(folder: Path) -> list[dict]:
    """Per exercise of the notebooks in ``folder`` as last executed: its visible tests pass, fail (with the error),
    or have not run."""
    rows = []
    for path in sorted(Path(folder).glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            grading = cell.metadata.get("nbgrader", {})
            if cell.cell_type != "code" or not grading.get("grade"):
                continue
            errors = [f"{output.get('ename')}: {output.get('evalue')}"[:200] for output in cell.get("outputs", [])
                      if output.get("output_type") == "error"]
            state = "not run" if cell.get("execution_count") is None else "fails" if errors else "passes"
            rows.append({"notebook": path.stem, "exercise": grading["grade_id"].removesuffix(TESTS_SUFFIX),
                         "visible tests": state, "error": errors[0] if errors else ""})
    return rows


def exercise_points(notebook: nbformat.NotebookNode) -> dict[str, float]:
    """Points of every graded cell (tests and hand-graded answers), by grade_id."""
    return {cell.metadata.nbgrader.grade_id: float(cell.metadata.nbgrader.get("points", 0))
            for cell in notebook.cells if cell.metadata.get("nbgrader", {}).get("grade")}


@contextmanager
def unavailable(module, *names: str):
    """Within the block, the named helpers raise instead of answering: the hidden tests call a student's function
    here, so that an exercise is not solved by calling the helper it asks the student to write.

    What is refused is the function itself, not the module's name for it: its code is swapped for one that raises,
    so an answer that kept the helper under another name (``from helpers.data import clean_text as mine``), in a
    ``functools.partial`` or as a default argument is refused too. A helper the submission replaced in its module is
    found and reported, since the tests compare the answers with it."""
    functions = {name: course_function(module, name) for name in names}
    originals = {name: function.__code__ for name, function in functions.items()}
    try:
        for name, function in functions.items():
            function.__code__ = refusing_code(module.__name__, name)
        yield
    finally:
        for name, function in functions.items():
            function.__code__ = originals[name]


def course_function(module, name: str):
    """``module.name`` as the course wrote it; an AssertionError if a submission put something else in its place."""
    function = inspect.unwrap(getattr(module, name))
    source = Path(getattr(getattr(function, "__code__", None), "co_filename", "")).resolve()
    if not source.is_relative_to(Path(__file__).resolve().parent):
        raise AssertionError(f"{module.__name__}.{name} is not the course's own any more (it now comes from "
                             f"{source.name or type(function).__name__}): an answer must not replace the helper "
                             "its tests compare with")
    return function


def refusing_code(module: str, name: str):
    message = f"{module}.{name} is what this exercise asks you to write: write it yourself"
    namespace: dict = {}
    exec(f"def refused(*args, **kwargs):\n    raise AssertionError({message!r})\n", namespace)
    return namespace["refused"].__code__


# --- Finding submissions ------------------------------------------------------------------------------------------


def find_submissions(path: Path) -> tuple[list[Submission], list[Path]]:
    """The submissions under ``path`` (one notebook, or a folder of them, e.g. one sub-folder per student), and the
    notebooks skipped because their name is not one of the course's."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    known = solution_notebooks()
    candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*.ipynb")
                                                       if ".ipynb_checkpoints" not in p.parts
                                                       and REPORTS_DIR not in p.relative_to(path).parts)
    submissions, skipped = [], []
    for candidate in candidates:
        if candidate.stem not in known:
            skipped.append(candidate)
            continue
        student = safe_name(candidate.parent.name) if path.is_file() else _student_of(candidate, path)
        submissions.append(Submission(candidate, candidate.stem, student))
    return submissions, skipped


def _student_of(notebook: Path, folder: Path) -> str:
    """The first folder below ``folder``: collected/alice/01_x.ipynb and nbgrader's submitted/alice/01_x/01_x.ipynb
    both belong to alice; a notebook directly in ``folder`` is named after the folder."""
    relative = notebook.parent.relative_to(folder)
    return safe_name(relative.parts[0] if relative.parts else folder.name)


def safe_name(name: str) -> str:
    """A folder name fit to become part of a file name and a gradebook id: letters, digits, '.', '-', '_' only, no
    leading dot (so never '..' nor a hidden file), at most 64 characters."""
    cleaned = re.sub(r"\.\.+", "_", re.sub(r"[^A-Za-z0-9_.-]+", "_", name)).strip("._")[:64]
    return cleaned or "student"


# --- The folder a submission runs in -------------------------------------------------------------------------------


def prerequisites_dir(profile: str) -> Path:
    """A course root holding what the notebooks build (processed data, index, adapter, baseline), built once per
    profile and copied into every grading run, so each notebook starts where a student's repository would be."""
    return paths().outputs / "grading" / profile / "prerequisites"


def make_course_root(target: Path) -> Path:
    """A course root for one run: the sample copied, the converted models linked (read only), an empty outputs/."""
    repo = paths().root
    for relative in COPIED_INPUTS:
        shutil.copytree(repo / relative, target / relative, dirs_exist_ok=True)
    for relative in LINKED_INPUTS:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        if not (target / relative).exists():
            (target / relative).symlink_to(repo / relative, target_is_directory=True)
    (target / "notebooks").mkdir(exist_ok=True)
    (target / "outputs").mkdir(exist_ok=True)
    return target


PREREQUISITES_SCRIPT = """
import helpers
from helpers import data, evaluation, retrieval, training
profile = helpers.config.active_profile()
data.ensure_processed(profile, progress=False)
retrieval.ensure_index(profile)
training.adapter.ensure_adapter(profile)
evaluation.ensure_baseline_counts(profile, data.evaluation_samples(profile)["held-out"])
"""


def ensure_prerequisites(profile: str) -> Path:
    """Build (or bring up to date: the helpers detect stale artifacts) the prerequisites of ``profile``, then make
    them read-only; a later submission's run starts from a writable copy of them."""
    folder = prerequisites_dir(profile)
    if folder.exists():
        set_writable(folder, True)
    root = make_course_root(folder)
    completed = subprocess.run([sys.executable, "-c", PREREQUISITES_SCRIPT], env=kernel_environment(root, profile),
                               cwd=root, capture_output=True, text=True)
    set_writable(folder, False)
    if completed.returncode != 0:
        raise LabError(f"building the {profile} prerequisites failed:\n{completed.stderr[-3000:]}")
    return root


def set_writable(folder: Path, writable: bool) -> None:
    """Every file and folder under ``folder`` (not what links point to) writable by its owner, or read-only for all."""
    for directory, folders, files in os.walk(folder):
        here = Path(directory)
        for path in [here] + [here / name for name in folders + files]:
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            path.chmod(mode | 0o200 if writable else mode & ~0o222)


def copy_writable(source: Path, target: Path) -> None:
    """A copy of a read-only folder that the run may write into."""
    shutil.copytree(source, target, dirs_exist_ok=True, symlinks=True)
    set_writable(target, True)


def grading_digests(profile: str, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file the grader keeps for ``profile`` (prerequisites, reference runs), and the target of every
    link, by path; except under ``skip`` (the folder a reference run is being written to)."""
    folder = paths().outputs / "grading" / profile
    digests = {}
    for directory, folders, files in os.walk(folder):
        here = Path(directory)
        if skip is not None and here.resolve().is_relative_to(skip.resolve()):
            continue
        for name in folders + files:
            path = here / name
            if path.is_symlink():
                digests[str(path.relative_to(folder))] = f"-> {os.readlink(path)}"
            elif path.is_file():
                digests[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def digests_changed(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))


def prerequisites_digest_file(profile: str) -> Path:
    return paths().outputs / "grading" / f"{profile}-prerequisites.sha256"


def checked_prerequisites(profile: str, refresh: bool = False) -> list[str]:
    """The prerequisites of ``profile``, checked by hash against what was recorded when they were last built, and
    rebuilt from scratch if anything changed since; with ``refresh``, brought up to date by the helpers as well (a
    stale artifact is rebuilt). Returns what had changed since they were recorded (empty when nothing had)."""
    record = prerequisites_digest_file(profile)
    recorded = json.loads(record.read_text()) if record.is_file() else None
    changed = digests_changed(recorded, prerequisite_digests(profile)) if recorded is not None else []
    if changed and prerequisites_dir(profile).exists():
        set_writable(prerequisites_dir(profile), True)
        shutil.rmtree(prerequisites_dir(profile))
    if changed or refresh or recorded is None:
        ensure_prerequisites(profile)
        record.write_text(json.dumps(prerequisite_digests(profile), indent=0, sort_keys=True) + "\n")
    return changed


def prerequisite_digests(profile: str) -> dict[str, str]:
    return {name: value for name, value in grading_digests(profile).items()
            if Path(name).parts[0] == prerequisites_dir(profile).name}


# What a submission's kernel inherits from the grader: where programs and files are, the locale, the numerics the
# course pins, and offline switches; never the grader's tokens, keys or anything else it happens to have.
KERNEL_ENVIRONMENT = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "VIRTUAL_ENV",
                      "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JUPYTER_PATH",
                      "JUPYTER_RUNTIME_DIR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "UNSLOTH_CPU_BF16",
                      "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "TOKENIZERS_PARALLELISM",
                      "CUDA_VISIBLE_DEVICES"}
KERNEL_ENVIRONMENT_PREFIXES = ("LC_", "MKL_", "OMP_", "KMP_")


def kernel_environment(root: Path, profile: str) -> dict[str, str]:
    """The allowlisted part of the grader's environment, and the course's root and profile."""
    environment_bin_on_path()
    kept = {name: value for name, value in os.environ.items()
            if name in KERNEL_ENVIRONMENT or name.startswith(KERNEL_ENVIRONMENT_PREFIXES)}
    return {**kept, ROOT_ENV_VAR: str(root), PROFILE_ENV_VAR: profile, "PYTHONHASHSEED": "0"}


# --- Watching the repository ----------------------------------------------------------------------------------------


def snapshot(folder: Path, skip: set[Path] = frozenset()) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``folder``, except the environment, caches and ``skip``."""
    environment = Path(sys.prefix).resolve()
    state = {}
    for directory, folders, files in os.walk(folder):
        here = Path(directory)
        folders[:] = [name for name in folders if name not in UNWATCHED and (here / name).resolve() != environment
                      and (here / name) not in skip and not (here / name).is_symlink()]
        for name in files:
            file = here / name
            try:
                info = file.lstat()
            except FileNotFoundError:
                continue
            state[str(file.relative_to(folder))] = (info.st_size, info.st_mtime_ns)
    return state


def writes_between(before: dict, after: dict) -> dict[str, list[str]]:
    return {
        "created": sorted(after.keys() - before.keys()),
        "changed": sorted(name for name in after.keys() & before.keys() if after[name] != before[name]),
        "deleted": sorted(before.keys() - after.keys()),
    }


# Installed in the kernel as an IPython startup file (before any cell runs). An audit hook cannot be removed once
# added, so a cell cannot switch it off; it sees what Python itself does (open, os.*, shutil.*), not a subprocess.
GUARD_STARTUP = r'''
def _install_course_lab_guard():
    # Everything in one closure: the kernel's user namespace is the notebook's, and names there can go away.
    import os
    import sys

    read_only = os.path.realpath(os.environ["COURSE_LAB_READ_ONLY"])
    log_path = os.environ["COURSE_LAB_GUARD_LOG"]
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = {"os.remove": (0,), "os.rename": (0, 1), "os.mkdir": (0,), "os.rmdir": (0,),
                   "shutil.rmtree": (0,), "os.truncate": (0,), "os.symlink": (1,), "os.link": (1,), "os.chmod": (0,),
                   "os.chown": (0,), "os.utime": (0,), "shutil.copyfile": (1,), "shutil.move": (1,),
                   "os.removexattr": (0,), "os.setxattr": (0,)}

    def inside(path):
        if isinstance(path, int) or path is None:
            return False
        full = os.path.realpath(os.path.join(os.getcwd(), os.fsdecode(path)))
        return full == read_only or full.startswith(read_only + os.sep)

    def refuse(event, path):
        if os.fsdecode(path) == log_path:
            return  # the record of a refusal is written outside the repository, always
        with open(log_path, "a") as log:
            log.write(f"{event} {os.fsdecode(path)}\n")
        raise PermissionError(f"grading keeps the course repository read-only: {event} {os.fsdecode(path)}")

    def guard(event, args):
        if event == "open":
            path, mode, flags = args
            writes = (mode is not None and any(letter in mode for letter in "wax+")) or bool((flags or 0) & write_flags)
            if writes and inside(path):
                refuse(event, path)
        elif event in path_events:
            for position in path_events[event]:
                if position < len(args) and inside(args[position]):
                    refuse(event, args[position])

    sys.addaudithook(guard)


_install_course_lab_guard()
del _install_course_lab_guard
'''


def install_guard(work: Path) -> dict[str, str]:
    """The kernel's IPython folder with the guard as a startup file; the environment variables that point at it."""
    startup = work / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    (startup / "00-course-lab-guard.py").write_text(GUARD_STARTUP)
    log = work / "refused-writes.txt"
    log.touch()
    return {"IPYTHONDIR": str(work / "ipython"), "COURSE_LAB_READ_ONLY": str(paths().root),
            "COURSE_LAB_GUARD_LOG": str(log), "PYTHONDONTWRITEBYTECODE": "1"}


def refused_writes(work: Path) -> list[str]:
    log = work / "refused-writes.txt"
    return sorted(set(log.read_text().splitlines())) if log.is_file() else []


# --- Running nbgrader's autograde ---------------------------------------------------------------------------------


def autograde(course: Path, notebook: str, student: str, root: Path, profile: str, cell_timeout: int,
              notebook_timeout: int, guard: dict[str, str]) -> dict:
    """nbgrader autograde in a child process with a time limit; what happened, never an exception."""
    command = [sys.executable, "-m", "nbgrader", "autograde", notebook, f"--student={student}", "--force",
               f"--CourseDirectory.root={course}", f"--CourseDirectory.db_url=sqlite:///{course / 'gradebook.db'}",
               f"--Execute.timeout={cell_timeout}", "--Autograde.create_student=True"]
    started = time.perf_counter()
    # A session of its own, so that a timeout stops nbgrader *and* the kernel it started (a looping cell would
    # otherwise keep a core busy after the grader has moved on).
    process = subprocess.Popen(command, cwd=course, env={**kernel_environment(root, profile), **guard},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, log = process.communicate(timeout=notebook_timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        _, log = process.communicate()
        return {"status": "timed out", "seconds": round(time.perf_counter() - started, 1),
                "detail": f"the notebook did not finish within {notebook_timeout} s and was stopped",
                "log": (log or "")[-3000:]}
    seconds = round(time.perf_counter() - started, 1)
    stop_leftovers(process.pid)
    if process.returncode != 0:
        return {"status": "grader error", "seconds": seconds, "detail": f"nbgrader autograde exited with "
                f"{process.returncode}", "log": (log or "")[-3000:]}
    return {"status": "graded", "seconds": seconds, "detail": "", "log": (log or "")[-3000:]}


def stop_leftovers(session: int) -> None:
    """Whatever the run left behind in its session (a kernel nbgrader could not shut down, a child of a cell)."""
    try:
        os.killpg(session, signal.SIGKILL)
    except ProcessLookupError:
        pass


def gradebook_scores(course: Path, notebook: str, student: str) -> dict[str, dict]:
    """Per grade_id: the points the submission got (None while a hand-graded answer waits) and the maximum."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        try:
            submitted = gradebook.find_submission_notebook(notebook, notebook, student)
        except MissingEntry:
            return {}
        return {grade.name: {"score": None if grade.needs_manual_grade else float(grade.score or 0),
                             "max_score": float(grade.max_score)}
                for grade in submitted.grades}


def cell_errors(notebook: nbformat.NotebookNode) -> list[dict]:
    """Every error a cell raised, with the cell's number (1-based, as Jupyter counts) and its exercise if any."""
    errors = []
    for number, cell in enumerate(notebook.cells, start=1):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                errors.append({"cell": number, "grade_id": cell.metadata.get("nbgrader", {}).get("grade_id"),
                               "error": f"{output.get('ename')}: {output.get('evalue')}"[:500]})
    return errors


# --- Checked outputs, by nbval's rules ----------------------------------------------------------------------------


def sanitize_patterns() -> list[tuple[str, str]]:
    from nbval.plugin import get_sanitize_patterns

    config = paths().notebooks / "nbval_sanitize.cfg"
    return get_sanitize_patterns(config.read_text()) if config.is_file() else []


def is_checked(cell) -> bool:
    """nbval compares this cell's outputs: a code cell without NBVAL_IGNORE_OUTPUT / NBVAL_SKIP."""
    from nbval.plugin import find_comment_markers

    if cell.cell_type != "code":
        return False
    markers = dict(find_comment_markers(cell.source))
    return markers.get("check", True) and not markers.get("skip", False)


# nbval's skip_compare (without --nbdime): what it never compares.
NBVAL_SKIP_COMPARE = ("metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
                      "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg")


def comparable_outputs(outputs, patterns) -> dict[str, list]:
    """nbval's view of a cell's outputs: streams merged by name, \\r and \\b applied, each key (stream name or MIME
    type) to the list of its sanitized values."""
    import copy

    from nbval.plugin import coalesce_streams, transform_streams_for_comparison

    flat = defaultdict(list)
    for output in transform_streams_for_comparison(coalesce_streams(copy.deepcopy(list(outputs)))):
        for key, value in output.items():
            if key in NBVAL_SKIP_COMPARE:
                continue
            items = value.items() if key == "data" else [(key, value)]
            for item_key, item_value in items:
                if item_key not in NBVAL_SKIP_COMPARE:
                    flat[item_key].append(_sanitized(item_value, patterns))
    return dict(flat)


def _sanitized(value, patterns):
    if not isinstance(value, str):
        return value
    for regex, replacement in patterns:
        value = re.sub(regex, replacement, value)
    return value


def compare_checked_outputs(submitted: nbformat.NotebookNode, reference: nbformat.NotebookNode) -> dict:
    """Which of the solution's checked cells the submission reproduces, matched by cell id (students may add cells).
    Exercise cells are left to their tests."""
    patterns = sanitize_patterns()
    by_id = {cell.get("id"): cell for cell in submitted.cells}
    reproduced, differing, missing = [], [], []
    for number, cell in enumerate(reference.cells, start=1):
        if not is_checked(cell) or "nbgrader" in cell.metadata:
            continue
        mine = by_id.get(cell.get("id"))
        if mine is None:
            missing.append(number)
        elif comparable_outputs(mine.get("outputs", []), patterns) == comparable_outputs(cell.outputs, patterns):
            reproduced.append(number)
        else:
            differing.append(number)
    return {"compared": len(reproduced) + len(differing) + len(missing), "reproduced": len(reproduced),
            "differing cells": differing, "missing cells": missing}


# --- Metrics a submission reached ---------------------------------------------------------------------------------

HEADLINE_METRICS = ("catalogue facts", "invents", "contradicts", "stops", "loops")


def reached_metrics(notebook: str, root: Path) -> dict:
    """For 06: the held-out headline numbers and the verdicts of its own run (from the files it saved)."""
    import pandas as pd

    if not notebook.startswith("06_"):
        return {}
    metrics_file, differences_file = root / "outputs" / "comparison.csv", root / "outputs" / "tables" / "comparison_differences.csv"
    if not (metrics_file.is_file() and differences_file.is_file()):
        return {"note": "the submission saved no comparison (outputs/comparison.csv)"}
    metrics = pd.read_csv(metrics_file)
    held_out = metrics[metrics["set"] == "held-out"].set_index("system")
    differences = pd.read_csv(differences_file)
    verdicts = differences[differences["set"] == "held-out"]
    return {
        "held-out means": {system: {metric: None if pd.isna(row[metric]) else round(float(row[metric]), 3)
                                    for metric in HEADLINE_METRICS} for system, row in held_out.iterrows()},
        "held-out verdicts": {f"{row.effect} · {row.metric}": row.verdict for row in verdicts.itertuples()},
    }


# --- One submission ------------------------------------------------------------------------------------------------


def grade_submission(submission: Submission, report_dir: Path, profile: str = GRADE_PROFILE,
                     cell_timeout: int = CELL_TIMEOUT_S, notebook_timeout: int = NOTEBOOK_TIMEOUT_S,
                     reference: nbformat.NotebookNode | None = None) -> dict:
    """Grade one submission; the report (a dict) is also written as JSON and Markdown under ``report_dir``. Whatever
    goes wrong in the grader itself becomes this submission's report, and its working folder is always removed."""
    report_dir = Path(report_dir)
    # Outside the repository, wherever the reports go: the kernel may write anywhere in its folder but not there.
    work = Path(tempfile.mkdtemp(prefix=f"course-grading-{submission.student}-{submission.notebook}-"))
    try:
        report = run_and_report(submission, work, report_dir, profile, cell_timeout, notebook_timeout, reference)
    except Exception as error:  # noqa: BLE001 - one submission's grader error must not stop the class's batch
        report = grader_error_report(submission, profile, error)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return write_report(report, report_dir)


def run_and_report(submission: Submission, work: Path, report_dir: Path, profile: str, cell_timeout: int,
                   notebook_timeout: int, reference: nbformat.NotebookNode | None) -> dict:
    course, root = work / "course", work / "root"
    release(submission.notebook, course)
    submitted = course / "submitted" / submission.student / submission.notebook / f"{submission.notebook}.ipynb"
    submitted.parent.mkdir(parents=True)
    shutil.copy2(submission.path, submitted)
    make_course_root(root)
    copy_writable(prerequisites_dir(profile) / "outputs", root / "outputs")

    repository = paths().root
    watched_skip = {report_dir.resolve()} if report_dir.resolve().is_relative_to(repository) else set()
    guard = install_guard(work)
    before, grading_before = snapshot(repository, watched_skip), grading_digests(profile, skip=report_dir)
    run = autograde(course, submission.notebook, submission.student, root, profile, cell_timeout, notebook_timeout,
                    guard)
    writes = writes_between(before, snapshot(repository, watched_skip))
    grading_changed = digests_changed(grading_before, grading_digests(profile, skip=report_dir))

    solution = nbformat.read(solution_notebooks()[submission.notebook], as_version=4)
    scores = gradebook_scores(course, submission.notebook, submission.student) if run["status"] == "graded" else {}
    autograded = course / "autograded" / submission.student / submission.notebook / f"{submission.notebook}.ipynb"
    executed = nbformat.read(autograded, as_version=4) if autograded.is_file() else None
    errors = cell_errors(executed) if executed is not None else []
    report = {
        **report_header(submission, profile), "status": run["status"], "detail": run["detail"],
        "seconds": run["seconds"], "exercises": exercise_rows(exercise_points(solution), scores, errors),
        "errors": errors, "refused writes": refused_writes(work),
        "repository changes": {kind: names for kind, names in writes.items() if names},
        "grading files changed": grading_changed,
        "checked outputs": (compare_checked_outputs(executed, reference)
                            if executed is not None and reference is not None else None),
        "metrics": reached_metrics(submission.notebook, root) if executed is not None else {},
    }
    report["detail"] = " ".join([*warnings_of(report), report["detail"]]).strip()
    if executed is not None:
        shutil.copy2(autograded, report_dir / f"{submission.student}-{submission.notebook}.executed.ipynb")
    return report


def report_header(submission: Submission, profile: str) -> dict:
    return {"notebook": submission.notebook, "student": submission.student, "submission": str(submission.path),
            "profile": profile}


def warnings_of(report: dict) -> list[str]:
    """What the instructor must know before trusting the points."""
    warnings = []
    if report["grading files changed"]:
        warnings.append(f"The grader's own files changed while it ran ({len(report['grading files changed'])}, "
                        "under 'grading files changed'): they are rebuilt before the next submission.")
    if report["refused writes"]:
        warnings.append(f"It tried to write outside its working folder, into the repository: "
                        f"{len(report['refused writes'])} write(s) refused (under 'refused writes').")
    if report["repository changes"]:
        warnings.append("The repository changed while it ran (under 'repository changes'; not undone: a shell "
                        "command from a cell, or someone else working in the repository).")
    return warnings


def grader_error_report(submission: Submission, profile: str, error: Exception) -> dict:
    """The report of a submission the grader itself failed on: no points, and the error for the instructor."""
    logger.exception("grading %s failed", submission.path)
    return {**report_header(submission, profile), "status": "grader error",
            "detail": f"The grader failed on this submission: {type(error).__name__}: {error}"[:2000],
            "seconds": 0.0, "exercises": unscored_exercises(submission.notebook), "errors": [], "refused writes": [], "repository changes": {},
            "grading files changed": [], "checked outputs": None, "metrics": {}}


def unscored_exercises(notebook: str) -> list[dict]:
    solution = nbformat.read(solution_notebooks()[notebook], as_version=4)
    return exercise_rows(exercise_points(solution), {}, [])


def write_report(report: dict, report_dir: Path) -> dict:
    """Totals added; the report written as JSON and Markdown under ``report_dir``."""
    autograded_rows = [row for row in report["exercises"] if not row["hand-graded"]]
    report["score"] = sum(row["points"] or 0.0 for row in report["exercises"])
    report["max_score"] = sum(row["max points"] for row in report["exercises"])
    report["autograded score"] = sum(row["points"] or 0.0 for row in autograded_rows)
    report["autograded max_score"] = sum(row["max points"] for row in autograded_rows)
    report["awaiting hand grading"] = [row["exercise"] for row in report["exercises"] if row["points"] is None]
    name = f"{report['student']}-{report['notebook']}"
    report["json"] = str(report_dir / f"{name}.json")
    Path(report["json"]).write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (report_dir / f"{name}.md").write_text(markdown_report(report))
    return report


def exercise_rows(points: dict[str, float], scores: dict[str, dict], errors: list[dict]) -> list[dict]:
    """One row per graded cell of the solution: points reached (None while hand grading waits), maximum, the error
    its tests raised. A test cell missing from the gradebook (a submission that never ran) scores 0."""
    error_by_id = {error["grade_id"]: error["error"] for error in errors if error["grade_id"]}
    rows = []
    for grade_id, maximum in points.items():
        exercise = grade_id.removesuffix(TESTS_SUFFIX)
        hand_graded = not grade_id.endswith(TESTS_SUFFIX)
        score = scores.get(grade_id, {}).get("score", 0.0)
        if hand_graded and grade_id not in scores:
            score = 0.0
        rows.append({"exercise": exercise, "points": score, "max points": maximum, "hand-graded": hand_graded,
                     "error": error_by_id.get(grade_id) or error_by_id.get(exercise)})
    return rows


def markdown_report(report: dict) -> str:
    lines = [
        f"# {report['notebook']} · {report['student']}",
        "",
        f"**{report['score']:g} / {report['max_score']:g} points** ({report['status']}, {report['seconds']} s, "
        f"profile `{report['profile']}`). {report['detail']}",
        "",
        "| exercise | points | max | error |",
        "|---|---|---|---|",
    ]
    for row in report["exercises"]:
        points = "awaits the instructor" if row["points"] is None else f"{row['points']:g}"
        lines.append(f"| {row['exercise']} | {points} | {row['max points']:g} | {(row['error'] or '').replace('|', '/')} |")
    if report["errors"]:
        lines += ["", "## Errors", ""] + [f"- cell {error['cell']}"
                                          f"{' (' + error['grade_id'] + ')' if error['grade_id'] else ''}: "
                                          f"`{error['error']}`" for error in report["errors"]]
    if report["refused writes"]:
        lines += ["", "## Writes into the repository, refused", ""] + [f"- `{write}`" for write in report["refused writes"]]
    if report["grading files changed"]:
        lines += ["", "## The grader's own files changed while it ran", ""] + [
            f"- `{name}`" for name in report["grading files changed"]]
    if report["repository changes"]:
        lines += ["", "## The repository changed while it ran", ""] + [
            f"- {kind}: {', '.join(names)}" for kind, names in report["repository changes"].items()]
    checked = report["checked outputs"]
    if checked:
        lines += ["", "## Checked outputs", "",
                  f"{checked['reproduced']} of {checked['compared']} checked cells reproduce the solution's (nbval's "
                  f"rules, same machine and profile). Differing cells: {checked['differing cells'] or 'none'}; "
                  f"missing cells: {checked['missing cells'] or 'none'}."]
    if report["metrics"]:
        lines += ["", "## What the run reached", "", "```json", json.dumps(report["metrics"], indent=1, ensure_ascii=False), "```"]
    return "\n".join(lines) + "\n"


# --- The solution as reference, and many submissions ---------------------------------------------------------------


def reference_key(notebook: str, profile: str) -> str:
    """Everything the reference run depends on: the solution notebook, the helpers' code, the profile, the sample,
    the converted models, nbval's sanitize rules, Python and every installed library's version."""
    from importlib.metadata import distributions

    digest = hashlib.sha256(f"{profile}\n{sys.version}\n".encode())
    digest.update(solution_notebooks()[notebook].read_bytes())
    root = paths().root
    for source in sorted((root / "src" / "helpers").rglob("*.py")) + [paths().notebooks / "nbval_sanitize.cfg"]:
        digest.update(source.read_bytes())
    for folder in (paths().data / "raw", paths().data / "models"):
        digest.update(json.dumps(files_fingerprint(folder), sort_keys=True).encode())
    versions = sorted(f"{dist.metadata['Name']}=={dist.version}" for dist in distributions())
    digest.update("\n".join(versions).encode())
    return digest.hexdigest()


def files_fingerprint(folder: Path) -> dict[str, str]:
    """Path -> sha256 for small files; size and modification time for the large converted models (hashing 300 MB
    before every submission would cost more than it guards: they are rebuilt, not edited)."""
    fingerprint = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        info = path.stat()
        fingerprint[str(path.relative_to(folder))] = (hashlib.sha256(path.read_bytes()).hexdigest()
                                                       if info.st_size < 50_000_000
                                                       else f"{info.st_size}:{info.st_mtime_ns}")
    return fingerprint


def reference_files(folder: Path, notebook: str) -> list[Path]:
    return [folder / f"solution-{notebook}.json", folder / f"solution-{notebook}.executed.ipynb"]


def reference_record(key: str, files: list[Path]) -> str:
    """What the key file holds: the key, then each reference file's sha256 (so an edited reference is not used)."""
    lines = [key] + [f"{hashlib.sha256(file.read_bytes()).hexdigest()}  {file.name}" for file in files]
    return "\n".join(lines) + "\n"


def reference_is_current(key_file: Path, key: str, files: list[Path]) -> bool:
    if not (key_file.is_file() and all(file.is_file() for file in files)):
        return False
    return key_file.read_text() == reference_record(key, files)


def reference_run(notebook: str, profile: str, cell_timeout: int, notebook_timeout: int) -> tuple[nbformat.NotebookNode, dict]:
    """The solution notebook graded like a submission (cached per machine, profile, code, data, models and library
    versions, and checked by hash before each use): the outputs a submission's checked cells are compared with, and
    the proof that the solution scores full marks."""
    folder = paths().outputs / "grading" / profile / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    key_file, (report_file, executed_file) = folder / f"{notebook}.key", reference_files(folder, notebook)
    key = reference_key(notebook, profile)
    if not reference_is_current(key_file, key, [report_file, executed_file]):
        for stale in [key_file, report_file, executed_file]:
            stale.unlink(missing_ok=True)
        solution = Submission(solution_notebooks()[notebook], notebook, "solution")
        report = grade_submission(solution, folder, profile, cell_timeout, notebook_timeout)
        if report["status"] != "graded" or not executed_file.is_file():
            raise LabError(f"the solution of {notebook} could not be executed for reference: {report['detail']} "
                           f"({report_file})")
        if report["errors"] or report["autograded score"] != report["autograded max_score"]:
            raise LabError(f"the solution of {notebook} does not pass its own tests on the {profile} profile "
                           f"({report['autograded score']:g}/{report['autograded max_score']:g}, errors: "
                           f"{report['errors']}); see {report_file}")
        key_file.write_text(reference_record(key, [report_file, executed_file]))
        for file in [key_file, report_file, executed_file]:
            file.chmod(0o444)
    return nbformat.read(executed_file, as_version=4), json.loads(report_file.read_text())


def grade(path: Path, report_dir: Path | None = None, profile: str = GRADE_PROFILE,
          cell_timeout: int = CELL_TIMEOUT_S, notebook_timeout: int = NOTEBOOK_TIMEOUT_S) -> tuple[list[dict], Path]:
    """Grade one notebook or a folder of them; reports under ``report_dir`` (default: beside the submissions, in
    graded/), and for a folder a summary CSV of points per exercise and a summary JSON. Returns the reports and the
    path of the JSON report: the submission's, or the folder's summary."""
    path = Path(path).resolve()
    submissions, skipped = find_submissions(path)
    for notebook in skipped:
        print(f"skipped {notebook}: not named like a course notebook ({', '.join(solution_notebooks())})")
    if not submissions:
        raise LabError(f"{path}: no submission named like a course notebook")
    report_dir = Path(report_dir or (path.parent if path.is_file() else path) / REPORTS_DIR).resolve()
    report_dir.mkdir(parents=True, exist_ok=True)
    checked_prerequisites(profile, refresh=True)
    reports = [grade_one(submission, report_dir, profile, cell_timeout, notebook_timeout)
               for submission in submissions]
    if path.is_dir():
        summary = write_summary(reports, report_dir / SUMMARY_FILE)
        print(f"summary of points per exercise: {summary}")
        return reports, write_summary_json(reports, report_dir / SUMMARY_JSON)
    return reports, Path(reports[-1]["json"])


def grade_one(submission: Submission, report_dir: Path, profile: str, cell_timeout: int, notebook_timeout: int) -> dict:
    """One submission of a batch, against checked prerequisites and reference; a failure is its report alone."""
    try:
        changed = checked_prerequisites(profile)
        if changed:
            print(f"the {profile} grading prerequisites had changed ({len(changed)} files): rebuilt before grading")
        reference, _ = reference_run(submission.notebook, profile, cell_timeout, notebook_timeout)
    except Exception as error:  # noqa: BLE001 - reported as this submission's grader error, the batch goes on
        report = write_report(grader_error_report(submission, profile, error), report_dir)
    else:
        report = grade_submission(submission, report_dir, profile, cell_timeout, notebook_timeout, reference)
    print(f"{submission.student} · {submission.notebook}: {report['score']:g}/{report['max_score']:g} "
          f"({report['status']}, {report['seconds']} s) → {report['json']}")
    return report


def write_summary(reports: list[dict], target: Path) -> Path:
    """One row per submission: student, notebook, status, points per exercise, total and maximum."""
    exercises = list(dict.fromkeys(row["exercise"] for report in reports for row in report["exercises"]))
    with target.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["student", "notebook", "status", *exercises, "score", "max_score", "report"])
        for report in reports:
            by_exercise = {row["exercise"]: row["points"] for row in report["exercises"]}
            writer.writerow([report["student"], report["notebook"], report["status"],
                             *["" if by_exercise.get(exercise) is None else f"{by_exercise[exercise]:g}"
                               if exercise in by_exercise else "" for exercise in exercises],
                             f"{report['score']:g}", f"{report['max_score']:g}", report["json"]])
    return target


def write_summary_json(reports: list[dict], target: Path) -> Path:
    """The folder's JSON report: every submission's totals and report, and the folder's totals."""
    target.write_text(json.dumps({
        "submissions": [{key: report[key] for key in ("student", "notebook", "status", "score", "max_score", "json")}
                        for report in reports],
        "score": sum(report["score"] for report in reports),
        "max_score": sum(report["max_score"] for report in reports),
        "summary_csv": str(target.with_name(SUMMARY_FILE)),
    }, indent=1) + "\n")
    return target


def print_progress(folder: Path) -> int:
    """The progress table; non-zero when an exercise fails or has not run (nothing to hand in yet)."""
    import pandas as pd

    rows = exercise_progress(folder)
    if not rows:
        print(f"error: no executed course notebook with exercises in {folder}", file=sys.stderr)
        return 1
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False))
    counts = table["visible tests"].value_counts()
    print(f"\n{counts.get('passes', 0)} of {len(table)} exercises pass their visible tests "
          f"({counts.get('fails', 0)} fail, {counts.get('not run', 0)} not run); the hidden tests are your "
          "instructor's.")
    return 0 if counts.get("passes", 0) == len(table) else 1


def run_student(arguments) -> int:
    for written in write_student_versions(arguments.out):
        print(f"wrote {written}")
    return 0


def run_release(arguments) -> int:
    made = write_release(arguments.destination)
    print(f"wrote the student copy to {made['destination']}: {made['files']} files and the student notebooks "
          f"{', '.join(made['notebooks'])}")
    return 0


def run_progress(arguments) -> int:
    return print_progress(arguments.folder or paths().notebooks)


def run_grade(arguments) -> int:
    _, last = grade(arguments.submission, arguments.report_dir, arguments.profile, arguments.cell_timeout,
                    arguments.timeout)
    print(last)
    return 0


def command_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.lab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    student = commands.add_parser("student", help="write the student versions (student/NN_*.ipynb)")
    student.add_argument("--out", type=Path, default=None)
    student.set_defaults(run=run_student)
    releasing = commands.add_parser("release", help="write the student copy of the course to a new folder")
    releasing.add_argument("destination", type=Path)
    releasing.set_defaults(run=run_release)
    progress = commands.add_parser("progress", help="which exercises pass their visible tests (executed notebooks)")
    progress.add_argument("folder", type=Path, nargs="?", default=None)
    progress.set_defaults(run=run_progress)
    grading = commands.add_parser("grade", help="grade a submitted notebook or a folder of them")
    grading.add_argument("submission", type=Path)
    grading.add_argument("--report-dir", type=Path, default=None)
    grading.add_argument("--profile", default=os.environ.get("GRADE_PROFILE", GRADE_PROFILE))
    grading.add_argument("--cell-timeout", type=int, default=CELL_TIMEOUT_S)
    grading.add_argument("--timeout", type=int, default=NOTEBOOK_TIMEOUT_S, help="seconds for a whole notebook")
    grading.set_defaults(run=run_grade)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = command_parser().parse_args(argv)
    try:
        return arguments.run(arguments)
    except (LabError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
