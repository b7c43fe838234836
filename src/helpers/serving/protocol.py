"""What the service says over HTTP, in OpenAI's shapes: ``ApiError`` and the exception handlers that answer every
error as {"error": {"message", "type", "param", "code"}}, ``BodyLimit`` (413 for a body over the limit), the request bodies
(pydantic models), and the pieces of a completion: ids, chunks, usage, Server-Sent Events and reading them back
(``parse_sse``, ``assemble_stream``)."""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from typing import Annotated, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from helpers.serving.settings import MAX_JOB_EXAMPLES, logger


# --- Errors in OpenAI's shape, and the body limit ------------------------------------------------------------------


class ApiError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}, ``param`` the request
    field at fault (or None) and ``code`` the HTTP status; the official client raises the status's exception class."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers, self.param = status, message, kind, headers, param

    @property
    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}}

    def response(self):
        from fastapi.responses import JSONResponse

        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


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


def message_text(content) -> str:
    """A chat message's text: a string, or the text parts of a list of parts (OpenAI's two forms)."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content or () if isinstance(part, dict))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def system_fingerprint(profile_name: str) -> str:
    """What OpenAI's ``system_fingerprint`` says here: the profile (model, quantization) and greedy decoding."""
    return f"course-{profile_name}-greedy"


def chunk(answer_id: str, created: int, model: str, delta: dict, finish_reason: str | None = None,
          fingerprint: str | None = None, **extra) -> dict:
    """One ``chat.completion.chunk``; ``fingerprint`` (OpenAI's ``system_fingerprint``) where one is given."""
    head = {"id": answer_id, "object": "chat.completion.chunk", "created": created, "model": model}
    if fingerprint is not None:
        head["system_fingerprint"] = fingerprint
    return {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}


def usage_chunk(answer_id: str, created: int, model: str, fingerprint: str | None, counted: dict) -> dict:
    """The extra last chunk of a stream asked with ``stream_options: {"include_usage": true}``: no choices."""
    return {**chunk(answer_id, created, model, {}, fingerprint=fingerprint), "choices": [], "usage": counted}


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


# --- Request bodies (module level: FastAPI resolves their names from the routes' module) --------------------------


class SignIn(BaseModel):
    username: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)

class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list | None = None

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = Field(False, description="An extra last chunk with no choices and the request's usage; the "
                                                   "other chunks then carry usage: null.")

# Fields both completion routes take as OpenAI does. Unknown fields are accepted and ignored (extra="allow").
STOP = Field(None, description="Up to 4 sequences: the answer ends before the first one written (finish_reason "
                               "\"stop\"); a stream sends no text after it.")
SEED = Field(None, description="Accepted as OpenAI accepts it; decoding is greedy, so the seed changes nothing.")
N = Field(None, ge=1, description="1 only: greedy decoding writes the same answer every time (n > 1 gets 400).")
TEMPERATURE = Field(None, description="Accepted and ignored: decoding is greedy.")

class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = STOP
    seed: int | None = SEED
    n: int | None = N
    temperature: float | None = TEMPERATURE

class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str | list[str]
    max_tokens: int | None = Field(None, ge=1)
    stop: str | Annotated[list[str], Field(max_length=4)] | None = STOP
    stream: Literal[False] = False
    seed: int | None = SEED
    n: int | None = N
    temperature: float | None = TEMPERATURE


def stop_sequences(stop: str | list[str] | None) -> tuple[str, ...]:
    """A request's stop sequences as a tuple, empty ones left out (they would stop before anything)."""
    return tuple(sequence for sequence in ([stop] if isinstance(stop, str) else stop or ()) if sequence)

class Feedback(BaseModel):
    answer_id: str
    rating: Literal[-1, 1]
    correction: str | None = Field(None, max_length=4000)

class TrainRequest(BaseModel):
    examples: int = Field(8, ge=2, le=MAX_JOB_EXAMPLES)
    include_feedback: bool = True


# --- Exception handlers: every error in OpenAI's shape --------------------------------------------------------------


async def api_error(request, error: ApiError):
    return error.response()


async def invalid_request(request, error: RequestValidationError):
    problems = "; ".join(f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}" for item in error.errors())
    # OpenAI's param: the request's field at fault (the first one, after "body"); None for a body that is not JSON.
    location = tuple((error.errors() or [{"loc": ()}])[0]["loc"])
    param = location[1] if len(location) > 1 and isinstance(location[1], str) else None
    return ApiError(422, f"Malformed request: {problems}", param=param).response()


async def http_error(request, error: HTTPException):
    return ApiError(error.status_code, str(error.detail), "not_found" if error.status_code == 404
                    else "invalid_request_error").response()


async def server_error(request, error: Exception):
    logger.exception("error answering %s %s", request.method, request.url.path)
    return ApiError(500, "Internal error: the service's log says what went wrong.", "server_error").response()


EXCEPTION_HANDLERS = {ApiError: api_error, RequestValidationError: invalid_request, HTTPException: http_error,
                      Exception: server_error}
