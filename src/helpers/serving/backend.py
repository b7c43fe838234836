"""What generates the answers: ``Prepared`` (a request made ready to generate), the ``Backend`` protocol the service
asks of the models, ``CourseBackend`` (the course's foundation model, its fine-tuned one and the RAG chain's
retrieval, loaded once), ``backend_for`` (the real backend of a service's settings), and ``GenerationQueue`` (one
generation at a time, a bounded number admitted)."""
from __future__ import annotations

import contextlib

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from helpers.config import Profile
from helpers.serving.settings import ServiceSettings
from helpers.serving.store import Store


# --- Generation backends -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """What a request will generate from: the model's name, the prompt text, and (rag) its sources."""

    model: str
    product: str
    prompt: str
    sources: tuple[dict, ...] = ()


class Backend(Protocol):
    """What the service asks of the models. ``CourseBackend`` is the real one; tests pass a fake."""

    def prepare(self, model: str, text: str) -> Prepared: ...

    def prepare_raw(self, model: str, prompt: str) -> Prepared: ...

    def complete(self, prepared: list[Prepared], max_tokens: int) -> list: ...  # helpers.models.Answer

    def stream(self, prepared: Prepared, max_tokens: int): ...  # an iterable of text with .answer and .close()

    def use_adapter(self, adapter: Path) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    @property
    def adapter(self) -> Path | None: ...


class CourseBackend:
    """One copy of the base model with the served LoRA adapter on it, and the RAG chain's retrieval, loaded once.

    ``foundation`` answers with the adapter switched off (PEFT's ``disable_adapter``, which Unsloth's fast paths
    honour: the answers equal a separately loaded base model's, ``tests/test_serving.py``); ``fine-tuned`` and ``rag``
    with it on. A new adapter is loaded into the same model and the old one deleted: the base weights are never
    loaded twice. Every call runs under the service's generation lock (one generation at a time), swaps included.
    """

    def __init__(self, profile: Profile, adapter: Path | None = None) -> None:
        from helpers.data import ensure_processed
        from helpers.models import load_model
        from helpers.retrieval import ensure_index, retrieval_step, retriever
        from helpers.training.adapter import ensure_adapter

        self.profile = profile
        ensure_processed(profile, progress=False)
        self._adapter = Path(adapter) if adapter else ensure_adapter(profile)
        self.model, self.tokenizer = load_model(profile, self._adapter, verbose=False)
        self._swaps = 0
        self.retrieval = retrieval_step(retriever(ensure_index(profile, progress=False), profile),
                                        profile.context_words)

    @property
    def adapter(self) -> Path:
        return self._adapter

    def _adapter_for(self, name: str):
        """The context an answer of model ``name`` is generated in: the adapter off for the foundation model."""
        return self.model.disable_adapter() if name == "foundation" else contextlib.nullcontext()

    def prepare(self, model: str, text: str) -> Prepared:
        from helpers.prompts import format_prompt

        if model != "rag":
            return Prepared(model, text, format_prompt(text))
        item = self.retrieval.invoke(text)
        sources = tuple({"rank": rank, "title": document.metadata["title"], "uid": document.metadata["uid"]}
                        for rank, document in enumerate(item["sources"], start=1))
        return Prepared(model, text, item["prompt"], sources)

    def prepare_raw(self, model: str, prompt: str) -> Prepared:
        return Prepared(model, prompt, prompt)

    def complete(self, prepared: list[Prepared], max_tokens: int) -> list:
        from helpers.models import generate_answers

        with self._adapter_for(prepared[0].model):
            return generate_answers(self.model, self.tokenizer, [item.prompt for item in prepared], self.profile,
                                    max_new_tokens=max_tokens, progress=False)

    def stream(self, prepared: Prepared, max_tokens: int):
        from helpers.models import TextStream, check_prompt_lengths

        check_prompt_lengths([self.count_tokens(prepared.prompt)], max_tokens, self.profile)
        return SwitchedStream(self._adapter_for(prepared.model),
                              lambda: TextStream(self.model, self.tokenizer, prepared.prompt, self.profile, max_tokens))

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def use_adapter(self, adapter: Path) -> None:
        """Serve another adapter: loaded into the same model under a new name, made active, the old one deleted
        (about half a second for the course's adapter). Called under the generation lock."""
        old = self.model.active_adapter
        self._swaps += 1
        name = f"served-{self._swaps}"
        self.model.load_adapter(str(adapter), adapter_name=name)
        self.model.set_adapter(name)
        self.model.delete_adapter(old)
        self._adapter = Path(adapter)


class SwitchedStream:
    """A TextStream generated inside ``switch`` (the adapter off, for the foundation model) from its start until it
    ends or is closed."""

    def __init__(self, switch, start) -> None:
        self._switch = switch
        switch.__enter__()
        try:
            self._stream = start()
        except BaseException:
            switch.__exit__(None, None, None)
            raise
        self._open = True

    @property
    def answer(self):
        return self._stream.answer

    def __iter__(self):
        try:
            yield from self._stream
        finally:
            self.close()

    def close(self) -> None:
        self._stream.close()  # waits for the generation thread: the switch is undone after the last token
        if self._open:
            self._open = False
            self._switch.__exit__(None, None, None)


def backend_for(settings: ServiceSettings) -> CourseBackend:
    """The real models, serving the adapter of the last successful training job if there is one."""
    served = Store(settings.database).get_state("adapter")
    adapter = Path(served) if served and (Path(served) / "adapter_config.json").is_file() else None
    return CourseBackend(settings.profile, adapter)


# --- Admission: one generation at a time, a bounded number waiting -------------------------------------------------


class GenerationQueue:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.admitted = 0
        self.rejected = 0
        self._count_lock = threading.Lock()
        self.generating = threading.Lock()

    def admit(self) -> bool:
        with self._count_lock:
            if self.admitted >= self.capacity:
                self.rejected += 1
                return False
            self.admitted += 1
            return True

    def release(self) -> None:
        with self._count_lock:
            self.admitted -= 1
