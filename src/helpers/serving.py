"""The course's three systems behind an OpenAI-compatible HTTP service (FastAPI + uvicorn).

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (the user message is a product title; ``stream: true`` sends
Server-Sent Events in OpenAI's chunk format), ``POST /v1/completions`` (a finished prompt, what the RAG chain's remote
model sends), ``POST /auth/token`` (sign in), ``POST/GET /v1/feedback``, ``POST /v1/train`` / ``GET`` / ``DELETE
/v1/train/{id}`` (fine-tuning jobs in a separate process), and a page at ``/``. Every route but the page and sign-in
needs ``Authorization: Bearer <token or API key>``.

Two cores generate one answer at a time: a request is admitted only while fewer than ``queue_capacity`` are admitted
(running or waiting), else it gets 429 at once. Users, tokens, answers, feedback and jobs live in one SQLite file in
WAL mode. Command line: ``python -m helpers.serving serve|adduser|apikey|export-feedback``.
"""
from __future__ import annotations

import argparse
import atexit
import contextlib
import getpass
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any, Literal, Protocol

from helpers.config import PROFILES, Profile, active_profile, display_path, paths

MODELS = ("foundation", "fine-tuned", "rag")
GENERATION_SECONDS_HEADER = "x-generation-seconds"
API_KEY_PREFIX = "sk-course-"
JOB_STATES_FINISHED = ("succeeded", "failed", "cancelled")
logger = logging.getLogger("helpers.serving")


# --- Limits ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceSettings:
    """What one running service uses: its profile, where it keeps its state, and its limits."""

    profile: Profile
    data_dir: Path
    # Admitted requests (one generating, the rest waiting) before 429: a 2-core machine answers one at a time.
    queue_capacity: int = 4
    # The most new tokens a request may ask for: 4x the profile's answers, still inside max_seq_length with a prompt.
    max_tokens_cap: int | None = None
    max_body_bytes: int = 64 * 1024
    max_title_chars: int = 500
    token_seconds: int = 8 * 3600
    # Failed sign-ins counted over a sliding window, per user name (guessing one password) and per client address
    # (trying many names); over either, 429 before any hashing.
    sign_in_window_seconds: float = 60
    sign_in_failures_per_name: int = 5
    sign_in_failures_per_address: int = 20
    # Argon2 takes ~50 ms and 64 MiB a check: a few at once, not one per thread of the pool on 2 cores.
    password_checks_at_once: int = 2

    @property
    def max_tokens(self) -> int:
        return self.max_tokens_cap or 4 * self.profile.max_new_tokens

    @property
    def database(self) -> Path:
        return self.data_dir / "service.sqlite3"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"


def default_data_dir(profile: Profile) -> Path:
    return paths().outputs / "serving" / profile.name


# --- Storage: one SQLite file in WAL mode --------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created REAL NOT NULL,
    instructor INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS credentials (digest TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
    kind TEXT NOT NULL, expires REAL);
