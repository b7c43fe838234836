"""The service's settings and constants: ``ServiceSettings`` (a profile, a data folder and the limits one running
service keeps to), where its state lives by default, the model names it serves, the prefix of its API keys, the header
that reports generation time, the states of a finished training job, the most examples a job may train on, and the
logger every part of the service writes to."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from helpers.config import Profile, paths

MODELS = ("foundation", "fine-tuned", "rag")
GENERATION_SECONDS_HEADER = "x-generation-seconds"
API_KEY_PREFIX = "sk-course-"
# A "candidate" finished training but the promotion gate kept it from serving (an instructor may promote it).
JOB_STATES_FINISHED = ("succeeded", "candidate", "failed", "cancelled")
logger = logging.getLogger("helpers.serving")

MAX_JOB_EXAMPLES = 160  # a job on 2 cores: about the course's own fine-tune (176 examples, ~8 minutes)


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
    # An API key (POST /v1/keys, python -m helpers.serving apikey) works this many days, then gets 401.
    api_key_days: float = 90
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
