"""Streamed answers: ``StreamedGeneration`` generates one answer to its end in a thread of its own, ``sse_events``
turns what it hands over into Server-Sent Events (OpenAI's chunks), ``ClosingStreamingResponse`` closes them when the
client leaves, and ``streamed`` puts the three together into the response of a ``stream: true`` request."""
from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from queue import Empty, SimpleQueue
from typing import Any

from starlette.responses import StreamingResponse

from helpers.serving.backend import Backend, GenerationQueue, Prepared
from helpers.serving.protocol import chunk, sse, usage
from helpers.serving.store import Store

@dataclass(frozen=True)
class Finished:
    """A streamed answer's last item: the whole answer (saved by then) and its prompt's length in tokens."""

    answer: Any  # helpers.models.Answer
    prompt_tokens: int


_CANCELLED = object()


class StreamedGeneration:
    """One streamed answer, generated to its end by a thread of its own whatever its reader does.

    The thread holds the generation lock only while the backend generates, and puts each piece on an unbounded queue:
    a reader that stops reading (its socket buffers full) does not keep the lock from the requests behind it. The
    thread saves the answer itself (an answer nobody read is still there to be rated), frees the admission when it
    ends, and always puts one last item: a Finished, an exception, or _CANCELLED. ``cancel()`` (the reader left)
    stops it at its next piece.
    """

    def __init__(self, prepared: Prepared, max_tokens: int, backend: Backend, generating: threading.Lock,
                 save: Callable[[Any], None], release: Callable[[], None]) -> None:
        self.prepared, self.max_tokens, self.backend = prepared, max_tokens, backend
        self.generating, self.save, self.release = generating, save, release
        self.items: SimpleQueue = SimpleQueue()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="streamed-answer")

    def start(self) -> StreamedGeneration:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancelled.set()

    def _run(self) -> None:
        last: Any = _CANCELLED
        try:
            outcome = self._generate()
            if isinstance(outcome, Finished):  # saved before the last chunk: a client rating it at once finds it
                self.save(outcome.answer)
            last = outcome
        except BaseException as error:  # raised again by the reader, where the response is written
            last = error
        finally:
            self.release()
            self.items.put(last)

    def _generate(self) -> Finished | Exception | object:
        from helpers.models import PromptTooLongError

        with self.generating:
            if self._cancelled.is_set():  # the reader left while this waited for its turn
                return _CANCELLED
            try:
                stream = self.backend.stream(self.prepared, self.max_tokens)
            except PromptTooLongError as error:
                return error
            try:
                for piece in stream:
                    if self._cancelled.is_set():
                        return _CANCELLED
                    self.items.put(piece)
            finally:
                stream.close()
            return Finished(stream.answer, self.backend.count_tokens(self.prepared.prompt))


async def next_item(items: SimpleQueue) -> Any:
    import anyio

    try:
        return items.get_nowait()  # the producer is usually ahead: no trip to the thread pool
    except Empty:
        # Abandoned if the client leaves: the reader's finally cancels the generation now, not after the next piece.
        # The thread still returns, as the producer always puts a last item.
        return await anyio.to_thread.run_sync(items.get, abandon_on_cancel=True)


async def sse_events(generation: StreamedGeneration, answer_id: str, created: int) -> AsyncIterator[str]:
    """The answer's Server-Sent Events as the producer thread hands its pieces over; cancels it however it ends."""
    from helpers.models import PromptTooLongError

    prepared = generation.prepared
    try:
        extra = {"sources": list(prepared.sources)} if prepared.model == "rag" else {}
        yield sse(chunk(answer_id, created, prepared.model, {"role": "assistant", "content": ""}, **extra))
        while isinstance(item := await next_item(generation.items), str):
            yield sse(chunk(answer_id, created, prepared.model, {"content": item}))
        if isinstance(item, PromptTooLongError):
            yield sse({"error": {"message": str(item), "type": "invalid_request_error", "code": 422}})
        elif isinstance(item, BaseException):
            raise item
        elif isinstance(item, Finished):
            yield sse(chunk(answer_id, created, prepared.model, {}, item.answer.finish_reason,
                            usage=usage(item.prompt_tokens, item.answer.new_tokens)))
            yield sse("[DONE]")
    finally:
        generation.cancel()


class ClosingStreamingResponse(StreamingResponse):
    """Starlette leaves a body iterator open when the client goes away (until garbage collection); this closes it."""

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            await self.body_iterator.aclose()


def streamed(prepared: Prepared, max_tokens: int, answer_id: str, created: int, user: str, store: Store,
             backend: Backend, queue: GenerationQueue):
    """Generation starts now in a thread of its own (StreamedGeneration); the response writes what it hands over."""

    def save(answer) -> None:
        store.save_answer(answer_id, user, prepared.model, prepared.product, answer.text, answer.finish_reason,
                          list(prepared.sources))

    generation = StreamedGeneration(prepared, max_tokens, backend, queue.generating, save, queue.release).start()
    events = sse_events(generation, answer_id, created)
    weakref.finalize(events, generation.cancel)  # a response never started runs no finally: stop generating anyway
    return ClosingStreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