CREATE TABLE IF NOT EXISTS answers (id TEXT PRIMARY KEY, user TEXT NOT NULL, model TEXT NOT NULL,
    product TEXT NOT NULL, answer TEXT NOT NULL, finish_reason TEXT NOT NULL, sources TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, answer_id TEXT NOT NULL REFERENCES answers(id),
    user TEXT NOT NULL, rating INTEGER NOT NULL, correction TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, user TEXT NOT NULL, status TEXT NOT NULL, examples INTEGER NOT NULL,
    feedback_examples INTEGER NOT NULL, pid INTEGER, adapter TEXT, error TEXT, created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def digest(secret: str) -> str:
    """Tokens and keys are stored as their SHA-256 (they are long and random; passwords get argon2)."""
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    """Users, credentials, answers, feedback, jobs. A connection per call: safe from any thread or process."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.connect() as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.executescript(SCHEMA)

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        connection = sqlite3.connect(self.path, timeout=30)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys=ON")
        try:
            with connection:  # one transaction: committed on success, rolled back on error
                yield connection
        finally:
            connection.close()

    # Users and credentials
    def add_user(self, name: str, password: str, instructor: bool = False) -> None:
        """Adds a user, or sets an existing one's password and role; a new password ends their tokens and keys."""
        from argon2 import PasswordHasher

        if not name or not password:
            raise ValueError("A user needs a name and a non-empty password.")
        with self.connect() as connection:
            connection.execute("INSERT INTO users VALUES (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                               "password_hash = excluded.password_hash, instructor = excluded.instructor",
                               (name, PasswordHasher().hash(password), time.time(), int(instructor)))
            connection.execute("DELETE FROM credentials WHERE user = ?", (name,))

    def is_instructor(self, name: str) -> bool:
        with self.connect() as connection:
            row = connection.execute("SELECT instructor FROM users WHERE name = ?", (name,)).fetchone()
        return bool(row and row["instructor"])

    def check_password(self, name: str, password: str) -> bool:
        from argon2 import PasswordHasher
        from argon2.exceptions import VerificationError, InvalidHashError

        with self.connect() as connection:
            row = connection.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()
        hasher = PasswordHasher()
        if row is None:
            hasher.hash(password)  # as long as a wrong password takes: the time does not say which names exist
            return False
        try:
            return hasher.verify(row["password_hash"], password)
        except (VerificationError, InvalidHashError):
            return False

    def issue_token(self, name: str, seconds: int) -> tuple[str, float]:
        token, expires = secrets.token_urlsafe(32), time.time() + seconds
        with self.connect() as connection:
            connection.execute("INSERT INTO credentials VALUES (?, ?, 'token', ?)", (digest(token), name, expires))
        return token, expires

    def add_api_key(self, name: str) -> str:
        key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self.connect() as connection:
            if connection.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone() is None:
                raise ValueError(f"No user {name!r}: add it first (python -m helpers.serving adduser {name}).")
            connection.execute("INSERT INTO credentials VALUES (?, ?, 'key', NULL)", (digest(key), name))
        return key

    def user_for(self, credential: str) -> str | None:
        with self.connect() as connection:
            row = connection.execute("SELECT user, expires FROM credentials WHERE digest = ?",
                                     (digest(credential),)).fetchone()
        if row is None or (row["expires"] is not None and row["expires"] < time.time()):
            return None
        return row["user"]

    # Answers and feedback
    def save_answer(self, answer_id: str, user: str, model: str, product: str, answer: str, finish_reason: str,
                    sources: list[dict]) -> None:
        with self.connect() as connection:
            connection.execute("INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (answer_id, user, model, product, answer, finish_reason, json.dumps(sources),
                                time.time()))

    def answer(self, answer_id: str) -> dict | None:
        with self.connect() as connection:
            row = connection.execute("SELECT * FROM answers WHERE id = ?", (answer_id,)).fetchone()
        return dict(row) if row else None

    def add_feedback(self, answer_id: str, user: str, rating: int, correction: str | None) -> int:
        with self.connect() as connection:
            cursor = connection.execute(
                "INSERT INTO feedback (answer_id, user, rating, correction, created) VALUES (?, ?, ?, ?, ?)",
                (answer_id, user, rating, correction, time.time()))
            return int(cursor.lastrowid)

    def feedback(self, user: str | None = None) -> list[dict]:
        query = ("SELECT feedback.id, feedback.answer_id, feedback.user, feedback.rating, feedback.correction, "
                 "answers.model, answers.product, answers.answer FROM feedback JOIN answers ON answers.id = "
                 "feedback.answer_id")
        with self.connect() as connection:
            rows = connection.execute(query + (" WHERE feedback.user = ?" if user else "") + " ORDER BY feedback.id",
                                      (user,) if user else ()).fetchall()
        return [dict(row) for row in rows]

    def training_records(self) -> list[dict]:
        """Every correction as a training record (the processed split's fields), the latest per product."""
        latest = {row["product"]: row for row in self.feedback() if row["correction"]}
        return [{"uid": f"feedback-{row['id']}", "product": product, "description": row["correction"]}
                for product, row in latest.items()]

    # Jobs and state
    def add_job(self, job_id: str, user: str, examples: int, feedback_examples: int) -> None:
        with self.connect() as connection:
            connection.execute("INSERT INTO jobs (id, user, status, examples, feedback_examples, created) "
                               "VALUES (?, ?, 'running', ?, ?, ?)", (job_id, user, examples, feedback_examples,
                                                                     time.time()))

    def update_job(self, job_id: str, **values: Any) -> None:
        columns = ", ".join(f"{name} = ?" for name in values)
        with self.connect() as connection:
            connection.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*values.values(), job_id))

    def job(self, job_id: str) -> dict | None:
        with self.connect() as connection:
            row = connection.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return dict(row) if row else None

    def running_jobs(self) -> list[dict]:
        with self.connect() as connection:
            return [dict(row) for row in connection.execute("SELECT * FROM jobs WHERE status = 'running'")]

    def get_state(self, key: str) -> str | None:
        with self.connect() as connection:
            row = connection.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self.connect() as connection:
            connection.execute("INSERT INTO state VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                               (key, value))


def export_feedback(store: Store, target: Path) -> int:
    """The corrections as JSON lines in the training split's format (uid, product, description): the next
    fine-tune's extra examples. Returns how many were written."""
    records = store.training_records()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(record) + "\n" for record in records))
    return len(records)


# --- Generation backends -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What a request will generate from: the model's name, the prompt text, and (rag) its sources."""

    model: str
    product: str
    prompt: str
    sources: tuple[dict, ...] = ()


class Backend(Protocol):
    """What the service asks of the models. ``CourseBackend`` is the real one; tests pass a fake."""

    def prepare(self, model: str, text: str) -> Prepared: ...

    def prepare_raw(self, model: str, prompt: str) -> Prepared: ...

    def complete(self, prepared: list[Prepared], max_tokens: int) -> list: ...  # helpers.models.Answer

    def stream(self, prepared: Prepared, max_tokens: int): ...  # an iterable of text with .answer and .close()

    def use_adapter(self, adapter: Path) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    @property
    def adapter(self) -> Path | None: ...


class CourseBackend:
    """The foundation model, the fine-tuned one (base + LoRA adapter) and the RAG chain's retrieval, loaded once."""

    def __init__(self, profile: Profile, adapter: Path | None = None) -> None:
        from helpers.data import ensure_processed
        from helpers.models import load_model
        from helpers.retrieval import ensure_index, retrieval_step, retriever
        from helpers.training import ensure_adapter

        self.profile = profile
        ensure_processed(profile, progress=False)
        self._adapter = Path(adapter) if adapter else ensure_adapter(profile)
        self.foundation = load_model(profile, verbose=False)
        self.tuned = load_model(profile, self._adapter, verbose=False)
        self.retrieval = retrieval_step(retriever(ensure_index(profile, progress=False), profile),
                                        profile.context_words)

    @property
    def adapter(self) -> Path:
        return self._adapter

    def _model(self, name: str):
        return self.foundation if name == "foundation" else self.tuned

    def prepare(self, model: str, text: str) -> Prepared:
        from helpers.prompts import format_prompt

        if model != "rag":
            return Prepared(model, text, format_prompt(text))
        item = self.retrieval.invoke(text)
        sources = tuple({"rank": rank, "title": document.metadata["title"], "uid": document.metadata["uid"]}
                        for rank, document in enumerate(item["sources"], start=1))
        return Prepared(model, text, item["prompt"], sources)

    def prepare_raw(self, model: str, prompt: str) -> Prepared:
        return Prepared(model, prompt, prompt)

    def complete(self, prepared: list[Prepared], max_tokens: int) -> list:
        from helpers.models import generate_answers

        model, tokenizer = self._model(prepared[0].model)
        return generate_answers(model, tokenizer, [item.prompt for item in prepared], self.profile,
                                max_new_tokens=max_tokens, progress=False)

    def stream(self, prepared: Prepared, max_tokens: int):
        from helpers.models import TextStream, check_prompt_lengths

        model, tokenizer = self._model(prepared.model)
        check_prompt_lengths([len(tokenizer(prepared.prompt)["input_ids"])], max_tokens, self.profile)
        return TextStream(model, tokenizer, prepared.prompt, self.profile, max_tokens)

    def count_tokens(self, text: str) -> int:
        return len(self.foundation[1](text)["input_ids"])

    def use_adapter(self, adapter: Path) -> None:
        """Serve another adapter: loaded beside the current one while answers go on, then swapped in with one
        assignment (an answer being written keeps the model it started with)."""
        from helpers.models import load_model

        self.tuned = load_model(self.profile, adapter, verbose=False)
        self._adapter = Path(adapter)


