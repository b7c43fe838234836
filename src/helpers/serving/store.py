"""The service's storage: one SQLite file in WAL mode (``SCHEMA``) holding users, credentials, answers, feedback,
training jobs and a little state, behind ``Store`` (a connection per call, safe from any thread or process);
``digest`` (how tokens and keys are stored) and ``export_feedback`` (the approved corrections as training records).
A database made by an older ``SCHEMA`` is brought up to date when a ``Store`` opens it (``ADDED_COLUMNS``)."""
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

from helpers.serving.settings import API_KEY_PREFIX, ServiceSettings


# --- Storage: one SQLite file in WAL mode --------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password_hash TEXT NOT NULL, created REAL NOT NULL,
    instructor INTEGER NOT NULL DEFAULT 0, deleted REAL);
CREATE TABLE IF NOT EXISTS credentials (digest TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(name),
    kind TEXT NOT NULL, expires REAL, id TEXT, created REAL, last4 TEXT);
CREATE TABLE IF NOT EXISTS answers (id TEXT PRIMARY KEY, user TEXT NOT NULL, model TEXT NOT NULL,
    product TEXT NOT NULL, answer TEXT NOT NULL, finish_reason TEXT NOT NULL, sources TEXT NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, answer_id TEXT NOT NULL REFERENCES answers(id),
    user TEXT NOT NULL, rating INTEGER NOT NULL, correction TEXT, created REAL NOT NULL, status TEXT, reviewer TEXT,
    reviewed REAL);
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, user TEXT NOT NULL, status TEXT NOT NULL, examples INTEGER NOT NULL,
    feedback_examples INTEGER NOT NULL, pid INTEGER, adapter TEXT, error TEXT, created REAL NOT NULL, finished REAL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Columns that SCHEMA's tables gained after databases were made with them: (table, column, declaration), each added
# with ALTER TABLE where missing (instructors keep outputs/serving/<profile>/service.sqlite3 between versions).
ADDED_COLUMNS = (
    ("users", "deleted", "REAL"),  # when the user was deleted; their answers and feedback stay
    ("credentials", "id", "TEXT"),  # an API key's public id (DELETE /v1/keys/{id})
    ("credentials", "created", "REAL"),
    ("credentials", "last4", "TEXT"),  # an API key's last 4 characters, what a list of keys shows of it
    ("feedback", "status", "TEXT"),  # a correction: pending, approved or rejected (NULL: a rating alone)
    ("feedback", "reviewer", "TEXT"),
    ("feedback", "reviewed", "REAL"),
)
CORRECTION_STATES = ("pending", "approved", "rejected")


