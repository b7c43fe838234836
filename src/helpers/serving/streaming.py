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
from helpers.serving.protocol import ApiError, chunk, sse, usage, usage_chunk
from helpers.serving.store import Store

@dataclass(frozen=True)
class Finished:
    """A streamed answer's last item: the whole answer (saved by then) and its prompt's length in tokens."""

    answer: Any  # helpers.models.Answer
    prompt_tokens: int


_CANCELLED = object()


class StopCutter:
    """A streamed text cut before its first stop sequence: ``feed`` each piece and send what it returns, ``flush`` at
    the end. It holds back only a tail that may begin a stop sequence (nothing when there are none), and once a stop
    sequence is written it returns nothing more. What it lets through adds up to ``cut_before_stop`` of the whole
    text: the text before the earliest place where a stop sequence begins."""

    def __init__(self, stop: tuple[str, ...] = ()) -> None:
        self.stop = tuple(sequence for sequence in stop if sequence)
        self.held, self.stopped = "", False

    def feed(self, piece: str) -> str:
        if not self.stop:
            return piece
        if self.stopped:
            return ""
        self.held += piece
        return self._release(final=False)

    def flush(self) -> str:
        return "" if self.stopped else self._release(final=True)

    def _release(self, final: bool) -> str:
        text = self.held
        found = min((at for at in (text.find(sequence) for sequence in self.stop) if at >= 0), default=len(text))
        # Where the earliest unfinished stop sequence begins: a suffix of the text that begins one, and may go on.
        maybe = len(text) if final else min(
            (len(text) - size for sequence in self.stop for size in range(min(len(sequence) - 1, len(text)), 0, -1)
             if text.endswith(sequence[:size])), default=len(text))
        if found < len(text) and found <= maybe:  # no stop sequence beginning earlier can still be finished
            self.held, self.stopped = "", True
            return text[:found]
        keep = min(found, maybe)
        self.held = text[keep:]
        return text[:keep]


def cut_before_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text before the earliest place where one of the stop sequences begins, whatever their order
    (``helpers.retrieval.cut_at_stop`` cuts one sequence after the other: the same text unless they overlap)."""
    return text[:min((at for at in (text.find(sequence) for sequence in stop if sequence) if at >= 0),
                     default=len(text))]


def answer_cut_at_stop(answer, stop: tuple[str, ...], stopped: bool = False):
    """The answer (helpers.models.Answer) cut before its first stop sequence, and then ended by "stop" as OpenAI
    reports it (``stopped``: a stream's cutter met one); its new_tokens stay what was generated."""
    import dataclasses

    text = cut_before_stop(answer.text, stop)
    return dataclasses.replace(answer, text=text, stopped=True) if stopped or text != answer.text else answer


class StreamedGeneration:
    """One streamed answer, generated to its end by a thread of its own whatever its reader does.

    The thread holds the generation lock only while the backend generates, and puts each piece on an unbounded queue:
    a reader that stops reading (its socket buffers full) does not keep the lock from the requests behind it. The
    thread saves the answer itself (an answer nobody read is still there to be rated), frees the admission when it
    ends, and always puts one last item: a Finished, an exception, or _CANCELLED. ``cancel()`` (the reader left)
    stops it at its next piece.
    """

    def __init__(self, prepared: Prepared, max_tokens: int, backend: Backend, generating: threading.Lock,
                 save: Callable[[Any], None], release: Callable[[], None], stop: tuple[str, ...] = ()) -> None:
        self.prepared, self.max_tokens, self.backend, self.stop = prepared, max_tokens, backend, stop
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
            # Generated to its end even past a stop sequence (nothing after it is sent): completion_tokens counts what
            # was generated, as for a whole answer, whose text is cut the same way.
            cutter = StopCutter(self.stop)
            try:
                for piece in stream:
                    if self._cancelled.is_set():
                        return _CANCELLED
                    if text := cutter.feed(piece):
                        self.items.put(text)
            finally:
                stream.close()
            if text := cutter.flush():
                self.items.put(text)
            return Finished(answer_cut_at_stop(stream.answer, self.stop, cutter.stopped),
                            self.backend.count_tokens(self.prepared.prompt))


async def next_item(items: SimpleQueue) -> Any:
    import anyio

    try:
        return items.get_nowait()  # the producer is usually ahead: no trip to the thread pool
    except Empty:
        # Abandoned if the client leaves: the reader's finally cancels the generation now, not after the next piece.
        # The thread still returns, as the producer always puts a last item.
        return await anyio.to_thread.run_sync(items.get, abandon_on_cancel=True)


async def sse_events(generation: StreamedGeneration, answer_id: str, created: int, fingerprint: str | None = None,
                     include_usage: bool = False) -> AsyncIterator[str]:
    """The answer's Server-Sent Events as the producer thread hands its pieces over; cancels it however it ends.

    As OpenAI streams: the role in the first chunk, finish_reason null but on the last chunk of the answer, the same
    id, created, model and system_fingerprint on every chunk; usage only with ``include_usage``, then in an extra last
    chunk with no choices (and usage: null on the others)."""
    from helpers.models import PromptTooLongError

    prepared = generation.prepared
    fields = {"fingerprint": fingerprint, **({"usage": None} if include_usage else {})}
    try:
        extra = {"sources": list(prepared.sources)} if prepared.model == "rag" else {}
        yield sse(chunk(answer_id, created, prepared.model, {"role": "assistant", "content": ""}, **fields,
                        **extra))
        while isinstance(item := await next_item(generation.items), str):
            yield sse(chunk(answer_id, created, prepared.model, {"content": item}, **fields))
        if isinstance(item, PromptTooLongError):
            yield sse(ApiError(422, str(item)).body)
        elif isinstance(item, BaseException):
            raise item
        elif isinstance(item, Finished):
            yield sse(chunk(answer_id, created, prepared.model, {}, item.answer.finish_reason, **fields))
            if include_usage:
                yield sse(usage_chunk(answer_id, created, prepared.model, fingerprint,
                                      usage(item.prompt_tokens, item.answer.new_tokens)))
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
             backend: Backend, queue: GenerationQueue, stop: tuple[str, ...] = (), fingerprint: str | None = None,
             include_usage: bool = False):
    """Generation starts now in a thread of its own (StreamedGeneration); the response writes what it hands over."""

    def save(answer) -> None:
        store.save_answer(answer_id, user, prepared.model, prepared.product, answer.text, answer.finish_reason,
                          list(prepared.sources))

    generation = StreamedGeneration(prepared, max_tokens, backend, queue.generating, save, queue.release,
                                    stop).start()
    events = sse_events(generation, answer_id, created, fingerprint, include_usage)
    weakref.finalize(events, generation.cancel)  # a response never started runs no finally: stop generating anyway
    return ClosingStreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-store"})
