"""OpenAI conformance of the course service, as llama.cpp's server tests check theirs (tools/server/tests/unit/
test_chat_completion.py, test_completion.py): the official ``openai`` client against the real app on loopback, over
test_serving's fake backend ("<model> says <title> is fine.", one word a token; count_tokens counts words).

Checked: ids, objects, created, model and system_fingerprint on whole answers and on every chunk; the role in the
first delta and finish_reason null but on the last; exact usage, and in streams only with stream_options'
include_usage (an extra last chunk with no choices); stop sequences, whole and streamed; seed accepted, n > 1 refused;
unknown fields ignored; every error in OpenAI's shape, raised by the client as the status's exception class.
"""
from __future__ import annotations

import random

import httpx
import openai
import pytest
from openai import OpenAI

from helpers import serving
from helpers.serving.streaming import StopCutter, cut_before_stop
from test_serving import PASSWORD, FakeBackend, running_as_ada, service, settings_for  # noqa: F401 (a fixture)

TITLE = "Girls Ballet Tutu"
ANSWER = f"fine-tuned says {TITLE} is fine."  # 7 words: 7 tokens generated
PROMPT_TOKENS = len(f"prompt for {TITLE}".split())  # the fake backend's prompt, as its count_tokens counts it
MESSAGES = [{"role": "user", "content": TITLE}]


def client_for(url: str, token: str) -> OpenAI:
    return OpenAI(base_url=url + "/v1", api_key=token, max_retries=0)


@pytest.fixture
def client(service):
    url, _, token = service
    return client_for(url, token)


def raw_events(url: str, token: str, **body) -> list[dict]:
    response = httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                          json={"model": "fine-tuned", "messages": MESSAGES, "stream": True, **body})
    assert response.status_code == 200 and response.text.rstrip().endswith("data: [DONE]"), response.text
    return serving.parse_sse(response.text)