def new_key_id() -> str:
    return "key-" + secrets.token_hex(6)


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
        self.migrate()

    def migrate(self) -> None:
        """Brings a database made by an older SCHEMA up to date, in one transaction (idempotent; a service and a
        command opening it at once take turns): the missing columns, then what older rows lacked. A correction
        stored before corrections were reviewed becomes pending (it trains nothing until approved); an API key made
        before keys expired gets an id and expires ``ServiceSettings.api_key_days`` from now."""
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # transactions as written here
        try:
            connection.execute("BEGIN IMMEDIATE")
            for table, column, declaration in ADDED_COLUMNS:
                if column not in {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}:
                    connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            connection.execute("CREATE UNIQUE INDEX IF NOT EXISTS credentials_id ON credentials(id)")
            connection.execute("UPDATE feedback SET status = 'pending' WHERE correction IS NOT NULL AND status IS NULL")
            for (key_digest,) in connection.execute("SELECT digest FROM credentials WHERE kind = 'key' AND id IS NULL "
                                                    "AND expires IS NULL").fetchall():
                connection.execute("UPDATE credentials SET id = ?, expires = ? WHERE digest = ?",
                                   (new_key_id(), time.time() + ServiceSettings.api_key_days * 86400, key_digest))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

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
    def add_user(self, name: str, password: str, instructor: bool | None = None, exists: bool | None = None) -> bool:
        """Adds a user, or sets an existing one's password; returns their role (True: instructor).

        The role changes only when ``instructor`` is given: None keeps an existing user's role (a new user is a
        student). ``exists=False`` refuses a name in use, ``exists=True`` a new name (the command line's ``adduser``
        and ``adduser --reset-password``). A deleted user's name is not given again: their answers and feedback stay
        under it. A new password ends every token and key of the user."""
        from argon2 import PasswordHasher

        if not name or not password:
            raise ValueError("A user needs a name and a non-empty password.")
        password_hash = PasswordHasher().hash(password)
        with self.connect() as connection:
            row = self.check_name(name, exists, connection)
            role = bool(row["instructor"]) if instructor is None and row is not None else bool(instructor)
            connection.execute("INSERT INTO users (name, password_hash, created, instructor) VALUES (?, ?, ?, ?) "
                               "ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash, "
                               "instructor = excluded.instructor", (name, password_hash, time.time(), int(role)))
            connection.execute("DELETE FROM credentials WHERE user = ?", (name,))
        return role

    def check_name(self, name: str, exists: bool | None = None, connection: sqlite3.Connection | None = None):
        """The user's row (instructor, deleted) or None; ValueError, saying what to do instead, for a deleted user's
        name, for a new name when ``exists`` is True, and for one in use when it is False."""
        with contextlib.nullcontext(connection) if connection else self.connect() as connection:
            row = connection.execute("SELECT instructor, deleted FROM users WHERE name = ?", (name,)).fetchone()
        if row is not None and row["deleted"] is not None:
            raise ValueError(f"{name!r} is a deleted user's name: their answers and feedback stay under it, so it is "
                             "not given again. Choose another name.")
        if exists and row is None:
            raise ValueError(f"No user {name!r}: add it first (python -m helpers.serving adduser {name}).")
        if exists is False and row is not None:
            role = "instructor" if row["instructor"] else "student"
            raise ValueError(f"The user {name!r} exists already ({role}): nothing changed. A new password, same role: "
                             f"python -m helpers.serving adduser {name} --reset-password; another role: "
                             f"python -m helpers.serving role {name} instructor|student.")
        return row

    def set_role(self, name: str, instructor: bool) -> None:
        """Makes a user an instructor or a student, on purpose (python -m helpers.serving role NAME ROLE); their
        tokens and keys go on working, with the new role from their next request."""
        with self.connect() as connection:
            changed = connection.execute("UPDATE users SET instructor = ? WHERE name = ? AND deleted IS NULL",
                                         (int(instructor), name)).rowcount
        if not changed:
            raise ValueError(f"No user {name!r}.")

    def delete_user(self, name: str) -> None:
        """Deletes a user: their tokens and API keys stop working at once and they cannot sign in. Their answers,
        feedback (corrections and reviews included) and jobs stay, for the record, under their name, which is not
        given to anyone again (the row stays, marked deleted, its password hash gone)."""
        with self.connect() as connection:
            deleted = connection.execute("UPDATE users SET deleted = ?, password_hash = '' WHERE name = ? AND "
                                         "deleted IS NULL", (time.time(), name)).rowcount
            connection.execute("DELETE FROM credentials WHERE user = ?", (name,))
        if not deleted:
            raise ValueError(f"No user {name!r}.")

    def is_instructor(self, name: str) -> bool:
        with self.connect() as connection:
            row = connection.execute("SELECT instructor FROM users WHERE name = ? AND deleted IS NULL",
                                     (name,)).fetchone()
        return bool(row and row["instructor"])

    def check_password(self, name: str, password: str) -> bool:
        from argon2 import PasswordHasher
        from argon2.exceptions import VerificationError, InvalidHashError

        with self.connect() as connection:
            row = connection.execute("SELECT password_hash FROM users WHERE name = ? AND deleted IS NULL",
                                     (name,)).fetchone()
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
            connection.execute("INSERT INTO credentials (digest, user, kind, expires, created) VALUES "
                               "(?, ?, 'token', ?, ?)", (digest(token), name, expires, time.time()))
        return token, expires

    def add_api_key(self, name: str, days: float = ServiceSettings.api_key_days) -> str:
        return self.create_api_key(name, days)["key"]

    def create_api_key(self, name: str, days: float) -> dict:
        """A new API key of the user, working ``days`` days: the key itself (shown this once; only its digest and
        last 4 characters are kept), its id, created, expires and last4."""
        key, created = API_KEY_PREFIX + secrets.token_urlsafe(32), time.time()
        described = {"id": new_key_id(), "created": created, "expires": created + days * 86400, "last4": key[-4:]}
        with self.connect() as connection:
            if connection.execute("SELECT 1 FROM users WHERE name = ? AND deleted IS NULL", (name,)).fetchone() is None:
                raise ValueError(f"No user {name!r}: add it first (python -m helpers.serving adduser {name}).")
            connection.execute("INSERT INTO credentials (digest, user, kind, expires, id, created, last4) VALUES "
                               "(:digest, :user, 'key', :expires, :id, :created, :last4)",
                               {"digest": digest(key), "user": name, **described})
        return {"key": key, **described}

    def api_keys(self, name: str) -> list[dict]:
        """The user's API keys, expired ones included: id, created, expires, last4 (never the key or its digest)."""
        with self.connect() as connection:
            rows = connection.execute("SELECT id, created, expires, last4 FROM credentials WHERE user = ? AND "
                                      "kind = 'key' ORDER BY created, id", (name,)).fetchall()
        return [dict(row) for row in rows]

    def revoke_api_key(self, name: str, key_id: str) -> bool:
        """Ends one of the user's API keys at once; False when they have no key ``key_id``."""
        with self.connect() as connection:
            return connection.execute("DELETE FROM credentials WHERE user = ? AND kind = 'key' AND id = ?",
                                      (name, key_id)).rowcount > 0

    def revoke(self, credential: str) -> bool:
        """Ends a token or key, given itself (signing out); False when it was not valid."""
        with self.connect() as connection:
            return connection.execute("DELETE FROM credentials WHERE digest = ?", (digest(credential),)).rowcount > 0

    def credential(self, secret: str) -> dict | None:
        """What a bearer credential is, while it works: its user, kind ("token" or "key") and id (a key's); None
        for an unknown, expired or revoked one, or one of a deleted user."""
        with self.connect() as connection:
            row = connection.execute("SELECT credentials.user, credentials.kind, credentials.id, credentials.expires "
                                     "FROM credentials JOIN users ON users.name = credentials.user "
                                     "WHERE credentials.digest = ? AND users.deleted IS NULL",
                                     (digest(secret),)).fetchone()
        if row is None or (row["expires"] is not None and row["expires"] < time.time()):
            return None
        return {"user": row["user"], "kind": row["kind"], "id": row["id"]}

    def user_for(self, credential: str) -> str | None:
        found = self.credential(credential)
        return found and found["user"]

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
        """Saves a rating and its correction, if any. A correction is stored "pending": it trains nothing until an
        instructor approves it (``review_correction``). An instructor's own correction is stored approved, reviewed
        by its author (notebook 07's instructor rates an answer and trains on the correction at once)."""
        status = ("approved" if self.is_instructor(user) else "pending") if correction else None
        now = time.time()
        with self.connect() as connection:
            cursor = connection.execute(
                "INSERT INTO feedback (answer_id, user, rating, correction, created, status, reviewer, reviewed) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (answer_id, user, rating, correction, now, status,
                                                    *((user, now) if status == "approved" else (None, None))))
            return int(cursor.lastrowid)

    def feedback(self, user: str | None = None) -> list[dict]:
        query = ("SELECT feedback.id, feedback.answer_id, feedback.user, feedback.rating, feedback.correction, "
                 "feedback.status, answers.model, answers.product, answers.answer FROM feedback JOIN answers ON "
                 "answers.id = feedback.answer_id")
        with self.connect() as connection:
            rows = connection.execute(query + (" WHERE feedback.user = ?" if user else "") + " ORDER BY feedback.id",
                                      (user,) if user else ()).fetchall()
        return [dict(row) for row in rows]

    def training_records(self) -> list[dict]:
        """Every approved correction as a training record (the processed split's fields), the latest per product.
        A pending or rejected correction trains nothing."""
        latest = {row["product"]: row for row in self.feedback() if row["correction"] and row["status"] == "approved"}
        return [{"uid": f"feedback-{row['id']}", "product": product, "description": row["correction"]}
                for product, row in latest.items()]

    CORRECTIONS = ("SELECT feedback.id, feedback.answer_id, answers.product, feedback.correction, feedback.user, "
                   "feedback.created, feedback.status, feedback.reviewer, feedback.reviewed FROM feedback JOIN answers "
                   "ON answers.id = feedback.answer_id WHERE feedback.correction IS NOT NULL")

    def corrections(self, status: str | None = "pending") -> list[dict]:
        """The corrections with ``status`` (None: all), oldest first: id, answer_id, product, correction, user,
        created, status, reviewer, reviewed."""
        with self.connect() as connection:
            rows = connection.execute(self.CORRECTIONS + (" AND feedback.status = ?" if status else "") +
                                      " ORDER BY feedback.id", (status,) if status else ()).fetchall()
        return [dict(row) for row in rows]

    def correction(self, feedback_id: int) -> dict | None:
        with self.connect() as connection:
            row = connection.execute(self.CORRECTIONS + " AND feedback.id = ?", (feedback_id,)).fetchone()
        return dict(row) if row else None

    def review_correction(self, feedback_id: int, status: str, reviewer: str) -> dict:
        """Approves or rejects a pending correction, once: ValueError for no such correction, or one reviewed
        already (a rejected correction never trains; an approved one is in every later job's feedback)."""
        if status not in ("approved", "rejected"):
            raise ValueError(f"A review approves or rejects, not {status!r}.")
        with self.connect() as connection:
            reviewed = connection.execute("UPDATE feedback SET status = ?, reviewer = ?, reviewed = ? WHERE id = ? "
                                          "AND status = 'pending' AND correction IS NOT NULL",
                                          (status, reviewer, time.time(), feedback_id)).rowcount
        row = self.correction(feedback_id)
        if row is None:
            raise LookupError(f"No correction {feedback_id}.")
        if not reviewed:
            raise ValueError(f"The correction {feedback_id} was {row['status']} already (by {row['reviewer']}).")
        return row

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
    """The approved corrections (``Store.training_records``) as JSON lines in the training split's format (uid,
    product, description): the next fine-tune's extra examples. Returns how many were written."""
    records = store.training_records()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(record) + "\n" for record in records))
    return len(records)
