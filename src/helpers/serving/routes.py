"""The service's routes, on FastAPI ``APIRouter``s that a test can mount alone: ``page_router`` (the page at ``/``),
``auth_router`` (sign-in and the API schema), ``openai_router`` (models, completions, chat completions),
``feedback_router``, ``jobs_router`` (training jobs, instructors only) and ``status_router``; ``ROUTERS`` adds those
of ``accounts`` (keys, signing out, deleting users, reviewing corrections). A route takes what it
needs from ``request.app.state`` (the settings, store, queue, jobs, backend and sign-in guard that ``create_app`` puts
there) through the dependencies of ``state``, and its user from the security dependencies of ``auth``."""
from __future__ import annotations

import time
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from helpers.config import display_path
from helpers.serving import accounts
from helpers.serving.auth import current_instructor, current_user
from helpers.serving.backend import Backend, GenerationQueue, Prepared
from helpers.serving.protocol import (ApiError, ChatRequest, CompletionRequest, Feedback, SignIn, TrainRequest,
                                      message_text, new_id, stop_sequences, system_fingerprint, usage)
from helpers.serving.settings import GENERATION_SECONDS_HEADER, MODELS, ServiceSettings
from helpers.serving.state import BackendDep, Guard, Jobs, Queue, Settings, StoreDep
from helpers.serving.streaming import answer_cut_at_stop, streamed

User = Annotated[str, Depends(current_user)]
Instructor = Annotated[str, Depends(current_instructor)]


# --- Checks and generation shared by the OpenAI routes -----------------------------------------------------------


def checked_model(name: str, allowed: tuple[str, ...] = MODELS) -> str:
    if name not in MODELS:
        raise ApiError(404, f"The model {name!r} does not exist: choose one of {', '.join(MODELS)}.",
                       "not_found", param="model")
    if name not in allowed:
        raise ApiError(400, f"The model {name!r} takes a product title: use /v1/chat/completions.", param="model")
    return name


def checked_max_tokens(settings: ServiceSettings, *asked: int | None) -> int:
    value = next((number for number in asked if number is not None), settings.profile.max_new_tokens)
    if value > settings.max_tokens:
        raise ApiError(422, f"max_tokens={value} is over this service's cap of {settings.max_tokens}.",
                       param="max_tokens")
    return value


def checked_n(n: int | None) -> None:
    """One answer a request: greedy decoding would write the same answer n times (the seed changes nothing)."""
    if n is not None and n > 1:
        raise ApiError(400, f"n={n}: this service writes one answer per request (decoding is greedy, so n answers "
                            "would be the same answer n times).", param="n")


def fingerprint(settings: ServiceSettings) -> str:
    return system_fingerprint(settings.profile.name)


def admitted(queue: GenerationQueue, settings: ServiceSettings) -> None:
    if not queue.admit():
        raise ApiError(429, f"The service is busy ({settings.queue_capacity} requests admitted): retry shortly.",
                       "rate_limit_error", {"Retry-After": "1"})


def generate(queue: GenerationQueue, backend: Backend, prepared: list[Prepared],
             max_tokens: int) -> tuple[list, float, int]:
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


# --- The page and sign-in ------------------------------------------------------------------------------------------

page_router = APIRouter()
auth_router = APIRouter()


@page_router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page():
    return (resources.files("helpers") / "static" / "index.html").read_text()


# No public /docs, /redoc or /openapi.json (create_app turns them off): the schema is served here, to signed-in users.
@auth_router.get("/openapi.json", include_in_schema=False)
def openapi_schema(request: Request, user: User):
    return request.app.openapi()


@auth_router.post("/auth/token")
def sign_in(form: SignIn, request: Request, store: StoreDep, guard: Guard, settings: Settings):
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


# --- The OpenAI routes ---------------------------------------------------------------------------------------------

openai_router = APIRouter(prefix="/v1")


@openai_router.get("/models")
def list_models(user: User):
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "course"}
                                       for name in MODELS]}


@openai_router.post("/completions")
async def completions(request: CompletionRequest, user: User, settings: Settings, queue: Queue,
                      backend: BackendDep):
    model = checked_model(request.model, ("foundation", "fine-tuned"))
    checked_n(request.n)
    max_tokens = checked_max_tokens(settings, request.max_tokens)
    prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
    if not prompts or len(prompts) > settings.profile.generation_batch_size:
        raise ApiError(422, f"Send 1 to {settings.profile.generation_batch_size} prompts in one request.",
                       param="prompt")
    stop = stop_sequences(request.stop)
    admitted(queue, settings)
    try:
        answers, _, prompt_tokens = await run_in_threadpool(
            generate, queue, backend, [backend.prepare_raw(model, prompt) for prompt in prompts], max_tokens)
    finally:
        queue.release()
    # A stop sequence that cut the text ended it, as OpenAI reports it.
    answers = [answer_cut_at_stop(answer, stop) for answer in answers]
    return {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": fingerprint(settings),
            "choices": [{"index": index, "text": answer.text, "logprobs": None, "finish_reason": answer.finish_reason}
                        for index, answer in enumerate(answers)],
            "usage": usage(prompt_tokens, sum(answer.new_tokens for answer in answers))}


