"""Accounts (deleting users, one's own API keys, signing out, roles changed only on purpose), corrections reviewed
before they train anything, and a database of the earlier schema migrated: helpers.serving.accounts, store and cli,
over test_serving's fake backend."""
from __future__ import annotations

import io
import json
import sqlite3
import time
from dataclasses import replace

import httpx
import pytest

from helpers import serving
from helpers.config import lab_profile
from test_serving import PASSWORD, FakeBackend, chat, running_as_ada, settings_for, sign_in


def bearer(credential: str) -> dict:
    return {"Authorization": f"Bearer {credential}"}


def new_key(url: str, token: str) -> dict:
    response = httpx.post(url + "/v1/keys", headers=bearer(token))
    assert response.status_code == 201, response.text
    return response.json()


def rate(url: str, credential: str, answer_id: str, correction: str | None) -> httpx.Response:
    return httpx.post(url + "/v1/feedback", headers=bearer(credential),
                      json={"answer_id": answer_id, "rating": -1, "correction": correction})


# --- Accounts ------------------------------------------------------------------------------------------------------


def test_a_deleted_users_token_and_key_get_401_and_their_feedback_stays(tmp_path):
    app = serving.create_app(settings_for(tmp_path), FakeBackend())
    app.state.store.add_user("bob", PASSWORD)
    with running_as_ada(app, instructor=True) as (server, token):
        bob = sign_in(server.url, "bob", PASSWORD)
        key = new_key(server.url, bob)["key"]
        answer_id = chat(server.url, key).json()["id"]
        assert rate(server.url, bob, answer_id, "A tutu for girls.").status_code == 201
        refused = httpx.delete(server.url + "/v1/users/ada", headers=bearer(bob))
        assert refused.status_code == 403 and "instructor" in refused.json()["error"]["message"]
        deleted = httpx.delete(server.url + "/v1/users/bob", headers=bearer(token))
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert chat(server.url, bob).status_code == 401 and chat(server.url, key).status_code == 401
        assert httpx.post(server.url + "/auth/token", json={"username": "bob", "password": PASSWORD}).status_code == 401
        assert httpx.delete(server.url + "/v1/users/bob", headers=bearer(token)).status_code == 404
        assert httpx.delete(server.url + "/v1/users/ada", headers=bearer(token)).status_code == 409  # not oneself
        corrections = httpx.get(server.url + "/v1/corrections", headers=bearer(token)).json()["data"]
    store = app.state.store
    assert [(row["user"], row["answer_id"]) for row in store.feedback()] == [("bob", answer_id)]  # for the record
    assert [row["user"] for row in corrections] == ["bob"] and store.answer(answer_id)["user"] == "bob"
    with pytest.raises(ValueError, match="deleted user"):  # the name is not given again with the old records
        store.add_user("bob", PASSWORD)
    assert not store.check_password("bob", PASSWORD) and store.user_for(key) is None


def test_api_keys_are_listed_without_the_key_and_a_revoked_one_gets_401(tmp_path):
    app = serving.create_app(settings_for(tmp_path), FakeBackend())
    app.state.store.add_user("bob", PASSWORD)
    with running_as_ada(app) as (server, token):
        made = new_key(server.url, token)
        key = made["key"]
        assert key.startswith(serving.API_KEY_PREFIX) and made["last4"] == key[-4:]
        assert made["expires"] - made["created"] == pytest.approx(90 * 86400, abs=2)  # api_key_days
        assert chat(server.url, key).status_code == 200
        listed = httpx.get(server.url + "/v1/keys", headers=bearer(token))
        assert [sorted(item) for item in listed.json()["data"]] == [
            ["created", "expired", "expires", "id", "last4", "object"]]
        assert listed.json()["data"][0]["id"] == made["id"] and listed.json()["data"][0]["expired"] is False
        assert key not in listed.text and serving.digest(key) not in listed.text
        bob = sign_in(server.url, "bob", PASSWORD)
        assert httpx.get(server.url + "/v1/keys", headers=bearer(bob)).json()["data"] == []  # one's own only
        assert httpx.delete(f"{server.url}/v1/keys/{made['id']}", headers=bearer(bob)).status_code == 404
        refused = httpx.post(server.url + "/v1/keys", headers=bearer(key))  # a key does not make keys
        assert refused.status_code == 403 and "sign in" in refused.json()["error"]["message"]
        logout = httpx.post(server.url + "/auth/logout", headers=bearer(key))
        assert logout.status_code == 400 and f"DELETE /v1/keys/{made['id']}" in logout.json()["error"]["message"]
        assert httpx.delete(f"{server.url}/v1/keys/{made['id']}", headers=bearer(token)).status_code == 200
        assert chat(server.url, key).status_code == 401 and chat(server.url, token).status_code == 200
        assert httpx.delete(f"{server.url}/v1/keys/{made['id']}", headers=bearer(token)).status_code == 404
        assert httpx.get(server.url + "/v1/keys", headers=bearer(token)).json()["data"] == []


