"""Accounts and reviewed corrections: ``accounts_router`` (signing out, one's own API keys, deleting users) and
``corrections_router`` (instructors approve or reject the corrections that feedback brings, before any trains a
model), and ``check_correction`` (a correction must fit training whole, as a training record must).

Who may call what: every signed-in user signs out (``POST /auth/logout``, the token of the request) and lists,
creates and revokes their own API keys (``GET/POST /v1/keys``, ``DELETE /v1/keys/{id}``; creating one needs a
token, not a key); instructors delete users (``DELETE /v1/users/{name}``) and review corrections (``GET
/v1/corrections?status=pending``, ``POST /v1/corrections/{id}/approve`` and ``/reject``)."""
from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends

from helpers.serving.auth import current_credential, current_user, instructor_only
from helpers.serving.protocol import ApiError
from helpers.serving.settings import ServiceSettings
from helpers.serving.state import Settings, StoreDep
from helpers.serving.store import Store


# --- Checking a correction before it is stored -----------------------------------------------------------------------


def check_correction(settings: ServiceSettings, generating, backend, product: str, correction: str) -> None:
    """422 unless ``correction`` fits training whole, as a training record must: at most the profile's
    ``max_completion_words`` (``helpers.data.fits_training``), and the prompt training builds for it (the title
    alone, ``helpers.prompts.format_prompt``) with the correction and EOS in ``max_seq_length`` tokens, counted by
    the backend's tokenizer. A text whose UTF-8 bytes (+ EOS and a BOS) are within the limit fits without counting
    (a token holds at least one byte); a longer one is counted under ``generating``, the lock the tokenizer is used
    under (it is not safe to share between threads)."""
    from helpers.data import fits_training
    from helpers.prompts import format_prompt

    profile = settings.profile
    if not fits_training({"description": correction}, profile):
        raise ApiError(422, f"The correction is {len(correction.split())} words: a training record has at most "
                            f"{profile.max_completion_words} (max_completion_words of the {profile.name} profile).")
    text, limit = format_prompt(product) + correction, profile.max_seq_length
    if len(text.encode()) + 2 <= limit:
        return
    with generating:
        tokens = backend.count_tokens(text) + 1  # + EOS
    if tokens > limit:
        raise ApiError(422, f"The correction does not fit training: with its prompt and EOS it is {tokens} tokens, "
                            f"over max_seq_length={limit} of the {profile.name} profile. Shorten it.")


# --- Dependencies ----------------------------------------------------------------------------------------------------


User = Annotated[str, Depends(current_user)]
Credential = Annotated[dict, Depends(current_credential)]
UserManager = Annotated[str, Depends(instructor_only("deletes users"))]
Reviewer = Annotated[str, Depends(instructor_only("reviews corrections: an approved one trains the model that "
                                                  "serves everyone"))]


def key_description(key: dict) -> dict:
    """What a list of keys shows of one: never the key or its digest."""
    expires = key["expires"]
    return {"id": key["id"], "object": "api_key", "created": key["created"] and int(key["created"]),
            "expires": expires and int(expires), "expired": expires is not None and expires < time.time(),
            "last4": key["last4"]}


# --- Accounts --------------------------------------------------------------------------------------------------------

accounts_router = APIRouter()


@accounts_router.post("/auth/logout")
def sign_out(credential: Credential, store: StoreDep):
    """Revokes the token this request was sent with, at once. An API key is not signed out: DELETE /v1/keys/{id}."""
    if credential["kind"] != "token":
        raise ApiError(400, f"This request came with an API key: revoke it with DELETE /v1/keys/{credential['id']}.")
    store.revoke(credential["secret"])
    return {"object": "logout", "user": credential["user"], "revoked": "token"}


@accounts_router.get("/v1/keys")
def list_keys(user: User, store: StoreDep):
    """The user's own API keys, expired ones included: id, created, expires, last4. Never a key or its hash."""
    return {"object": "list", "data": [key_description(key) for key in store.api_keys(user)]}


@accounts_router.post("/v1/keys", status_code=201)
def create_key(credential: Credential, store: StoreDep, settings: Settings):
    """A new API key, working ``api_key_days`` days; the key is in this answer only. Made with a signed-in token:
    a key that made keys would outlive its own expiry."""
    if credential["kind"] != "token":
        raise ApiError(403, "An API key does not make API keys: sign in (POST /auth/token) and use the token.",
                       "permission_error")
    try:
        key = store.create_api_key(credential["user"], settings.api_key_days)
    except ValueError as error:  # the user was deleted meanwhile
        raise ApiError(401, str(error), "authentication_error") from None
    return {**key_description(key), "key": key["key"]}


@accounts_router.delete("/v1/keys/{key_id}")
def revoke_key(key_id: str, user: User, store: StoreDep):
    """Revokes one of the user's own API keys, at once. Another user's key reads as no key."""
    if not store.revoke_api_key(user, key_id):
        raise ApiError(404, f"No API key {key_id!r} of yours: GET /v1/keys lists them.", "not_found")
    return {"id": key_id, "object": "api_key", "deleted": True}


@accounts_router.delete("/v1/users/{name}")
def delete_user(name: str, user: UserManager, store: StoreDep):
    """Deletes a user (instructors only; python -m helpers.serving deluser NAME does it too): their tokens and API
    keys stop working at once. Their answers and feedback rows stay, for the record; the name is not reused. An
    instructor does not delete themselves here (the command line can), so that a service keeps one."""
    if name == user:
        raise ApiError(409, "You cannot delete yourself here: python -m helpers.serving deluser NAME does it.",
                       "conflict")
    try:
        store.delete_user(name)
    except ValueError:
        raise ApiError(404, f"No user {name!r}.", "not_found") from None
    return {"object": "user", "name": name, "deleted": True}


# --- Corrections, reviewed before they can train anything ------------------------------------------------------------

corrections_router = APIRouter(prefix="/v1")


@corrections_router.get("/corrections")
def list_corrections(user: Reviewer, store: StoreDep,
                     status: Literal["pending", "approved", "rejected", "all"] = "pending"):
    """The corrections with ``status`` (default pending), oldest first: id, answer id, product, the correction, who
    posted it and when, and its review."""
    rows = store.corrections(None if status == "all" else status)
    return {"object": "list", "data": [{**row, "object": "correction", "created": int(row["created"]),
                                        "reviewed": row["reviewed"] and int(row["reviewed"])} for row in rows]}


def reviewed(store: Store, feedback_id: int, status: str, reviewer: str) -> dict:
    try:
        row = store.review_correction(feedback_id, status, reviewer)
    except LookupError:
        raise ApiError(404, f"No correction {feedback_id}.", "not_found") from None
    except ValueError as error:
        raise ApiError(409, str(error), "conflict") from None
    return {**row, "object": "correction", "created": int(row["created"]), "reviewed": int(row["reviewed"])}


@corrections_router.post("/corrections/{feedback_id}/approve")
def approve_correction(feedback_id: int, user: Reviewer, store: StoreDep):
    """A pending correction approved: every later training job with include_feedback trains on it (the latest
    approved one per product)."""
    return reviewed(store, feedback_id, "approved", user)


@corrections_router.post("/corrections/{feedback_id}/reject")
def reject_correction(feedback_id: int, user: Reviewer, store: StoreDep):
    """A pending correction rejected: it never trains anything (a review is final)."""
    return reviewed(store, feedback_id, "rejected", user)


# In the order create_app includes them, after the routers of helpers.serving.routes.
ROUTERS = (accounts_router, corrections_router)