# --- Admission: one generation at a time, a bounded number waiting -------------------------------------------------


class GenerationQueue:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.admitted = 0
        self.rejected = 0
        self._count_lock = threading.Lock()
        self.generating = threading.Lock()

    def admit(self) -> bool:
        with self._count_lock:
            if self.admitted >= self.capacity:
                self.rejected += 1
                return False
            self.admitted += 1
            return True

    def release(self) -> None:
        with self._count_lock:
            self.admitted -= 1


# --- Training jobs ---------------------------------------------------------------------------------------------------


def training_job_command(job_dir: Path, examples: int, profile: Profile, feedback: Path | None) -> list[str]:
    command = [sys.executable, "-m", "helpers.serving", "train-job", "--job-dir", str(job_dir),
               "--examples", str(examples), "--profile", profile.name]
    return command + (["--feedback", str(feedback)] if feedback else [])


class TrainingJobs:
    """One fine-tune at a time, each in its own process group; its adapter is served only when the job succeeds.

    The child writes progress.json as it trains and saves its adapter to ``<job>/adapter`` with one rename, so the
    folder is either whole or absent. ``command`` builds the child's command line (tests pass a fake trainer).
    """

    def __init__(self, store: Store, settings: ServiceSettings, on_success, command=training_job_command) -> None:
        self.store, self.settings, self.on_success, self.command = store, settings, on_success, command
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()
        for job in store.running_jobs():  # left by a service that stopped (the job exits with it: exit_with_parent)
            store.update_job(job["id"], status="failed", error="the service stopped while the job ran",
                             finished=time.time())

    def job_dir(self, job_id: str) -> Path:
        return self.settings.jobs_dir / job_id

    def start(self, user: str, examples: int, include_feedback: bool) -> dict:
        with self._lock:
            # "running" until its watcher has recorded the end (and swapped in the adapter): never two at once.
            if self.store.running_jobs():
                raise ApiError(409, "A training job is already running: wait for it or cancel it.", "conflict")
            job_id = "job-" + uuid.uuid4().hex[:12]
            folder = self.job_dir(job_id)
            folder.mkdir(parents=True)
            feedback = None
            records = self.store.training_records() if include_feedback else []
            if records:
                feedback = folder / "feedback.jsonl"
                export_feedback(self.store, feedback)
            self.store.add_job(job_id, user, examples, len(records))
            try:
                with open(folder / "job.log", "wb") as log:
                    process = subprocess.Popen(self.command(folder, examples, self.settings.profile, feedback),
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as error:
                self.store.update_job(job_id, status="failed", error=f"could not start: {error}", finished=time.time())
                raise
            self.store.update_job(job_id, pid=process.pid)
            self._processes[job_id] = process
        threading.Thread(target=self._watch, args=(job_id, process), daemon=True).start()
        return self.describe(job_id)

    def _watch(self, job_id: str, process: subprocess.Popen) -> None:
        code = process.wait()
        adapter = self.job_dir(job_id) / "adapter"
        if job_id in self._cancelled:
            self.store.update_job(job_id, status="cancelled", finished=time.time())
        elif code == 0 and (adapter / "adapter_config.json").is_file():
            try:
                self.on_success(adapter)
            except Exception as error:  # the adapter does not load: keep serving the old one, say why
                self.store.update_job(job_id, status="failed", error=f"the new adapter did not load: {error}",
                                      finished=time.time())
                return
            self.store.update_job(job_id, status="succeeded", adapter=str(adapter), finished=time.time())
        else:
            self.store.update_job(job_id, status="failed", finished=time.time(),
                                  error=f"exit status {code}: {log_tail(self.job_dir(job_id) / 'job.log')}")

    def cancel(self, job_id: str) -> dict:
        process = self._processes.get(job_id)
        if process is None or process.poll() is not None:
            return self.describe(job_id)
        self._cancelled.add(job_id)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the trainer and anything it started
        process.wait()
        for _ in range(100):  # the watcher records the cancellation
            if self.store.job(job_id)["status"] == "cancelled":
                break
            time.sleep(0.05)
        return self.describe(job_id)

    def describe(self, job_id: str) -> dict:
        job = self.store.job(job_id)
        if job is None:
            raise ApiError(404, f"No training job {job_id!r}.", "not_found")
        progress = read_progress(self.job_dir(job_id) / "progress.json")
        adapter = job["adapter"] and display_path(Path(job["adapter"]))
        return {"id": job_id, "object": "training.job", "status": job["status"], "examples": job["examples"],
                "feedback_examples": job["feedback_examples"], "step": progress.get("step", 0),
                "max_steps": progress.get("max_steps"), "loss": progress.get("loss"), "adapter": adapter,
                "error": job["error"]}

    def stop_all(self) -> None:
        for job_id in list(self._processes):
            self.cancel(job_id)


def read_progress(path: Path) -> dict:
    """A job's progress.json; {} before its first step. A file that is not JSON (a trainer that does not write it
    atomically) is logged and read as no progress, rather than failing the status request."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        logger.warning("unreadable %s (%s): progress not shown", path, error)
        return {}


def log_tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(text[-lines:]) or "no output"


def write_json_atomically(path: Path, value: dict) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(value))
    partial.replace(path)


def exit_with_parent(poll_seconds: float = 1.0) -> None:
    """A job runs in its own process group (so that cancelling it kills all of it); if the service dies without
    cancelling it, the job stops too instead of training for nobody."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_training_job(job_dir: Path, examples: int, profile: Profile, feedback: Path | None) -> Path:
    """The child process of a job: a fresh LoRA on ``examples`` training records plus the feedback corrections,
    progress to progress.json, the adapter to <job>/adapter with one rename."""
    import datasets
    from transformers import TrainerCallback

    from helpers.data import ensure_processed, load_processed
    from helpers.training import (add_lora, build_trainer, load_base_model, replace_folder,
                                  select_training_records, training_examples)

    exit_with_parent()
    profile = replace(profile, train_examples=examples)
    ensure_processed(profile, progress=False)
    train, _ = load_processed(profile)
    records = select_training_records(train, profile)
    if feedback is not None:
        corrections = datasets.Dataset.from_list([json.loads(line) for line in feedback.read_text().splitlines()])
        records = datasets.concatenate_datasets([records, corrections.cast(records.features)])
    model, tokenizer = load_base_model(profile)
    model = add_lora(model, profile)
    dataset = training_examples(records, train, profile, tokenizer.eos_token).dataset
    trainer = build_trainer(model, tokenizer, dataset, profile, output_dir=str(job_dir / "trainer"))

    class ProgressFile(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            write_json_atomically(job_dir / "progress.json", {"step": state.global_step, "max_steps": state.max_steps,
                                                             "loss": (logs or {}).get("loss")})

    trainer.add_callback(ProgressFile())
    trainer.train()
    staging = job_dir / ".adapter.partial"
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    (staging / "job.json").write_text(json.dumps({"examples": examples, "feedback_examples": len(records) - examples,
                                                  "profile": profile.name}) + "\n")
    replace_folder(staging, job_dir / "adapter")
    return job_dir / "adapter"


# --- The HTTP service ------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "code"}}."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers

    def response(self):
        from fastapi.responses import JSONResponse

        return JSONResponse({"error": {"message": self.message, "type": self.kind, "code": self.status}},
                            status_code=self.status, headers=self.headers)


class BodyLimit:
    """Refuses a request body over ``limit`` bytes with 413, by its Content-Length or while it arrives."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        from starlette.exceptions import HTTPException

        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        message = f"The request body is over {self.limit} bytes."
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await ApiError(413, message, "request_too_large").response()(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message_ = await receive()
            received += len(message_.get("body", b""))
            if received > self.limit:  # a chunked body: FastAPI answers an HTTPException raised while it reads
                raise HTTPException(413, message)
            return message_

        await self.app(scope, counted_receive, send)


class FailureWindow:
    """Failed sign-ins per key (a user name, a client address) over the last ``seconds``: a sliding window."""

    # Past this many keys the expired ones are dropped: names sent by a guesser do not pile up without end.
    SWEEP_ABOVE = 10_000

    def __init__(self, limit: int, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.seconds, self.clock = limit, seconds, clock
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, key: str) -> int:
        """Whole seconds until ``key`` is under its limit again; 0 while it is."""
        with self._lock:
            failures = self._recent(key)
            if len(failures) < self.limit:
                return 0
            # The failure whose leaving brings the count under the limit: the oldest, unless racing requests added more.
            return max(1, math.ceil(failures[-self.limit] + self.seconds - self.clock()))

    def add(self, key: str) -> None:
        with self._lock:
            if len(self._failures) > self.SWEEP_ABOVE:
                for stale in list(self._failures):
                    self._recent(stale)
            self._failures.setdefault(key, deque()).append(self.clock())

    def clear(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _recent(self, key: str) -> deque[float]:
        """The key's failures still inside the window; a key left with none is forgotten."""
        failures = self._failures.get(key, deque())
        while failures and failures[0] <= self.clock() - self.seconds:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures


class SignInGuard:
    """What stands before argon2: too many recent failures for a name or an address, or too many checks running,
    get 429 without hashing anything (each check costs ~50 ms of a core and 64 MiB)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.names = FailureWindow(settings.sign_in_failures_per_name, settings.sign_in_window_seconds)
        self.addresses = FailureWindow(settings.sign_in_failures_per_address, settings.sign_in_window_seconds)
        self._checks = threading.BoundedSemaphore(settings.password_checks_at_once)

    def refuse_if_throttled(self, name: str, address: str) -> None:
        wait = max(self.names.retry_after(name), self.addresses.retry_after(address))
        if wait:
            raise ApiError(429, f"Too many failed sign-ins: retry in {wait} s.", "rate_limit_error",
                           {"Retry-After": str(wait)})

    @contextlib.contextmanager
    def checking(self) -> Iterator[None]:
        # Not waiting for a turn: a queue of checks would hold the thread pool's threads that answers need.
        if not self._checks.acquire(blocking=False):
            raise ApiError(429, "Too many sign-ins at once: retry shortly.", "rate_limit_error", {"Retry-After": "1"})
        try:
            yield
        finally:
            self._checks.release()

    def failed(self, name: str, address: str) -> None:
        self.names.add(name)
        self.addresses.add(address)

    def succeeded(self, name: str) -> None:
        self.names.clear(name)  # the address keeps its count: one success does not excuse guessing other names


def message_text(content) -> str:
    """A chat message's text: a string, or the text parts of a list of parts (OpenAI's two forms)."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or () if isinstance(part, dict))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def chunk(answer_id: str, created: int, model: str, delta: dict, finish_reason: str | None = None, **extra) -> dict:
    return {"id": answer_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


def parse_sse(text: str) -> list[dict]:
    """The JSON events of a Server-Sent Events body, up to ``data: [DONE]``: an event is a block of lines ended by a
    blank line, its data the ``data:`` lines joined by newlines; other lines (comments, ``event:``) carry no data."""
    events = []
    for block in text.split("\n\n"):
        lines = [line[len("data:"):].removeprefix(" ") for line in block.splitlines() if line.startswith("data:")]
        if not lines:
            continue
        data = "\n".join(lines)
        if data == "[DONE]":
            break
        events.append(json.loads(data))
    return events


def assemble_stream(chunks: Iterable[dict]) -> tuple[str, str | None]:
    """The answer text and finish reason of a streamed completion's chunks (dicts, as parse_sse gives them)."""
    text, finish_reason = "", None
    for item in chunks:
        for choice in item["choices"]:
            text += choice["delta"].get("content") or ""
            finish_reason = choice.get("finish_reason") or finish_reason
    return text, finish_reason


# --- Request bodies (module level: FastAPI resolves their names from the module) ----------------------------------

from fastapi import Request  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.responses import StreamingResponse  # noqa: E402
from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

MAX_JOB_EXAMPLES = 160  # a job on 2 cores: about the course's own fine-tune (160 examples, ~8 minutes)


class SignIn(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)

class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list | None = None

class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None

class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    stream: Literal[False] = False
    temperature: float | None = None

class Feedback(BaseModel):
    answer_id: str
    rating: Literal[-1, 1]
    correction: str | None = Field(None, max_length=4000)

class TrainRequest(BaseModel):
    examples: int = Field(8, ge=2, le=MAX_JOB_EXAMPLES)
    include_feedback: bool = True


@dataclass(frozen=True)
class Finished:
    """A streamed answer's last item: the whole answer (saved by then) and its prompt's length in tokens."""

    answer: Any  # helpers.models.Answer
    prompt_tokens: int


_CANCELLED = object()


class StreamedGeneration:
    """One streamed answer, generated to its end by a thread of its own whatever its reader does.

    The thread holds the generation lock only while the backend generates, and puts each piece on an unbounded queue:
    a reader that stops reading (its socket buffers full) does not keep the lock from the requests behind it. The
    thread saves the answer itself (an answer nobody read is still there to be rated), frees the admission when it
    ends, and always puts one last item: a Finished, an exception, or _CANCELLED. ``cancel()`` (the reader left)
    stops it at its next piece.
    """

    def __init__(self, prepared: Prepared, max_tokens: int, backend: Backend, generating: threading.Lock,
                 save: Callable[[Any], None], release: Callable[[], None]) -> None:
        self.prepared, self.max_tokens, self.backend = prepared, max_tokens, backend
        self.generating, self.save, self.release = generating, save, release
        self.items: SimpleQueue = SimpleQueue()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="streamed-answer")

    def start(self) -> StreamedGeneration:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancelled.set()

    def _run(self) -> None:
        last: Any = _CANCELLED
        try:
            outcome = self._generate()
            if isinstance(outcome, Finished):  # saved before the last chunk: a client rating it at once finds it
                self.save(outcome.answer)
            last = outcome
        except BaseException as error:  # raised again by the reader, where the response is written
            last = error
        finally:
            self.release()
            self.items.put(last)

    def _generate(self) -> Finished | Exception | object:
        from helpers.models import PromptTooLongError

        with self.generating:
            if self._cancelled.is_set():  # the reader left while this waited for its turn
                return _CANCELLED
            try:
                stream = self.backend.stream(self.prepared, self.max_tokens)
            except PromptTooLongError as error:
                return error
            try:
                for piece in stream:
                    if self._cancelled.is_set():
                        return _CANCELLED
                    self.items.put(piece)
            finally:
                stream.close()
            return Finished(stream.answer, self.backend.count_tokens(self.prepared.prompt))


async def next_item(items: SimpleQueue) -> Any:
    import anyio

    try:
        return items.get_nowait()  # the producer is usually ahead: no trip to the thread pool
    except Empty:
        # Abandoned if the client leaves: the reader's finally cancels the generation now, not after the next piece.
        # The thread still returns, as the producer always puts a last item.
        return await anyio.to_thread.run_sync(items.get, abandon_on_cancel=True)


async def sse_events(generation: StreamedGeneration, answer_id: str, created: int) -> AsyncIterator[str]:
    """The answer's Server-Sent Events as the producer thread hands its pieces over; cancels it however it ends."""
    from helpers.models import PromptTooLongError

    prepared = generation.prepared
    try:
        extra = {"sources": list(prepared.sources)} if prepared.model == "rag" else {}
        yield sse(chunk(answer_id, created, prepared.model, {"role": "assistant", "content": ""}, **extra))
        while isinstance(item := await next_item(generation.items), str):
            yield sse(chunk(answer_id, created, prepared.model, {"content": item}))
        if isinstance(item, PromptTooLongError):
            yield sse({"error": {"message": str(item), "type": "invalid_request_error", "code": 422}})
        elif isinstance(item, BaseException):
            raise item
        elif isinstance(item, Finished):
            yield sse(chunk(answer_id, created, prepared.model, {}, item.answer.finish_reason,
                            usage=usage(item.prompt_tokens, item.answer.new_tokens)))
            yield sse("[DONE]")
    finally:
        generation.cancel()


class ClosingStreamingResponse(StreamingResponse):
    """Starlette leaves a body iterator open when the client goes away (until garbage collection); this closes it."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()


def create_app(settings: ServiceSettings, backend: Backend, job_command=training_job_command):
    """The FastAPI application over ``backend``, keeping its state under ``settings.data_dir``."""
    from fastapi import Depends, FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.exceptions import HTTPException

    store = Store(settings.database)
    queue = GenerationQueue(settings.queue_capacity)

    def serve_adapter(adapter: Path) -> None:
        backend.use_adapter(adapter)
        store.set_state("adapter", str(adapter))

    jobs = TrainingJobs(store, settings, serve_adapter, job_command)
    guard = SignInGuard(settings)
    # No public /docs, /redoc or /openapi.json: the schema is served below, to signed-in users only.
    app = FastAPI(title="Course service", summary="SmolLM2: foundation, fine-tuned and RAG, OpenAI-compatible",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.queue, app.state.jobs, app.state.backend = store, queue, jobs, backend
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
        return ApiError(422, f"Malformed request: {problems}").response()

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        return ApiError(error.status_code, str(error.detail), "not_found" if error.status_code == 404
                        else "invalid_request_error").response()

    @app.exception_handler(Exception)
    async def server_error(request, error: Exception):
        logger.exception("error answering %s %s", request.method, request.url.path)
        return ApiError(500, "Internal error: the service's log says what went wrong.", "server_error").response()

    def current_user(request: Request) -> str:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        unauthorized = {"WWW-Authenticate": "Bearer"}
        if scheme.lower() != "bearer" or not credential.strip():
            raise ApiError(401, "Sign in first: send Authorization: Bearer <token or API key>.", "authentication_error",
                           unauthorized)
        user = store.user_for(credential.strip())
        if user is None:
            raise ApiError(401, "The token or API key is invalid or has expired: sign in again.",
                           "authentication_error", unauthorized)
        return user

    def checked_model(name: str, allowed: tuple[str, ...] = MODELS) -> str:
        if name not in MODELS:
            raise ApiError(404, f"The model {name!r} does not exist: choose one of {', '.join(MODELS)}.",
                           "not_found")
        if name not in allowed:
            raise ApiError(400, f"The model {name!r} takes a product title: use /v1/chat/completions.")
        return name

    def checked_max_tokens(*asked: int | None) -> int:
        value = next((number for number in asked if number is not None), settings.profile.max_new_tokens)
        if value > settings.max_tokens:
            raise ApiError(422, f"max_tokens={value} is over this service's cap of {settings.max_tokens}.")
        return value

    def admitted():
        if not queue.admit():
            raise ApiError(429, f"The service is busy ({settings.queue_capacity} requests admitted): retry shortly.",
                           "rate_limit_error", {"Retry-After": "1"})

    def generate(prepared: list[Prepared], max_tokens: int) -> tuple[list, float, int]:
        """The answers, the seconds spent generating them (not waiting for the lock), and the prompts' tokens (the
        tokenizer is not safe to share between threads: it is used under the lock only)."""
        from helpers.models import PromptTooLongError

        with queue.generating:
            started = time.perf_counter()
            try:
                answers = backend.complete(prepared, max_tokens)
            except PromptTooLongError as error:
                raise ApiError(422, str(error)) from None
            seconds = time.perf_counter() - started
            return answers, seconds, sum(backend.count_tokens(item.prompt) for item in prepared)

    @app.get("/openapi.json", include_in_schema=False)
    def openapi_schema(user: str = Depends(current_user)):
        return app.openapi()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return (resources.files("helpers") / "static" / "index.html").read_text()

    @app.post("/auth/token")
    def sign_in(form: SignIn, request: Request):
        address = request.client.host if request.client else "unknown"
        guard.refuse_if_throttled(form.username, address)
        with guard.checking():
            valid = store.check_password(form.username, form.password)
        if not valid:
            guard.failed(form.username, address)
            raise ApiError(401, "Unknown user name or wrong password.", "authentication_error")
        guard.succeeded(form.username)
        token, expires = store.issue_token(form.username, settings.token_seconds)
        return {"access_token": token, "token_type": "bearer", "expires_in": settings.token_seconds,
                "expires_at": int(expires)}

    @app.get("/v1/models")
    def list_models(user: str = Depends(current_user)):
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "course"}
                                           for name in MODELS]}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, user: str = Depends(current_user)):
        from helpers.retrieval import cut_at_stop

        model = checked_model(request.model, ("foundation", "fine-tuned"))
        max_tokens = checked_max_tokens(request.max_tokens)
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if not prompts or len(prompts) > settings.profile.generation_batch_size:
            raise ApiError(422, f"Send 1 to {settings.profile.generation_batch_size} prompts in one request.")
        stop = [request.stop] if isinstance(request.stop, str) else request.stop
        admitted()
        try:
            answers, _, prompt_tokens = await run_in_threadpool(
                generate, [backend.prepare_raw(model, prompt) for prompt in prompts], max_tokens)
        finally:
            queue.release()
        return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
                "choices": [{"index": index, "text": cut_at_stop(answer.text, stop), "logprobs": None,
                             # a stop sequence that cut the text ended it, as OpenAI reports it
                             "finish_reason": "stop" if cut_at_stop(answer.text, stop) != answer.text
                             else answer.finish_reason} for index, answer in enumerate(answers)],
                "usage": usage(prompt_tokens, sum(answer.new_tokens for answer in answers))}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest, user: str = Depends(current_user)):
        model = checked_model(request.model)
        max_tokens = checked_max_tokens(request.max_completion_tokens, request.max_tokens)
        users = [message for message in request.messages if message.role == "user"]
        title = message_text(users[-1].content).strip() if users else ""
        if not title:
            raise ApiError(422, "Malformed request: the last user message must hold a product title.")
        if len(title) > settings.max_title_chars:
            raise ApiError(422, f"The product title is over {settings.max_title_chars} characters.")
        admitted()
        try:
            prepared = await run_in_threadpool(backend.prepare, model, title)
        except BaseException:
            queue.release()
            raise
        answer_id, created = new_id("chatcmpl"), int(time.time())
        if request.stream:
            return streamed(prepared, max_tokens, answer_id, created, user)
        try:
            answers, seconds, prompt_tokens = await run_in_threadpool(generate, [prepared], max_tokens)
        finally:
            queue.release()
        answer = answers[0]
        store.save_answer(answer_id, user, model, title, answer.text, answer.finish_reason, list(prepared.sources))
        body = {"id": answer_id, "object": "chat.completion", "created": created, "model": model,
                "system_fingerprint": f"course-{settings.profile.name}-greedy",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": answer.finish_reason}],
                "usage": usage(prompt_tokens, answer.new_tokens)}
        if model == "rag":
            body["sources"] = list(prepared.sources)
        # What generation alone took: a client subtracts it from its latency to see what HTTP and the service add.
        return JSONResponse(body, headers={GENERATION_SECONDS_HEADER: f"{seconds:.4f}"})

    def streamed(prepared: Prepared, max_tokens: int, answer_id: str, created: int, user: str):
        """Generation starts now in a thread of its own (StreamedGeneration); the response writes what it hands over."""

        def save(answer) -> None:
            store.save_answer(answer_id, user, prepared.model, prepared.product, answer.text, answer.finish_reason,
                              list(prepared.sources))

        generation = StreamedGeneration(prepared, max_tokens, backend, queue.generating, save, queue.release).start()
        events = sse_events(generation, answer_id, created)
        weakref.finalize(events, generation.cancel)  # a response never started runs no finally: stop generating anyway
        return ClosingStreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.post("/v1/feedback", status_code=201)
    def post_feedback(feedback: Feedback, user: str = Depends(current_user)):
        answer = store.answer(feedback.answer_id)
        # Another user's answer reads as no answer: the reply does not confirm that an id exists.
        if answer is None or answer["user"] != user:
            raise ApiError(404, f"No answer {feedback.answer_id!r}: feedback names the id of an answer this service "
                                "gave you.", "not_found")
        correction = feedback.correction.strip() if feedback.correction else None
        feedback_id = store.add_feedback(feedback.answer_id, user, feedback.rating, correction or None)
        return {"id": feedback_id, "object": "feedback", "answer_id": feedback.answer_id}

    @app.get("/v1/feedback")
    def list_feedback(user: str = Depends(current_user)):
        return {"object": "list", "data": store.feedback(user)}

    def current_instructor(user: str = Depends(current_user)) -> str:
        if not store.is_instructor(user):
            # The message's start is what notebook 07's table of errors shows: keep it.
            raise ApiError(403, "Only an instructor starts or cancels training jobs, or follows them: the new adapter "
                                "serves everyone.", "permission_error")
        return user

    @app.post("/v1/train", status_code=202)
    def start_training(request: TrainRequest, user: str = Depends(current_instructor)):
        return jobs.start(user, request.examples, request.include_feedback)

    @app.get("/v1/train/{job_id}")
    def training_status(job_id: str, user: str = Depends(current_instructor)):
        return jobs.describe(job_id)

    @app.delete("/v1/train/{job_id}")
    def cancel_training(job_id: str, user: str = Depends(current_instructor)):
        jobs.describe(job_id)  # 404 for an unknown job
        return jobs.cancel(job_id)

    @app.get("/v1/status")
    def service_status(user: str = Depends(current_user)):
        return {"profile": settings.profile.name, "adapter": backend.adapter and display_path(backend.adapter),
                "admitted": queue.admitted, "queue_capacity": queue.capacity, "rejected": queue.rejected}

    return app


def backend_for(settings: ServiceSettings) -> CourseBackend:
    """The real models, serving the adapter of the last successful training job if there is one."""
    served = Store(settings.database).get_state("adapter")
    adapter = Path(served) if served and (Path(served) / "adapter_config.json").is_file() else None
    return CourseBackend(settings.profile, adapter)


# --- Running it ------------------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServerThread:
    """uvicorn serving ``app`` from a thread of this process (tests, benchmarks); ``with`` stops it."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None) -> None:
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The service did not start on {self.url}.")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ServiceProcess:
    """``python -m helpers.serving serve`` in a child process on a free loopback port (notebook 07, benchmarks).

    Its log goes to ``<data_dir>/service.log``, not to the caller's output. ``stop()`` (or leaving ``with``) ends it.
    """

    def __init__(self, profile: Profile, data_dir: Path, port: int | None = None, startup_seconds: float = 600):
        self.profile, self.data_dir = profile, Path(data_dir)
        self.port = port or free_port()
        self.startup_seconds = startup_seconds
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "service.log"

    @property
    def settings(self) -> ServiceSettings:
        return ServiceSettings(profile=self.profile, data_dir=self.data_dir)

    def start(self) -> ServiceProcess:
        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "helpers.serving", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--profile", self.profile.name, "--data-dir", str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT)  # in the caller's process group: killed with it
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The service exited with status {self.process.returncode}: {log_tail(self.log)}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 401:  # up, and asking for a sign-in
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"The service did not answer within {self.startup_seconds:.0f} s: {log_tail(self.log)}")

    def add_user(self, name: str, password: str, instructor: bool = False) -> None:
        Store(self.data_dir / "service.sqlite3").add_user(name, password, instructor)

    def sign_in(self, name: str, password: str) -> str:
        import httpx

        response = httpx.post(self.url + "/auth/token", json={"username": name, "password": password}, timeout=30)
        response.raise_for_status()
        return response.json()["access_token"]

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: running jobs are cancelled
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def fresh_folder(folder: Path) -> Path:
    """An empty folder (a notebook re-run starts with no users, answers or jobs of the last run)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


# --- The client side: what notebook 07 and the page call besides the OpenAI routes ----------------------------------

DEMO_JOB_EXAMPLES = 8  # notebook 07's job: with one correction, 5 steps of the cpu profile, ~1.5 min on 2 cores


def notebook_data_dir(profile: Profile) -> Path:
    return paths().outputs / "serving" / f"notebook-{profile.name}"


class CourseClient:
    """The service's own routes (feedback, training jobs, status) and raw requests, over httpx with a bearer token."""

    def __init__(self, base_url: str, token: str | None) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=600)

    def raw_chat(self, model: str, title: str, **body) -> Any:
        """The HTTP response itself (status, headers, text), for looking at what the OpenAI client parses."""
        return self.http.post("/v1/chat/completions",
                              json={"model": model, "messages": [{"role": "user", "content": title}], **body})

    def rate(self, answer_id: str, rating: int, correction: str | None = None) -> dict:
        response = self.http.post("/v1/feedback", json={"answer_id": answer_id, "rating": rating,
                                                        "correction": correction})
        response.raise_for_status()
        return response.json()

    def feedback(self):
        import pandas as pd

        rows = self.http.get("/v1/feedback").raise_for_status().json()["data"]
        columns = ["id", "model", "product", "rating", "correction"]
        return pd.DataFrame(rows, columns=[*columns, "answer_id", "user", "answer"])[columns].set_index("id")

    def status(self) -> dict:
        return self.http.get("/v1/status").raise_for_status().json()

    def train(self, examples: int, include_feedback: bool = True) -> dict:
        response = self.http.post("/v1/train", json={"examples": examples, "include_feedback": include_feedback})
        response.raise_for_status()
        return response.json()

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/v1/train/{job_id}").raise_for_status().json()

    def cancel(self, job_id: str) -> dict:
        return self.http.delete(f"/v1/train/{job_id}").raise_for_status().json()

    def watch(self, job_id: str, poll_seconds: float = 1.0) -> dict:
        """Polls the job until it ends, with a bar over its optimizer steps."""
        from helpers.quiet import progress

        job = self.job(job_id)
        # No total until the trainer knows its steps (loading and preparing the data come first).
        with progress(total=job["max_steps"], desc="training job", unit="step") as bar:
            while job["status"] == "running":
                time.sleep(poll_seconds)
                job = self.job(job_id)
                if job["max_steps"] and bar.total != job["max_steps"]:
                    bar.total = job["max_steps"]
                if job["loss"] is not None:
                    bar.set_postfix(loss=f"{job['loss']:.3f}", refresh=False)
                bar.update(job["step"] - bar.n)
        return job