def test_an_expired_api_key_gets_401(tmp_path):
    app = serving.create_app(settings_for(tmp_path, api_key_days=1 / 86400), FakeBackend())  # a second
    with running_as_ada(app) as (server, token):
        made = new_key(server.url, token)
        time.sleep(1.2)
        response = chat(server.url, made["key"])
        assert response.status_code == 401 and "expired" in response.json()["error"]["message"]
        assert httpx.get(server.url + "/v1/keys", headers=bearer(token)).json()["data"][0]["expired"] is True
        assert chat(server.url, token).status_code == 200


def test_logout_revokes_the_token_of_the_request_only(service_url_and_tokens):
    url, first, second = service_url_and_tokens
    response = httpx.post(url + "/auth/logout", headers=bearer(first))
    assert response.status_code == 200 and response.json()["revoked"] == "token"
    assert chat(url, first).status_code == 401
    assert httpx.post(url + "/auth/logout", headers=bearer(first)).status_code == 401
    assert chat(url, second).status_code == 200  # ada's other sign-in goes on


@pytest.fixture
def service_url_and_tokens(tmp_path):
    app = serving.create_app(settings_for(tmp_path), FakeBackend())
    with running_as_ada(app) as (server, token):
        yield server.url, token, sign_in(server.url, "ada", PASSWORD)


def test_a_student_can_neither_delete_users_nor_review_corrections(tmp_path):
    app = serving.create_app(settings_for(tmp_path), FakeBackend())
    app.state.store.add_user("bob", PASSWORD)
    with running_as_ada(app) as (server, token):
        answer_id = chat(server.url, token).json()["id"]
        feedback_id = rate(server.url, token, answer_id, "A tutu for girls.").json()["id"]
        for method, path in (("DELETE", "/v1/users/bob"), ("GET", "/v1/corrections"),
                             ("POST", f"/v1/corrections/{feedback_id}/approve"),
                             ("POST", f"/v1/corrections/{feedback_id}/reject")):
            response = httpx.request(method, server.url + path, headers=bearer(token))
            assert response.status_code == 403, path
            assert response.json()["error"]["message"].startswith("Only an instructor")
        assert httpx.request("DELETE", server.url + "/v1/users/bob").status_code == 401
    assert app.state.store.check_password("bob", PASSWORD)
    assert app.state.store.correction(feedback_id)["status"] == "pending"


# --- Roles, on purpose only: the command line ----------------------------------------------------------------------


