"""Who may call the service: ``FailureWindow`` and ``SignInGuard`` (what stands before argon2 at sign-in), and the
FastAPI security dependencies ``current_credential`` and ``current_user`` (a bearer token or API key, checked against
the app's store), ``current_instructor`` (a user who may start, follow and cancel training jobs) and
``instructor_only`` (the same check, saying what else only an instructor does)."""
from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from helpers.serving.protocol import ApiError
from helpers.serving.settings import ServiceSettings

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


# --- Security dependencies ---------------------------------------------------------------------------------------

# Not auto_error: a missing or malformed header gets this service's own 401 (OpenAI's shape), not FastAPI's.
bearer = HTTPBearer(auto_error=False, description="A token from POST /auth/token, or an API key "
                                                  "(python -m helpers.serving apikey NAME).")


def current_credential(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> dict:
    """The request's working credential: {"user", "kind" ("token" or "key"), "id" (a key's), "secret"}; else 401
    (none, unknown, expired, revoked, or a deleted user's)."""
    unauthorized = {"WWW-Authenticate": "Bearer"}
    if credentials is None:  # no header, another scheme, or no credential after "Bearer"
        raise ApiError(401, "Sign in first: send Authorization: Bearer <token or API key>.", "authentication_error",
                       unauthorized)
    found = request.app.state.store.credential(credentials.credentials)
    if found is None:
        # Notebook 07's table of errors shows this message ("a wrong token"): keep it.
        raise ApiError(401, "The token or API key is invalid or has expired: sign in again.",
                       "authentication_error", unauthorized)
    return {**found, "secret": credentials.credentials}


def current_user(credential: dict = Depends(current_credential)) -> str:
    return credential["user"]


def current_instructor(request: Request, user: str = Depends(current_user)) -> str:
    if not request.app.state.store.is_instructor(user):
        # The message's start is what notebook 07's table of errors shows: keep it.
        raise ApiError(403, "Only an instructor starts or cancels training jobs, or follows them: the new adapter "
                            "serves everyone.", "permission_error")
    return user


def instructor_only(doing: str) -> Callable[..., str]:
    """A dependency like ``current_instructor`` whose 403 says what only an instructor does: "Only an instructor
    {doing}." (accounts: deleting users, reviewing corrections)."""

    def instructor(request: Request, user: str = Depends(current_user)) -> str:
        if not request.app.state.store.is_instructor(user):
            raise ApiError(403, f"Only an instructor {doing}.", "permission_error")
        return user

    return instructor