def job_summary(job: dict):
    """What a finished job did, without the values that differ between machines (loss) or runs (ids)."""
    import pandas as pd

    return pd.DataFrame({"value": {"status": job["status"], "training records": job["examples"],
                                   "plus corrections from feedback": job["feedback_examples"],
                                   "optimizer steps": f"{job['step']} of {job['max_steps']}",
                                   "error": job["error"] or "none"}}).rename_axis("training job")


def sources_table(reply):
    """The sources of a ``rag`` reply (the extra ``sources`` field), one row per retrieved product."""
    import pandas as pd

    return pd.DataFrame(reply.model_extra["sources"]).set_index("rank")


def error_examples(base_url: str, token: str, student_token: str, settings: ServiceSettings):
    """One bad request of each kind and what the service answers: the status and its message."""
    import pandas as pd

    good = CourseClient(base_url, token)
    title = "Girls Ballet Tutu Neon Blue"
    cases = {
        "no token": lambda: CourseClient(base_url, None).raw_chat("fine-tuned", title),
        "a wrong token": lambda: CourseClient(base_url, "not-a-token").raw_chat("fine-tuned", title),
        "an unknown model": lambda: good.raw_chat("gpt-4o", title),
        "max_tokens over the cap": lambda: good.raw_chat("fine-tuned", title, max_tokens=settings.max_tokens + 1),
        "no user message": lambda: good.http.post("/v1/chat/completions", json={"model": "rag", "messages": []}),
        "a body over the limit": lambda: good.raw_chat("fine-tuned", "x" * settings.max_body_bytes),
        "feedback on no answer": lambda: good.http.post("/v1/feedback", json={"answer_id": "chatcmpl-none",
                                                                              "rating": 1}),
        "a student starting a training job": lambda: CourseClient(base_url, student_token).http.post(
            "/v1/train", json={"examples": 8}),
    }
    rows = {}
    for name, request in cases.items():
        response = request()
        rows[name] = {"status": response.status_code, "message": response.json()["error"]["message"]}
    return pd.DataFrame(rows).T.rename_axis("request")


