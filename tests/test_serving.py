"""The course service (helpers.serving): OpenAI compatibility, sign-in, limits, feedback, training jobs, the page.

Most tests run the real FastAPI app on loopback (uvicorn in a thread) over a fake backend that writes a fixed answer
word by word, so that the HTTP side is tested in seconds; the slow ones serve the real models.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from helpers import serving
from helpers.config import lab_profile, paths
from helpers.models import Answer

PASSWORD = "correct horse battery staple"


class FakeStream:
    def __init__(self, pieces: list[str], delay: float, stopped: bool) -> None:
        self.pieces, self.delay, self.stopped, self.answer, self.closed = pieces, delay, stopped, None, False
        self.produced = 0

    def __iter__(self):
        for piece in self.pieces:
            time.sleep(self.delay)
            self.produced += 1
            yield piece
        self.answer = Answer("".join(self.pieces), self.stopped, len(self.pieces))

    def close(self) -> None:
        self.closed = True


class FakeBackend:
    """Answers "<model> says <title> is fine." one word per token, ``delay`` seconds a word."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self._adapter = Path("outputs/adapters/initial")
        self.generating = 0
        self.most_at_once = 0
        self.streams: list[FakeStream] = []

    @property
    def adapter(self) -> Path:
        return self._adapter

    def prepare(self, model: str, text: str) -> serving.Prepared:
        sources = ({"rank": 1, "title": text, "uid": "u1"}, {"rank": 2, "title": "another", "uid": "u2"})
        return serving.Prepared(model, text, f"prompt for {text}", sources if model == "rag" else ())

    def prepare_raw(self, model: str, prompt: str) -> serving.Prepared:
        return serving.Prepared(model, prompt, prompt)

    def pieces(self, prepared: serving.Prepared, max_tokens: int) -> tuple[list[str], bool]:
        words = f"{prepared.model} says {prepared.product} is fine.".split()
        pieces = [word if index == 0 else " " + word for index, word in enumerate(words)]
        return pieces[:max_tokens], len(pieces) <= max_tokens

    def complete(self, prepared: list[serving.Prepared], max_tokens: int) -> list[Answer]:
        self.generating += 1
        self.most_at_once = max(self.most_at_once, self.generating)
        answers = []
        for item in prepared:
            pieces, stopped = self.pieces(item, max_tokens)
            time.sleep(self.delay * len(pieces))
            answers.append(Answer("".join(pieces), stopped, len(pieces)))
        self.generating -= 1
        return answers

    def stream(self, prepared: serving.Prepared, max_tokens: int) -> FakeStream:
        pieces, stopped = self.pieces(prepared, max_tokens)
        self.streams.append(FakeStream(pieces, self.delay, stopped))
        return self.streams[-1]

    def use_adapter(self, adapter: Path) -> None:
        self._adapter = Path(adapter)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def settings_for(tmp_path: Path, **limits) -> serving.ServiceSettings:
    return serving.ServiceSettings(profile=lab_profile(), data_dir=tmp_path / "service", **limits)


@contextlib.contextmanager
def running_as_ada(app, instructor: bool = False):
    """The app served on loopback with the user "ada" signed in; yields (server, token)."""
    app.state.store.add_user("ada", PASSWORD, instructor=instructor)
    with serving.ServerThread(app) as server:
        yield server, sign_in(server.url, "ada", PASSWORD)


@pytest.fixture
def service(tmp_path):
    """A running service over the fake backend, with the user "ada"; yields (url, app, token)."""
    app = serving.create_app(settings_for(tmp_path), FakeBackend())
    with running_as_ada(app) as (server, token):
        yield server.url, app, token