def run_cli(monkeypatch, capsys, data_dir, *argv: str, password: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    code = serving.main([*argv, "--profile", "lab", "--data-dir", str(data_dir)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_adduser_refuses_an_existing_name_and_only_role_changes_a_role(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "service"
    store = serving.Store(data_dir / "service.sqlite3")
    code, out, _ = run_cli(monkeypatch, capsys, data_dir, "adduser", "alan", "--instructor", password=PASSWORD)
    assert code == 0 and out.startswith("user alan (instructor) saved in ")
    code, out, err = run_cli(monkeypatch, capsys, data_dir, "adduser", "alan", password="another password")
    assert code == 1 and out == "" and "exists already (instructor)" in err and "--reset-password" in err
    assert store.is_instructor("alan") and store.check_password("alan", PASSWORD)  # nothing changed
    code, out, err = run_cli(monkeypatch, capsys, data_dir, "adduser", "alan", "--reset-password",
                             password="another password")
    assert code == 0 and "alan (instructor)" in out and store.is_instructor("alan")  # the role kept
    assert store.check_password("alan", "another password") and not store.check_password("alan", PASSWORD)
    code, _, err = run_cli(monkeypatch, capsys, data_dir, "adduser", "grace", "--reset-password", password=PASSWORD)
    assert code == 1 and "No user 'grace'" in err
    code, out, _ = run_cli(monkeypatch, capsys, data_dir, "role", "alan", "student")
    assert code == 0 and "alan (student)" in out and not store.is_instructor("alan")
    code, _, err = run_cli(monkeypatch, capsys, data_dir, "adduser", "alan", "--reset-password", "--instructor",
                           password=PASSWORD)
    assert code == 1 and "role alan instructor" in err and not store.is_instructor("alan")
    code, _, _ = run_cli(monkeypatch, capsys, data_dir, "role", "alan", "instructor")
    assert code == 0 and store.is_instructor("alan")
    assert run_cli(monkeypatch, capsys, data_dir, "role", "nobody", "student")[0] == 1
    code, out, err = run_cli(monkeypatch, capsys, data_dir, "apikey", "alan")
    key = out.strip()  # the key alone on standard output; its expiry on standard error
    assert code == 0 and store.user_for(key) == "alan" and "expires" in err and key[-4:] in err
    code, out, _ = run_cli(monkeypatch, capsys, data_dir, "deluser", "alan")
    assert code == 0 and "deleted" in out and store.user_for(key) is None and not store.is_instructor("alan")
    assert run_cli(monkeypatch, capsys, data_dir, "deluser", "alan")[0] == 1
    code, _, err = run_cli(monkeypatch, capsys, data_dir, "adduser", "alan", password=PASSWORD)
    assert code == 1 and "deleted user" in err


# --- Corrections, reviewed before they train anything ---------------------------------------------------------------


def test_only_approved_corrections_are_exported_and_an_instructors_own_is_approved(tmp_path):
    app = serving.create_app(settings_for(tmp_path), FakeBackend())
    store = app.state.store
    store.add_user("alan", PASSWORD, instructor=True)
    with running_as_ada(app) as (server, token):
        alan = sign_in(server.url, "alan", PASSWORD)
        ids = {}
        for product in ("Tutu", "Kettle", "Lamp"):
            answer_id = chat(server.url, token, messages=[{"role": "user", "content": product}]).json()["id"]
            posted = rate(server.url, token, answer_id, f"A better {product}.")
            assert posted.status_code == 201 and posted.json()["status"] == "pending"
            ids[product] = posted.json()["id"]
        assert store.training_records() == [] and serving.export_feedback(store, tmp_path / "none.jsonl") == 0
        pending = httpx.get(server.url + "/v1/corrections?status=pending", headers=bearer(alan)).json()["data"]
        assert [(row["id"], row["product"], row["correction"], row["user"]) for row in pending] == [
            (ids[product], product, f"A better {product}.", "ada") for product in ("Tutu", "Kettle", "Lamp")]
        assert all(row["answer_id"].startswith("chatcmpl-") and row["created"] > 0 for row in pending)

        def review(feedback_id, verdict: str) -> httpx.Response:
            return httpx.post(f"{server.url}/v1/corrections/{feedback_id}/{verdict}", headers=bearer(alan))

        approved = review(ids["Tutu"], "approve")
        assert approved.status_code == 200 and approved.json()["status"] == "approved"
        assert approved.json()["reviewer"] == "alan"
        assert review(ids["Kettle"], "reject").json()["status"] == "rejected"
        assert review(ids["Kettle"], "approve").status_code == 409  # a review is final: rejected, never trained
        assert review(ids["Tutu"], "reject").status_code == 409
        assert review(99_999, "approve").status_code == 404
        rejected = httpx.get(server.url + "/v1/corrections?status=rejected", headers=bearer(alan)).json()["data"]
        assert [row["id"] for row in rejected] == [ids["Kettle"]]
        assert httpx.get(server.url + "/v1/corrections?status=bogus", headers=bearer(alan)).status_code == 422
        # An instructor's own correction is reviewed by its author (notebook 07 trains on it at once).
        own_answer = chat(server.url, alan, messages=[{"role": "user", "content": "Mug"}]).json()["id"]
        own = rate(server.url, alan, own_answer, "A mug.")
        assert own.status_code == 201 and own.json()["status"] == "approved"
        mine = httpx.get(server.url + "/v1/feedback", headers=bearer(token)).json()["data"]
        assert [row["status"] for row in mine] == ["approved", "rejected", "pending"]
    target = tmp_path / "feedback.jsonl"
    assert serving.export_feedback(store, target) == 2
    assert [json.loads(line) for line in target.read_text().splitlines()] == [
        {"uid": f"feedback-{ids['Tutu']}", "product": "Tutu", "description": "A better Tutu."},
        {"uid": f"feedback-{own.json()['id']}", "product": "Mug", "description": "A mug."}]


def test_a_correction_that_does_not_fit_training_gets_422(tmp_path):
    # max_seq_length=60: the fake backend counts words, and the prompt training builds is ~40 of them.
    profile = replace(lab_profile(), max_seq_length=60)
    app = serving.create_app(serving.ServiceSettings(profile=profile, data_dir=tmp_path / "service"), FakeBackend())
    with running_as_ada(app) as (server, token):
        answer_id = chat(server.url, token).json()["id"]
        too_many_words = rate(server.url, token, answer_id, "word " * (profile.max_completion_words + 1))
        assert too_many_words.status_code == 422
        assert f"at most {profile.max_completion_words}" in too_many_words.json()["error"]["message"]
        too_many_tokens = rate(server.url, token, answer_id, "word " * 30)
        assert too_many_tokens.status_code == 422
        assert "max_seq_length=60" in too_many_tokens.json()["error"]["message"]
        assert rate(server.url, token, answer_id, "x" * 4001).status_code == 422  # the hard limit stays
        assert app.state.store.feedback() == []
        fits = rate(server.url, token, answer_id, "A tutu for girls, in neon blue.")  # counted: ~47 tokens
        assert fits.status_code == 201 and fits.json()["status"] == "pending"
        assert rate(server.url, token, answer_id, None).json()["status"] is None  # a rating alone


# --- A database of the earlier schema -------------------------------------------------------------------------------

# SCHEMA as helpers.serving.store had it before accounts and reviewed corrections (git show b94e355:...store.py).
EARLIER_SCHEMA = """
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


def test_a_database_of_the_earlier_schema_opens_and_migrates(tmp_path):
    from argon2 import PasswordHasher

    settings = settings_for(tmp_path)
    settings.data_dir.mkdir(parents=True)
    now = time.time()
    with sqlite3.connect(settings.database) as connection:  # what an instructor's outputs/serving/<profile> holds
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(EARLIER_SCHEMA)
        connection.execute("INSERT INTO users VALUES ('ada', ?, ?, 1)", (PasswordHasher().hash(PASSWORD), now))
        connection.execute("INSERT INTO credentials VALUES (?, 'ada', 'token', ?)", (serving.digest("old-token"),
                                                                                   now + 3600))
        connection.execute("INSERT INTO credentials VALUES (?, 'ada', 'key', NULL)", (serving.digest("sk-course-old"),))
        connection.execute("INSERT INTO answers VALUES ('chatcmpl-old', 'ada', 'fine-tuned', 'Tutu', 'A tutu.', "
                           "'stop', '[]', ?)", (now,))
        connection.execute("INSERT INTO feedback (answer_id, user, rating, correction, created) VALUES "
                           "('chatcmpl-old', 'ada', -1, 'A better tutu.', ?), ('chatcmpl-old', 'ada', 1, NULL, ?)",
                           (now, now))
    store = serving.Store(settings.database)
    with sqlite3.connect(settings.database) as connection:
        columns = {table: {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
                   for table in ("users", "credentials", "feedback")}
    for table, column, _ in serving.store.ADDED_COLUMNS:
        assert column in columns[table]
    assert store.check_password("ada", PASSWORD) and store.is_instructor("ada")
    assert store.user_for("old-token") == "ada" and store.user_for("sk-course-old") == "ada"
    [key] = store.api_keys("ada")  # an old key now has an id and expires like a new one
    assert key["id"].startswith("key-") and key["expires"] == pytest.approx(now + 90 * 86400, abs=60)
    assert [row["status"] for row in store.feedback()] == ["pending", None]  # reviewed before it trains
    assert store.training_records() == []
    again = serving.Store(settings.database)  # idempotent: nothing added twice, nothing changed
    assert again.api_keys("ada") == [key] and [row["status"] for row in again.feedback()] == ["pending", None]
    app = serving.create_app(settings, FakeBackend())
    with serving.ServerThread(app) as server:
        assert chat(server.url, "sk-course-old").status_code == 200
        listed = httpx.get(server.url + "/v1/keys", headers=bearer("old-token")).json()["data"]
        assert [(item["id"], item["last4"]) for item in listed] == [(key["id"], None)]
        approved = httpx.post(server.url + "/v1/corrections/1/approve", headers=bearer("old-token"))
        assert approved.status_code == 200
    assert store.training_records() == [{"uid": "feedback-1", "product": "Tutu", "description": "A better tutu."}]
