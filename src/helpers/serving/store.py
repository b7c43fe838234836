"""The service's storage: one SQLite file in WAL mode (``SCHEMA``) holding users, credentials, answers, feedback,
training jobs and a little state, behind ``Store`` (a connection per call, safe from any thread or process);
``digest`` (how tokens and keys are stored) and ``export_feedback`` (the corrections as training records)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers.serving.settings import API_KEY_PREFIX


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