def sign_in(url: str, name: str, password: str) -> str:
    response = httpx.post(url + "/auth/token", json={"username": name, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def chat(url: str, token: str | None, **body) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = {"model": "fine-tuned", "messages": [{"role": "user", "content": "Girls Ballet Tutu"}], **body}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)


def openai_client(url: str, token: str):
    from openai import OpenAI

    return OpenAI(base_url=url + "/v1", api_key=token, max_retries=0)


# --- OpenAI compatibility -------------------------------------------------------------------------------------------


def test_official_client_lists_models_and_answers_whole(service):
    url, _, token = service
    client = openai_client(url, token)
    assert [model.id for model in client.models.list()] == ["foundation", "fine-tuned", "rag"]
    reply = client.chat.completions.create(model="fine-tuned",
                                           messages=[{"role": "user", "content": "Girls Ballet Tutu"}])
    assert reply.choices[0].message.content == "fine-tuned says Girls Ballet Tutu is fine."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 7
    assert reply.id.startswith("chatcmpl-")


def test_rag_answer_carries_its_sources(service):
    url, _, token = service
    reply = openai_client(url, token).chat.completions.create(
        model="rag", messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": "Tutu"}])
    assert [source["title"] for source in reply.model_extra["sources"]] == ["Tutu", "another"]


def test_streamed_chunks_parse_as_openai_chunks_and_add_up_to_the_whole_answer(service):
    from openai.types.chat import ChatCompletionChunk

    url, _, token = service
    whole = chat(url, token).json()["choices"][0]["message"]["content"]
    response = chat(url, token, stream=True)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text.rstrip().endswith("data: [DONE]")
    events = serving.parse_sse(response.text)
    chunks = [ChatCompletionChunk.model_validate(event) for event in events]
    assert len({item.id for item in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert serving.assemble_stream(events) == (whole, "stop")
    streamed = openai_client(url, token).chat.completions.create(
        model="fine-tuned", messages=[{"role": "user", "content": "Girls Ballet Tutu"}], stream=True)
    assert "".join(item.choices[0].delta.content or "" for item in streamed) == whole


def test_max_tokens_cuts_the_answer_and_says_length(service):
    url, _, token = service
    body = chat(url, token, max_tokens=2).json()
    assert body["choices"][0] == {"index": 0, "message": {"role": "assistant", "content": "fine-tuned says"},
                                  "finish_reason": "length"}


def test_completions_route_serves_the_rag_chains_remote_model(service, monkeypatch):
    from langchain_core.documents import Document
    from langchain_core.runnables import RunnableLambda

    from helpers.retrieval import course_llm, rag_chain

    url, app, token = service
    monkeypatch.setenv("COURSE_LLM_URL", url + "/v1")
    monkeypatch.setenv("COURSE_LLM_API_KEY", token)
    llm = course_llm(lab_profile())
    assert type(llm).__name__ == "OpenAI"
    assert llm.invoke("a finished prompt") == "fine-tuned says a finished prompt is fine."
    retriever = RunnableLambda(lambda title: [Document("Product: x - Description: y", metadata={"title": "x", "uid": "1"})])
    result = rag_chain(retriever, llm, context_words=10).invoke("Tutu")
    assert result["answer"].startswith("fine-tuned says Below is an instruction")
    monkeypatch.setenv("COURSE_LLM_MODEL", "rag")
    with pytest.raises(Exception, match="takes a product title"):
        course_llm(lab_profile()).invoke("a prompt")


def test_course_llm_without_a_url_is_the_in_process_model(monkeypatch):
    from helpers.retrieval import course_llm

    monkeypatch.delenv("COURSE_LLM_URL", raising=False)
    with pytest.raises(ValueError, match="COURSE_LLM_URL is not set"):
        course_llm(lab_profile())
    monkeypatch.setenv("COURSE_LLM_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("COURSE_LLM_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="COURSE_LLM_API_KEY"):
        course_llm(lab_profile())


# --- Sign-in ----------------------------------------------------------------------------------------------------------


def test_every_api_route_needs_a_valid_token(service):
    url, _, token = service
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"),
                         ("POST", "/v1/feedback"), ("GET", "/v1/feedback"), ("POST", "/v1/train"),
                         ("GET", "/v1/train/job-1"), ("DELETE", "/v1/train/job-1"), ("GET", "/v1/status")):
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": f"Basic {token}"}):
            response = httpx.request(method, url + path, headers=headers, json={})
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(url + "/").status_code == 200  # the page itself is public; it signs in


def test_wrong_password_and_unknown_user_are_refused(service):
    url, _, _ = service
    for name, password in (("ada", "wrong"), ("nobody", PASSWORD)):
        response = httpx.post(url + "/auth/token", json={"username": name, "password": password})
        assert response.status_code == 401
        assert "wrong password" in response.json()["error"]["message"]


def attempt_sign_in(url: str, name: str, password: str) -> httpx.Response:
    return httpx.post(url + "/auth/token", json={"username": name, "password": password})


def counting_password_checks(app) -> list:
    """The calls of the app's Store.check_password from now on (argon2's work)."""
    checks, check = [], app.state.store.check_password
    app.state.store.check_password = lambda *args: checks.append(args) or check(*args)
    return checks


def test_failed_sign_ins_for_a_name_are_throttled_until_the_window_passes(tmp_path):
    app = serving.create_app(settings_for(tmp_path, sign_in_window_seconds=3), FakeBackend())
    with running_as_ada(app) as (server, _):
        checks = counting_password_checks(app)
        assert [attempt_sign_in(server.url, "ada", "wrong").status_code for _ in range(5)] == [401] * 5
        refused = attempt_sign_in(server.url, "ada", "wrong")
        assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
        assert 1 <= int(refused.headers["retry-after"]) <= 3  # whole seconds until the oldest failure leaves
        assert attempt_sign_in(server.url, "ada", PASSWORD).status_code == 429  # the right password too
        assert len(checks) == 5  # refused before hashing anything
        time.sleep(int(refused.headers["retry-after"]))
        assert attempt_sign_in(server.url, "ada", PASSWORD).status_code == 200
        # A success clears the name's failures: 4 more and 4 more, a success between, are 8 in the window but never 5.
        for _ in range(2):
            assert [attempt_sign_in(server.url, "ada", "wrong").status_code for _ in range(4)] == [401] * 4
            assert attempt_sign_in(server.url, "ada", PASSWORD).status_code == 200


def test_failed_sign_ins_from_one_address_throttle_every_name(tmp_path):
    app = serving.create_app(settings_for(tmp_path, sign_in_failures_per_address=3), FakeBackend())
    app.state.store.add_user("bob", PASSWORD)
    with running_as_ada(app) as (server, _):
        for name in ("ada", "nobody", "bob"):
            assert attempt_sign_in(server.url, name, "wrong").status_code == 401
        refused = attempt_sign_in(server.url, "bob", PASSWORD)  # another name, the same address (loopback)
        assert refused.status_code == 429 and 1 <= int(refused.headers["retry-after"]) <= 60


def test_password_checks_beyond_the_limit_at_once_get_429(tmp_path):
    app = serving.create_app(settings_for(tmp_path, password_checks_at_once=1), FakeBackend())
    with running_as_ada(app) as (server, _):
        check = app.state.store.check_password
        app.state.store.check_password = lambda *args: time.sleep(1) or check(*args)
        with ThreadPoolExecutor(max_workers=2) as pool:
            responses = list(pool.map(lambda _: attempt_sign_in(server.url, "ada", PASSWORD), range(2)))
    assert sorted(response.status_code for response in responses) == [200, 429]
    assert next(response for response in responses if response.status_code == 429).headers["retry-after"] == "1"


def test_the_api_schema_is_for_signed_in_users_only(service):
    url, _, token = service
    assert httpx.get(url + "/docs").status_code == 404 and httpx.get(url + "/redoc").status_code == 404
    assert httpx.get(url + "/openapi.json").status_code == 401
    schema = httpx.get(url + "/openapi.json", headers={"Authorization": f"Bearer {token}"})
    assert schema.status_code == 200 and "/v1/chat/completions" in schema.json()["paths"]


def test_an_expired_token_is_refused(tmp_path):
    app = serving.create_app(settings_for(tmp_path, token_seconds=1), FakeBackend())
    with running_as_ada(app) as (server, token):
        assert chat(server.url, token).status_code == 200
        time.sleep(1.2)
        response = chat(server.url, token)
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


def test_passwords_and_tokens_are_stored_hashed_only(service):
    url, app, token = service
    key = app.state.store.add_api_key("ada")
    assert key.startswith(serving.API_KEY_PREFIX)
    assert chat(url, key).status_code == 200  # an API key works like a token
    with sqlite3.connect(app.state.store.path) as connection:
        hashes = [row[0] for row in connection.execute("SELECT password_hash FROM users")]
        dump = "\n".join(connection.iterdump())
    assert hashes[0].startswith("$argon2id$")
    for secret in (PASSWORD, token, key):
        assert secret not in dump
    app.state.store.add_user("ada", "a new password")  # a password reset ends every token and key of the user
    assert chat(url, token).status_code == 401 and chat(url, key).status_code == 401


def test_adduser_and_apikey_commands(tmp_path):
    data_dir = tmp_path / "service"
    command = [sys.executable, "-m", "helpers.serving"]
    added = subprocess.run([*command, "adduser", "grace", "--profile", "lab", "--data-dir", str(data_dir)],
                           input=PASSWORD + "\n", capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    assert PASSWORD not in added.stdout + added.stderr and "(student)" in added.stdout
    store = serving.Store(data_dir / "service.sqlite3")
    assert store.check_password("grace", PASSWORD) and not store.check_password("grace", "wrong")
    assert not store.is_instructor("grace")
    teacher = subprocess.run([*command, "adduser", "alan", "--instructor", "--profile", "lab", "--data-dir",
                              str(data_dir)], input=PASSWORD + "\n", capture_output=True, text=True, timeout=120)
    assert teacher.returncode == 0 and "(instructor)" in teacher.stdout and store.is_instructor("alan")
    key = subprocess.run([*command, "apikey", "grace", "--profile", "lab", "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=120)
    assert key.returncode == 0 and store.user_for(key.stdout.strip()) == "grace"
    unknown = subprocess.run([*command, "apikey", "nobody", "--profile", "lab", "--data-dir", str(data_dir)],
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 1 and "adduser nobody" in unknown.stderr


# --- Limits and errors ----------------------------------------------------------------------------------------------


def test_clear_errors_for_unknown_models_and_malformed_or_oversize_requests(service):
    url, _, token = service
    headers = {"Authorization": f"Bearer {token}"}
    cases = {
        404: [chat(url, token, model="gpt-4")],
        422: [chat(url, token, max_tokens=10_000), chat(url, token, messages=[]),
              chat(url, token, messages=[{"role": "user", "content": "  "}]),
              chat(url, token, messages=[{"role": "user", "content": "x" * 501}]),
              chat(url, token, max_tokens=0),
              httpx.post(url + "/v1/chat/completions", content=b"{not json", headers=headers),
              httpx.post(url + "/v1/feedback", json={"answer_id": "x", "rating": 5}, headers=headers)],
        413: [httpx.post(url + "/v1/chat/completions", content=b"x" * 70_000, headers=headers),
              httpx.post(url + "/v1/chat/completions", content=iter([b"x" * 40_000, b"x" * 40_000]), headers=headers)],
        400: [httpx.post(url + "/v1/completions", json={"model": "rag", "prompt": "p"}, headers=headers)],
    }
    for status, responses in cases.items():
        for response in responses:
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error["code"] == status and error["message"]
    assert "cap of 96" in chat(url, token, max_tokens=10_000).json()["error"]["message"]
    assert "gpt-4" in cases[404][0].json()["error"]["message"]
    assert chat(url, token).status_code == 200  # and the service still answers


def test_bounded_load_every_request_answered_or_429_and_no_feedback_lost(tmp_path):
    backend = FakeBackend(delay=0.02)
    app = serving.create_app(settings_for(tmp_path, queue_capacity=4), backend)

    def one_request(index: int) -> tuple[int, int | None]:
        started = time.perf_counter()
        response = chat(server.url, token, stream=index % 2 == 0,
                        messages=[{"role": "user", "content": f"product {index}"}])
        if response.status_code == 429:  # refused at once, with when to come back; not queued without end
            assert response.headers["retry-after"] == "1" and time.perf_counter() - started < 1.0
        if response.status_code != 200:
            return response.status_code, None
        answer_id = (serving.parse_sse(response.text)[0] if index % 2 == 0 else response.json())["id"]
        feedback = httpx.post(server.url + "/v1/feedback", headers={"Authorization": f"Bearer {token}"},
                              json={"answer_id": answer_id, "rating": 1, "correction": f"fixed {index}"})
        return response.status_code, feedback.status_code

    with running_as_ada(app) as (server, token):
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one_request, range(40)))
        statuses = [status for status, _ in results]
        assert set(statuses) <= {200, 429}
        assert statuses.count(429) > 0 and statuses.count(200) >= 4
        assert all(feedback == 201 for status, feedback in results if status == 200)
        rows = httpx.get(server.url + "/v1/feedback", headers={"Authorization": f"Bearer {token}"}).json()["data"]
        assert len(rows) == statuses.count(200)
        assert app.state.queue.admitted == 0 and backend.most_at_once == 1
        assert chat(server.url, token).status_code == 200


def test_a_client_that_leaves_mid_stream_frees_its_place_and_stops_the_generation(tmp_path):
    backend = FakeBackend(delay=0.3)
    app = serving.create_app(settings_for(tmp_path, queue_capacity=1), backend)
    with running_as_ada(app) as (server, token):
        body = {"model": "rag", "stream": True, "messages": [{"role": "user", "content": "Girls Ballet Tutu"}]}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {token}"}) as response:
            answer_id = json.loads(next(response.iter_lines()).removeprefix("data: "))["id"]  # the first event...
        deadline = time.monotonic() + 10  # ...then hang up
        while app.state.queue.admitted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.queue.admitted == 0  # freed once the server sees the client gone, not at garbage collection
        stream = backend.streams[0]
        # Cancelled at its next piece: closed with pieces left, not generated to the end for no one.
        assert stream.closed and stream.produced < len(stream.pieces), stream.produced
        assert app.state.store.answer(answer_id) is None  # a cancelled answer is not saved as if it were whole
        assert chat(server.url, token).status_code == 200


class LongAnswerBackend(FakeBackend):
    """Streams 3000 pieces of 10 KB (30 MB, more than loopback's socket buffers) for the title "a long answer"."""

    def pieces(self, prepared: serving.Prepared, max_tokens: int) -> tuple[list[str], bool]:
        if prepared.product == "a long answer":
            return ["x" * 10_000] * 3000, True
        return super().pieces(prepared, max_tokens)


def test_a_reader_that_stops_reading_keeps_no_one_waiting_and_its_answer_is_saved(tmp_path):
    app = serving.create_app(settings_for(tmp_path), LongAnswerBackend())
    with running_as_ada(app) as (server, token):
        body = {"model": "fine-tuned", "stream": True, "messages": [{"role": "user", "content": "a long answer"}]}
        with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as response:
            lines = response.iter_lines()  # kept: a dropped iterator would close the connection
            answer_id = json.loads(next(lines).removeprefix("data: "))["id"]
            # The connection stays open, unread: the service's writes block once the socket buffers are full.
            started = time.monotonic()
            other = httpx.post(server.url + "/v1/chat/completions", timeout=10,
                               headers={"Authorization": f"Bearer {token}"},
                               json={"model": "fine-tuned", "messages": [{"role": "user", "content": "Tutu"}]})
            assert other.status_code == 200 and time.monotonic() - started < 5, other.text
            deadline = time.monotonic() + 10
            while app.state.store.answer(answer_id) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            saved = app.state.store.answer(answer_id)
            assert saved is not None and len(saved["answer"]) == 30_000_000  # generated and saved, never read


# --- Feedback -----------------------------------------------------------------------------------------------------


def test_feedback_only_on_ones_own_answers_and_anothers_reads_as_unknown(service):
    url, app, token = service
    app.state.store.add_user("bob", PASSWORD)
    bob = sign_in(url, "bob", PASSWORD)
    answer_id = chat(url, token).json()["id"]

    def rate(credential: str, rated: str) -> httpx.Response:
        return httpx.post(url + "/v1/feedback", headers={"Authorization": f"Bearer {credential}"},
                          json={"answer_id": rated, "rating": -1, "correction": "mine"})

    anothers, unknown = rate(bob, answer_id), rate(bob, "chatcmpl-unknown")
    assert anothers.status_code == unknown.status_code == 404
    assert anothers.json()["error"]["message"].replace(answer_id, "ID") == unknown.json()["error"]["message"].replace(
        "chatcmpl-unknown", "ID")  # the same answer: whether the id exists is not confirmed
    assert rate(token, answer_id).status_code == 201
    assert [(row["user"], row["answer_id"]) for row in app.state.store.feedback()] == [("ada", answer_id)]


def test_feedback_survives_a_restart_and_exports_as_training_records(tmp_path):
    settings = settings_for(tmp_path)
    app = serving.create_app(settings, FakeBackend())
    with running_as_ada(app) as (server, token):
        answer_id = chat(server.url, token).json()["id"]
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.post(server.url + "/v1/feedback", headers=headers,
                          json={"answer_id": answer_id, "rating": -1, "correction": "A tutu for girls."}).status_code == 201
        assert httpx.post(server.url + "/v1/feedback", headers=headers,
                          json={"answer_id": "chatcmpl-unknown", "rating": 1}).status_code == 404
    with sqlite3.connect(settings.database) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    restarted = serving.create_app(settings, FakeBackend())
    with serving.ServerThread(restarted) as server:
        rows = httpx.get(server.url + "/v1/feedback", headers={"Authorization": f"Bearer {token}"}).json()["data"]
    assert [(row["answer_id"], row["rating"], row["correction"], row["product"]) for row in rows] == [
        (answer_id, -1, "A tutu for girls.", "Girls Ballet Tutu")]
    target = tmp_path / "feedback.jsonl"
    serving.Store(settings.database).review_correction(rows[0]["id"], "approved", "alan")  # a student's: reviewed
    assert serving.export_feedback(serving.Store(settings.database), target) == 1
    assert [json.loads(line) for line in target.read_text().splitlines()] == [
        {"uid": f"feedback-{rows[0]['id']}", "product": "Girls Ballet Tutu", "description": "A tutu for girls."}]


# --- Training jobs ------------------------------------------------------------------------------------------------

FAKE_TRAINER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    job, behaviour = Path(sys.argv[1]), sys.argv[2]
    for step in range(1, 4):
        # Atomically, as helpers.serving's own trainer writes it: the service may read it at any moment.
        (job / ".progress.partial").write_text(json.dumps({"step": step, "max_steps": 3, "loss": 1.0 / step}))
        (job / ".progress.partial").replace(job / "progress.json")
        time.sleep(0.1)
    if behaviour == "hang":
        time.sleep(600)
    if behaviour == "fail":
        sys.exit("out of memory, say")
    staging = job / ".adapter.partial"
    staging.mkdir()
    (staging / "adapter_config.json").write_text("{}")
    staging.replace(job / "adapter")
    promoted = behaviour != "refused"
    (job / "promotion.json").write_text(json.dumps({"promoted": promoted, "reason": "invents +0.20 [+0.10, +0.30]"
                                                    if not promoted else "not worse", "check": []}))
""")


def fake_job_command(tmp_path: Path, behaviour: str):
    script = tmp_path / "fake_trainer.py"
    script.write_text(FAKE_TRAINER)
    return lambda job_dir, examples, profile, feedback: [sys.executable, str(script), str(job_dir), behaviour]


def wait_for_job(url: str, token: str, job_id: str, done=serving.JOB_STATES_FINISHED, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = httpx.get(f"{url}/v1/train/{job_id}", headers={"Authorization": f"Bearer {token}"}).json()
        if job["status"] in done or (done == ("step 2",) and job["step"] >= 2):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job}")


@pytest.mark.parametrize("behaviour, status", [("succeed", "succeeded"), ("fail", "failed"), ("hang", "cancelled")])
def test_training_job_serves_its_adapter_only_when_it_succeeds(tmp_path, behaviour, status):
    backend = FakeBackend()
    app = serving.create_app(settings_for(tmp_path), backend, job_command=fake_job_command(tmp_path, behaviour))
    app.state.store.add_user("bob", PASSWORD)
    with running_as_ada(app, instructor=True) as (server, token):
        headers = {"Authorization": f"Bearer {token}"}
        student = {"Authorization": f"Bearer {sign_in(server.url, 'bob', PASSWORD)}"}
        refused = httpx.post(server.url + "/v1/train", headers=student, json={"examples": 8})
        assert refused.status_code == 403 and "instructor" in refused.json()["error"]["message"]
        started = httpx.post(server.url + "/v1/train", headers=headers, json={"examples": 8})
        assert started.status_code == 202 and started.json()["status"] == "running"
        job_id = started.json()["id"]
        assert httpx.get(f"{server.url}/v1/train/{job_id}", headers=student).status_code == 403  # details: instructors
        assert httpx.post(server.url + "/v1/train", headers=headers, json={}).status_code == 409  # one at a time
        if behaviour == "hang":
            assert wait_for_job(server.url, token, job_id, done=("step 2",))["step"] >= 2
            pid = app.state.store.job(job_id)["pid"]
            assert httpx.delete(f"{server.url}/v1/train/{job_id}", headers=student).status_code == 403
            job = httpx.delete(f"{server.url}/v1/train/{job_id}", headers=headers).json()
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        else:
            job = wait_for_job(server.url, token, job_id)
        assert job["status"] == status
        adapter = tmp_path / "service" / "jobs" / job_id / "adapter"
        if status == "succeeded":
            assert backend.adapter == adapter and job["step"] == 3 and job["max_steps"] == 3
            assert app.state.store.get_state("adapter") == str(adapter)
        else:
            assert backend.adapter == Path("outputs/adapters/initial") and not adapter.exists()
            assert app.state.store.get_state("adapter") is None
        if status == "failed":
            assert "out of memory, say" in job["error"]
        assert chat(server.url, token).status_code == 200  # still serving
        assert httpx.get(server.url + "/v1/train/job-nope", headers=headers).status_code == 404
        assert httpx.post(server.url + "/v1/train", headers=headers, json={"examples": 10_000}).status_code == 422


def test_a_job_the_gate_refuses_stays_a_candidate_until_an_instructor_promotes_it_and_can_be_rolled_back(tmp_path):
    backend = FakeBackend()
    app = serving.create_app(settings_for(tmp_path), backend, job_command=fake_job_command(tmp_path, "refused"))
    app.state.store.add_user("bob", PASSWORD)
    with running_as_ada(app, instructor=True) as (server, token):
        headers = {"Authorization": f"Bearer {token}"}
        started = httpx.post(server.url + "/v1/train", headers=headers, json={"examples": 8}).json()
        assert (tmp_path / "service" / "jobs" / started["id"] / "serving.json").read_text() == (
            '{"adapter": "outputs/adapters/initial"}\n')  # what the child compares its adapter with
        job = wait_for_job(server.url, token, started["id"])
        assert job["status"] == "candidate" and job["promotion"]["promoted"] is False
        assert "invents" in job["promotion"]["reason"]
        assert backend.adapter == Path("outputs/adapters/initial")  # still serving the old one
        student = {"Authorization": f"Bearer {sign_in(server.url, 'bob', PASSWORD)}"}
        assert httpx.post(f"{server.url}/v1/train/{job['id']}/promote", headers=student).status_code == 403
        promoted = httpx.post(f"{server.url}/v1/train/{job['id']}/promote", headers=headers)
        assert promoted.status_code == 200 and promoted.json()["status"] == "succeeded"
        assert backend.adapter == tmp_path / "service" / "jobs" / job["id"] / "adapter"
        back = httpx.post(server.url + "/v1/adapters/rollback", headers=headers)
        assert back.status_code == 200 and backend.adapter == Path("outputs/adapters/initial")
        assert app.state.store.get_state("adapter") == "outputs/adapters/initial"
        assert httpx.post(f"{server.url}/v1/train/job-nope/promote", headers=headers).status_code == 404


# --- The page, in a real browser -------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Headless, and nothing that reaches for the network at start (this machine's network is closed).
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(CHROMIUM is None and os.environ.get("CI") != "true",
                    reason="no chromium here (CI installs it: apt-get install chromium)")
def test_page_signs_in_streams_an_answer_with_sources_and_rates_it(service):
    from playwright.sync_api import sync_playwright

    url, app, _ = service
    screenshot = paths().outputs / "serving" / "page.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url + "/")
            page.fill("#username", "ada")
            page.fill("#password", "wrong")
            page.click("#signin-button")
            page.wait_for_selector("#status.error")
            assert "wrong password" in page.text_content("#status")
            page.fill("#password", PASSWORD)
            page.click("#signin-button")
            page.wait_for_selector("#ask", state="visible")
            assert page.eval_on_selector_all("#model option", "options => options.map(o => o.value)") == list(
                serving.MODELS)
            page.select_option("#model", "rag")
            page.fill("#title", "Girls Ballet Tutu")
            page.click("#ask-button")
            page.wait_for_selector("#rating", state="visible")
            assert page.text_content("#answer") == "rag says Girls Ballet Tutu is fine."
            assert page.eval_on_selector_all("#sources li", "items => items.map(i => i.textContent)") == [
                "Girls Ballet Tutu", "another"]
            assert "the model ended the answer" in page.text_content("#status")
            page.fill("#correction", "A tutu.")
            page.screenshot(path=str(screenshot), full_page=True)
            page.click("#rate-down")
            page.wait_for_selector("#rating", state="hidden")
            assert "feedback saved" in page.text_content("#status")
        finally:
            browser.close()
    rows = app.state.store.feedback()
    assert [(row["model"], row["rating"], row["correction"]) for row in rows] == [("rag", -1, "A tutu.")]
    assert screenshot.stat().st_size > 10_000


# --- The real models ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_service(tmp_path_factory):
    from helpers.training.adapter import ensure_adapter

    profile = lab_profile()
    settings = serving.ServiceSettings(profile=profile, data_dir=tmp_path_factory.mktemp("real") / "service")
    backend = serving.CourseBackend(profile, ensure_adapter(profile))
    app = serving.create_app(settings, backend)
    with running_as_ada(app) as (server, token):
        yield server.url, backend, token


@pytest.mark.slow
def test_served_answers_are_the_in_process_answers(real_service):
    from helpers.models import answer_products, load_model

    url, backend, token = real_service
    client = openai_client(url, token)
    title = "Girls Ballet Tutu Neon Blue"
    # Each against its own, separately loaded model: the service's one copy, adapter off or on, answers alike.
    for name, adapter in (("foundation", None), ("fine-tuned", backend.adapter)):
        model, tokenizer = load_model(backend.profile, adapter, verbose=False)
        expected = answer_products(model, tokenizer, [title], backend.profile, progress=False)[0]
        reply = client.chat.completions.create(model=name, messages=[{"role": "user", "content": title}])
        assert reply.choices[0].message.content == expected.text
        assert reply.choices[0].finish_reason == expected.finish_reason
        streamed = client.chat.completions.create(model=name, messages=[{"role": "user", "content": title}],
                                                  stream=True)
        pieces = [item.choices[0].delta.content or "" for item in streamed]
        assert "".join(pieces).strip() == expected.text and len([piece for piece in pieces if piece]) > 3


@pytest.mark.slow
def test_a_new_adapter_is_swapped_into_the_one_model_and_the_foundation_is_untouched(tmp_path):
    import safetensors.torch

    from helpers.models import answer_products, load_model
    from helpers.training.adapter import ensure_adapter

    profile = lab_profile()
    backend = serving.CourseBackend(profile, ensure_adapter(profile))
    title = "Girls Ballet Tutu Neon Blue"
    foundation = backend.complete([backend.prepare("foundation", title)], profile.max_new_tokens)[0]
    before = backend.complete([backend.prepare("fine-tuned", title)], profile.max_new_tokens)[0]
    other = tmp_path / "other-adapter"  # the served adapter with its LoRA updates made five times larger
    shutil.copytree(backend.adapter, other)
    weights = safetensors.torch.load_file(other / "adapter_model.safetensors")
    safetensors.torch.save_file({name: value * 5 if "lora_B" in name else value for name, value in weights.items()},
                                other / "adapter_model.safetensors")
    base_weights = {id(parameter) for name, parameter in backend.model.named_parameters() if "lora_" not in name}
    backend.use_adapter(other)
    assert backend.adapter == other and backend.model.active_adapter == "served-1"
    assert list(backend.model.peft_config) == ["served-1"]  # the old adapter is gone, not kept beside
    assert {id(parameter) for name, parameter in backend.model.named_parameters() if "lora_" not in name} == base_weights
    model, tokenizer = load_model(profile, other, verbose=False)
    expected = answer_products(model, tokenizer, [title], profile, progress=False)[0]
    after = backend.complete([backend.prepare("fine-tuned", title)], profile.max_new_tokens)[0]
    assert after == expected and after != before
    assert backend.complete([backend.prepare("foundation", title)], profile.max_new_tokens)[0] == foundation


@pytest.mark.slow
def test_served_rag_answer_names_the_retrieved_products(real_service):
    url, backend, token = real_service
    reply = openai_client(url, token).chat.completions.create(
        model="rag", messages=[{"role": "user", "content": "Girls Ballet Tutu Neon Blue"}])
    sources = reply.model_extra["sources"]
    assert len(sources) == backend.profile.retriever_k
    assert sources[0]["title"] == "Girls Ballet Tutu Neon Blue"
    assert reply.choices[0].message.content


def test_a_progress_file_caught_mid_write_reads_as_no_progress(tmp_path, caplog):
    progress = tmp_path / "progress.json"
    assert serving.read_progress(progress) == {}
    progress.write_text('{"step": 2, "max_st')  # a trainer that does not write it atomically, read mid-write
    assert serving.read_progress(progress) == {}
    assert "unreadable" in caplog.text
    progress.write_text('{"step": 2, "max_steps": 3, "loss": 0.5}')
    assert serving.read_progress(progress)["step"] == 2