@openai_router.post("/chat/completions")
async def chat_completions(request: ChatRequest, user: User, settings: Settings, store: StoreDep, queue: Queue,
                           backend: BackendDep):
    model = checked_model(request.model)
    checked_n(request.n)
    max_tokens = checked_max_tokens(settings, request.max_completion_tokens, request.max_tokens)
    stop = stop_sequences(request.stop)
    users = [message for message in request.messages if message.role == "user"]
    title = message_text(users[-1].content).strip() if users else ""
    if not title:
        raise ApiError(422, "Malformed request: the last user message must hold a product title.", param="messages")
    if len(title) > settings.max_title_chars:
        raise ApiError(422, f"The product title is over {settings.max_title_chars} characters.", param="messages")
    admitted(queue, settings)
    try:
        prepared = await run_in_threadpool(backend.prepare, model, title)
    except BaseException:
        queue.release()
        raise
    answer_id, created = new_id("chatcmpl"), int(time.time())
    if request.stream:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        return streamed(prepared, max_tokens, answer_id, created, user, store, backend, queue, stop,
                        fingerprint(settings), include_usage)
    try:
        answers, seconds, prompt_tokens = await run_in_threadpool(generate, queue, backend, [prepared], max_tokens)
    finally:
        queue.release()
    answer = answer_cut_at_stop(answers[0], stop)  # saved as sent: the text a rating and a correction are about
    store.save_answer(answer_id, user, model, title, answer.text, answer.finish_reason, list(prepared.sources))
    body = {"id": answer_id, "object": "chat.completion", "created": created, "model": model,
            "system_fingerprint": fingerprint(settings),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                         "finish_reason": answer.finish_reason}],
            "usage": usage(prompt_tokens, answer.new_tokens)}
    if model == "rag":
        body["sources"] = list(prepared.sources)
    # What generation alone took: a client subtracts it from its latency to see what HTTP and the service add.
    return JSONResponse(body, headers={GENERATION_SECONDS_HEADER: f"{seconds:.4f}"})


# --- Feedback, training jobs, status -------------------------------------------------------------------------------

feedback_router = APIRouter(prefix="/v1")


@feedback_router.post("/feedback", status_code=201)
def post_feedback(feedback: Feedback, user: User, store: StoreDep, settings: Settings, queue: Queue,
                  backend: BackendDep):
    answer = store.answer(feedback.answer_id)
    # Another user's answer reads as no answer: the reply does not confirm that an id exists.
    if answer is None or answer["user"] != user:
        raise ApiError(404, f"No answer {feedback.answer_id!r}: feedback names the id of an answer this service "
                            "gave you.", "not_found")
    correction = feedback.correction.strip() if feedback.correction else None
    if correction:  # 422 unless it fits training whole; stored pending review (an instructor's: approved)
        accounts.check_correction(settings, queue.generating, backend, answer["product"], correction)
    feedback_id = store.add_feedback(feedback.answer_id, user, feedback.rating, correction or None)
    status = store.correction(feedback_id)["status"] if correction else None
    return {"id": feedback_id, "object": "feedback", "answer_id": feedback.answer_id, "status": status}


@feedback_router.get("/feedback")
def list_feedback(user: User, store: StoreDep):
    return {"object": "list", "data": store.feedback(user)}


jobs_router = APIRouter(prefix="/v1")


@jobs_router.post("/train", status_code=202)
def start_training(request: TrainRequest, user: Instructor, jobs: Jobs):
    return jobs.start(user, request.examples, request.include_feedback)


@jobs_router.get("/train/{job_id}")
def training_status(job_id: str, user: Instructor, jobs: Jobs):
    return jobs.describe(job_id)


@jobs_router.post("/train/{job_id}/promote")
def promote_adapter(job_id: str, user: Instructor, jobs: Jobs):
    """Serve a job's adapter on purpose, whatever the promotion gate said (its report stays with the job)."""
    return jobs.promote(job_id)


@jobs_router.post("/adapters/rollback")
def roll_back_adapter(user: Instructor, jobs: Jobs):
    """Serve again the adapter that served before the last swap."""
    return jobs.rollback()


@jobs_router.delete("/train/{job_id}")
def cancel_training(job_id: str, user: Instructor, jobs: Jobs):
    jobs.describe(job_id)  # 404 for an unknown job
    return jobs.cancel(job_id)


status_router = APIRouter(prefix="/v1")


@status_router.get("/status")
def service_status(user: User, settings: Settings, queue: Queue, backend: BackendDep):
    return {"profile": settings.profile.name, "adapter": backend.adapter and display_path(backend.adapter),
            "admitted": queue.admitted, "queue_capacity": queue.capacity, "rejected": queue.rejected}


# In the order create_app includes them (the order of the API schema's paths).
ROUTERS = (page_router, auth_router, openai_router, feedback_router, jobs_router, status_router, *accounts.ROUTERS)