def print_stream(chunks) -> str:
    """Prints a streamed reply as it arrives (OpenAI client chunks) and returns its text."""
    text = ""
    for item in chunks:
        for choice in item.choices:
            piece = choice.delta.content or ""
            print(piece, end="", flush=True)
            text += piece
    print()
    return text


# --- Command line ----------------------------------------------------------------------------------------------------


def settings_from(args) -> ServiceSettings:
    profile = PROFILES[args.profile]() if args.profile else active_profile(verbose=False)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir(profile)
    return ServiceSettings(profile=profile, data_dir=data_dir)


def read_password(name: str) -> str:
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if password != getpass.getpass("again: "):
            raise SystemExit("error: the two passwords differ")
        return password
    return sys.stdin.readline().rstrip("\n")


def serve(settings: ServiceSettings, host: str, port: int) -> int:
    import uvicorn

    print(f"== loading {settings.profile.summary()} (state in {display_path(settings.data_dir)})", flush=True)
    app = create_app(settings, backend_for(settings))
    with Store(settings.database).connect() as connection:
        users = connection.execute("SELECT COUNT(*) FROM users").fetchone()[0]
    if users == 0:
        print("   no users yet: python -m helpers.serving adduser NAME (password on standard input)", flush=True)
    print(f"== serving on http://{host}:{port} (OpenAI base_url http://{host}:{port}/v1)", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C/SIGINT, then re-raises it
        pass
    finally:
        app.state.jobs.stop_all()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.serving", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (("serve", "start the service"), ("adduser", "add a user (password from standard input)"),
                          ("apikey", "print a new API key for a user"),
                          ("export-feedback", "write the corrections as training records (JSON lines)"),
                          ("train-job", "(internal) the child process of a training job")):
        command = commands.add_parser(name, help=summary)
        command.add_argument("--profile", choices=sorted(PROFILES), default=None)
        command.add_argument("--data-dir", default=None, help="where the database and jobs live "
                                                              "(default outputs/serving/<profile>)")
        if name == "serve":
            command.add_argument("--host", default="127.0.0.1")
            command.add_argument("--port", type=int, default=8000)
        if name in ("adduser", "apikey"):
            command.add_argument("name")
        if name == "adduser":
            command.add_argument("--instructor", action="store_true",
                                 help="may start and cancel training jobs (their adapter serves every user)")
        if name == "export-feedback":
            command.add_argument("--output", default=None, help="default <data-dir>/feedback.jsonl")
        if name == "train-job":
            command.add_argument("--job-dir", required=True)
            command.add_argument("--examples", type=int, required=True)
            command.add_argument("--feedback", default=None)
    args = parser.parse_args(argv)
    settings = settings_from(args)
    if args.command == "serve":
        return serve(settings, args.host, args.port)
    if args.command == "train-job":
        print(run_training_job(Path(args.job_dir), args.examples, settings.profile,
                               Path(args.feedback) if args.feedback else None))
        return 0
    store = Store(settings.database)
    if args.command == "adduser":
        password = read_password(args.name)
        if not password:
            print("error: empty password (give it on standard input)", file=sys.stderr)
            return 1
        store.add_user(args.name, password, args.instructor)
        role = "instructor" if args.instructor else "student"
        print(f"user {args.name} ({role}) saved in {display_path(settings.database)}")
    elif args.command == "apikey":
        try:
            print(store.add_api_key(args.name))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    elif args.command == "export-feedback":
        target = Path(args.output) if args.output else settings.data_dir / "feedback.jsonl"
        count = export_feedback(store, target)
        print(f"{count} corrections written to {display_path(target)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