def assert_openai_chunks(chunks: list, model: str = "fine-tuned") -> tuple[str, str]:
    """What every stream must be, as llama.cpp's test_chat_completion_stream checks it; its (text, finish_reason)."""
    answering = [item for item in chunks if item.choices]
    assert len({item.id for item in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert len({item.created for item in chunks}) == 1 and all(type(item.created) is int for item in chunks)
    assert {item.object for item in chunks} == {"chat.completion.chunk"}
    assert {item.model for item in chunks} == {model}
    assert {item.system_fingerprint for item in chunks} == {"course-lab-greedy"}
    first, *rest = answering
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert all(item.choices[0].delta.role is None for item in rest)
    assert [item.choices[0].finish_reason for item in answering[:-1]] == [None] * (len(answering) - 1)
    last = answering[-1].choices[0]
    assert last.finish_reason in ("stop", "length") and last.delta.content is None  # no text with the finish
    return "".join(item.choices[0].delta.content or "" for item in answering), last.finish_reason


# --- Whole answers ----------------------------------------------------------------------------------------------------


def test_models_list_in_openai_shape(client):
    models = client.models.list()
    assert [(model.id, model.object) for model in models] == [
        ("foundation", "model"), ("fine-tuned", "model"), ("rag", "model")]


def test_a_whole_chat_answer_has_openai_fields_and_exact_usage(client):
    reply = client.chat.completions.create(model="fine-tuned", messages=MESSAGES)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert type(reply.created) is int and reply.model == "fine-tuned"
    assert reply.system_fingerprint == "course-lab-greedy"
    assert len(reply.choices) == 1 and reply.choices[0].index == 0
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content == ANSWER
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (
        PROMPT_TOKENS, 7, PROMPT_TOKENS + 7)
    short = client.chat.completions.create(model="fine-tuned", messages=MESSAGES, max_completion_tokens=2)
    assert (short.choices[0].message.content, short.choices[0].finish_reason) == ("fine-tuned says", "length")
    assert (short.usage.completion_tokens, short.usage.total_tokens) == (2, PROMPT_TOKENS + 2)


def test_usage_counts_the_prompt_actually_used(client):
    # The rag prompt is the fake backend's too ("prompt for <title>"); a system message is not part of it.
    reply = client.chat.completions.create(model="rag", messages=[{"role": "system", "content": "be brief please"},
                                                                   *MESSAGES])
    assert reply.usage.prompt_tokens == PROMPT_TOKENS and reply.usage.completion_tokens == 7


# --- Streams ------------------------------------------------------------------------------------------------------


def test_a_stream_is_openai_chunks_without_usage_unless_asked(service, client):
    url, _, token = service
    whole = client.chat.completions.create(model="fine-tuned", messages=MESSAGES)
    chunks = list(client.chat.completions.create(model="fine-tuned", messages=MESSAGES, stream=True))
    assert assert_openai_chunks(chunks) == (ANSWER, "stop")
    assert all(item.usage is None for item in chunks)
    events = raw_events(url, token)
    assert all("usage" not in event for event in events)  # as OpenAI: no usage field at all when not asked
    assert all("system_fingerprint" in event for event in events)
    assert events[-1]["choices"] == [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    assert whole.choices[0].message.content == ANSWER


def test_include_usage_adds_a_last_chunk_with_no_choices_and_the_usage(service, client):
    url, _, token = service
    chunks = list(client.chat.completions.create(model="fine-tuned", messages=MESSAGES, stream=True,
                                                 stream_options={"include_usage": True}))
    assert assert_openai_chunks(chunks) == (ANSWER, "stop")
    *answering, last = chunks
    assert last.choices == [] and all(item.choices for item in answering)
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (
        PROMPT_TOKENS, 7, PROMPT_TOKENS + 7)
    assert all(item.usage is None for item in answering)
    events = raw_events(url, token, stream_options={"include_usage": True}, max_tokens=3)
    assert all(event["usage"] is None for event in events[:-1])  # present, null, as OpenAI sends it
    assert events[-1]["usage"] == {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": 3,
                                   "total_tokens": PROMPT_TOKENS + 3}
    assert serving.assemble_stream(events) == ("fine-tuned says Girls", "length")
    no_usage = raw_events(url, token, stream_options={"include_usage": False})
    assert all("usage" not in event for event in no_usage)


def test_a_streamed_rag_answer_keeps_its_sources_on_the_first_chunk(client):
    chunks = list(client.chat.completions.create(model="rag", messages=MESSAGES, stream=True))
    text, _ = assert_openai_chunks(chunks, model="rag")
    assert text == f"rag says {TITLE} is fine."
    assert [source["title"] for source in chunks[0].model_extra["sources"]] == [TITLE, "another"]


# --- Stop sequences, seed, n, unknown fields ------------------------------------------------------------------------


@pytest.mark.parametrize("stop, text", [
    ("Tutu", "fine-tuned says Girls Ballet "),
    ([" is", "says"], "fine-tuned "),  # the earliest, whatever the order
    ("says Girls", "fine-tuned "),  # across two pieces (" says", " Girls")
    (["nowhere", "fine.x"], ANSWER),  # never met: the whole answer, the held tail sent at the end
    ("fine-tuned", ""),
])
def test_stop_sequences_cut_whole_and_streamed_answers_alike(service, client, stop, text):
    url, app, _ = service
    reply = client.chat.completions.create(model="fine-tuned", messages=MESSAGES, stop=stop)
    finish = "stop"  # the model ended it (the fake's answers end with EOS), or a stop sequence did
    assert (reply.choices[0].message.content, reply.choices[0].finish_reason) == (text, finish)
    assert reply.usage.completion_tokens == 7  # what was generated: the answer is cut after generation
    assert app.state.store.answer(reply.id)["answer"] == text  # saved as sent: what a rating is about
    chunks = list(client.chat.completions.create(model="fine-tuned", messages=MESSAGES, stop=stop, stream=True,
                                                 stream_options={"include_usage": True}))
    assert assert_openai_chunks(chunks) == (text, finish)
    assert chunks[-1].usage.completion_tokens == 7
    stopped = list(client.chat.completions.create(model="fine-tuned", messages=MESSAGES, stop=stop, max_tokens=4,
                                                  stream=True))
    expected = cut_before_stop("fine-tuned says Girls Ballet", tuple([stop] if isinstance(stop, str) else stop))
    assert assert_openai_chunks(stopped) == (
        expected, "stop" if expected != "fine-tuned says Girls Ballet" else "length")


def test_no_chunk_carries_text_past_a_stop_sequence(service):
    url, _, token = service
    events = raw_events(url, token, stop=["Ballet"])
    pieces = [event["choices"][0]["delta"].get("content") for event in events]
    assert "".join(piece or "" for piece in pieces) == "fine-tuned says Girls "
    assert not any("Ballet" in (piece or "") or "fine." in (piece or "") for piece in pieces)


def test_more_than_four_stop_sequences_are_refused(client):
    with pytest.raises(openai.UnprocessableEntityError) as refused:
        client.chat.completions.create(model="fine-tuned", messages=MESSAGES, stop=["a", "b", "c", "d", "e"])
    assert refused.value.param == "stop" and "at most 4" in refused.value.message


def test_seed_is_accepted_and_changes_nothing_and_unknown_fields_are_ignored(client):
    plain = client.chat.completions.create(model="fine-tuned", messages=MESSAGES)
    for seed in (0, 42):
        seeded = client.chat.completions.create(model="fine-tuned", messages=MESSAGES, seed=seed, temperature=0.7,
                                                n=1, extra_body={"frobnicate": True, "top_k": 3})
        assert seeded.choices[0].message.content == plain.choices[0].message.content
    completion = client.completions.create(model="fine-tuned", prompt="a prompt", seed=7, n=1,
                                           extra_body={"frobnicate": True})
    assert completion.choices[0].text == "fine-tuned says a prompt is fine."


def test_the_schema_says_what_seed_and_n_do(service):
    url, _, token = service
    schema = httpx.get(url + "/openapi.json", headers={"Authorization": f"Bearer {token}"}).json()
    chat = schema["components"]["schemas"]["ChatRequest"]["properties"]
    assert "greedy" in chat["seed"]["description"] and "n > 1" in chat["n"]["description"]


def test_n_over_one_is_refused_in_openais_shape(service, client):
    url, _, token = service
    for create in (lambda: client.chat.completions.create(model="fine-tuned", messages=MESSAGES, n=2),
                   lambda: client.chat.completions.create(model="fine-tuned", messages=MESSAGES, n=3, stream=True),
                   lambda: client.completions.create(model="fine-tuned", prompt="a prompt", n=2)):
        with pytest.raises(openai.BadRequestError) as refused:
            create()
        assert refused.value.status_code == 400 and refused.value.param == "n"
        assert "one answer per request" in refused.value.message
    assert client.chat.completions.create(model="fine-tuned", messages=MESSAGES).choices  # still serving


# --- /v1/completions --------------------------------------------------------------------------------------------------


def test_completions_have_openai_fields_usage_and_stop(client):
    reply = client.completions.create(model="fine-tuned", prompt="a prompt")
    assert reply.id.startswith("cmpl-") and reply.object == "text_completion"
    assert type(reply.created) is int and reply.model == "fine-tuned"
    assert reply.system_fingerprint == "course-lab-greedy"
    assert (reply.choices[0].text, reply.choices[0].finish_reason) == ("fine-tuned says a prompt is fine.", "stop")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (2, 6, 8)
    cut = client.completions.create(model="foundation", prompt=["one", "two words"], stop=" is", max_tokens=4)
    assert [(choice.index, choice.text, choice.finish_reason) for choice in cut.choices] == [
        (0, "foundation says one", "stop"), (1, "foundation says two words", "length")]
    assert (cut.usage.prompt_tokens, cut.usage.completion_tokens) == (3, 4 + 4)


# --- Errors -----------------------------------------------------------------------------------------------------------


def assert_openai_error(error: openai.APIStatusError, status: int, kind: str, param: str | None = None) -> None:
    # The service's code is the HTTP status (a number; the client reads it as OpenAI's code, a string).
    assert error.status_code == status and str(error.code) == str(status) and error.body["code"] == status
    assert error.type == kind and error.param == param
    assert set(error.body) == {"message", "type", "param", "code"} and error.message


def test_errors_raise_the_official_clients_exception_classes(service, client):
    url, app, token = service
    app.state.store.add_user("bob", PASSWORD)
    student = client_for(url, httpx.post(url + "/auth/token", json={"username": "bob", "password": PASSWORD}).json()[
        "access_token"])
    with pytest.raises(openai.AuthenticationError) as unauthorized:
        client_for(url, "not-a-token").chat.completions.create(model="fine-tuned", messages=MESSAGES)
    assert_openai_error(unauthorized.value, 401, "authentication_error")
    with pytest.raises(openai.PermissionDeniedError) as forbidden:
        student.post("/train", body={"examples": 8}, cast_to=httpx.Response)
    assert_openai_error(forbidden.value, 403, "permission_error")
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert_openai_error(unknown.value, 404, "not_found", "model")
    assert "gpt-4o" in unknown.value.message
    with pytest.raises(openai.BadRequestError) as wrong_route:
        client.completions.create(model="rag", prompt="a prompt")
    assert_openai_error(wrong_route.value, 400, "invalid_request_error", "model")
    with pytest.raises(openai.UnprocessableEntityError) as over_cap:
        client.chat.completions.create(model="fine-tuned", messages=MESSAGES, max_tokens=10_000)
    assert_openai_error(over_cap.value, 422, "invalid_request_error", "max_tokens")
    with pytest.raises(openai.UnprocessableEntityError) as malformed:
        client.chat.completions.create(model="fine-tuned", messages=MESSAGES, max_tokens=0)
    assert_openai_error(malformed.value, 422, "invalid_request_error", "max_tokens")
    with pytest.raises(openai.UnprocessableEntityError) as no_title:
        client.chat.completions.create(model="fine-tuned", messages=[{"role": "user", "content": " "}])
    assert_openai_error(no_title.value, 422, "invalid_request_error", "messages")
    app.state.queue.admit = lambda: False  # a full queue
    with pytest.raises(openai.RateLimitError) as busy:
        client.chat.completions.create(model="fine-tuned", messages=MESSAGES, stream=True)
    assert_openai_error(busy.value, 429, "rate_limit_error")
    assert busy.value.response.headers["retry-after"] == "1"


def test_errors_outside_the_routes_are_in_openais_shape_too(service):
    url, _, token = service
    headers = {"Authorization": f"Bearer {token}"}
    for response, status in ((httpx.get(url + "/v1/nowhere", headers=headers), 404),
                             (httpx.get(url + "/v1/chat/completions", headers=headers), 405),
                             (httpx.post(url + "/v1/chat/completions", headers=headers, content=b"{not json"), 422),
                             (httpx.post(url + "/v1/chat/completions", headers=headers, content=b"x" * 70_000), 413)):
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == status and error["message"]


# --- The stop-sequence cutter alone -------------------------------------------------------------------------------


def test_the_stop_cutter_sends_what_the_whole_answer_keeps_however_the_text_is_split():
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice("ab.") for _ in range(rng.randint(0, 16)))
        stop = tuple("".join(rng.choice("ab.") for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 4)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(1, 5))))
        cutter = StopCutter(stop)
        sent = [cutter.feed(text[start:end]) for start, end in zip([0, *cuts], [*cuts, len(text)])]
        kept = cut_before_stop(text, stop)
        assert "".join(sent) + cutter.flush() == kept and kept.startswith("".join(sent)), (text, stop)
        assert cutter.stopped == (kept != text)
    assert StopCutter().feed("no stops: sent at once") == "no stops: sent at once"
