"""The FastAPI application: ``create_app`` builds the service's state (store, admission queue, training jobs, sign-in
guard) on ``app.state``, where the routes find it, then adds the body limit, the exception handlers that answer in
OpenAI's shape, and the routers."""
from __future__ import annotations

from pathlib import Path

from helpers.serving.auth import SignInGuard
from helpers.serving.backend import Backend, GenerationQueue
from helpers.serving.jobs import TrainingJobs, training_job_command
from helpers.serving.protocol import EXCEPTION_HANDLERS, BodyLimit
from helpers.serving.settings import ServiceSettings
from helpers.serving.store import Store


def create_app(settings: ServiceSettings, backend: Backend, job_command=training_job_command):
    """The FastAPI application over ``backend``, keeping its state under ``settings.data_dir``."""
    from fastapi import FastAPI

    from helpers.serving.routes import ROUTERS  # here: declaring the routes costs ~0.1 s, not paid by importing

    store = Store(settings.database)
    queue = GenerationQueue(settings.queue_capacity)

    def serve_adapter(adapter: Path) -> None:
        previous = backend.adapter
        with queue.generating:  # swapped between answers, never under one (the model is shared)
            backend.use_adapter(adapter)
        if previous is not None and Path(previous) != Path(adapter):
            store.set_state("previous adapter", str(previous))  # what a rollback serves again
        store.set_state("adapter", str(adapter))

    jobs = TrainingJobs(store, settings, serve_adapter, job_command, current_adapter=lambda: backend.adapter)
    guard = SignInGuard(settings)
    # No public /docs, /redoc or /openapi.json: the schema is served by auth_router, to signed-in users only.
    app = FastAPI(title="Course service", summary="SmolLM2: foundation, fine-tuned and RAG, OpenAI-compatible",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.queue, app.state.jobs, app.state.backend = store, queue, jobs, backend
    app.state.settings, app.state.guard = settings, guard
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    for error, handler in EXCEPTION_HANDLERS.items():
        app.add_exception_handler(error, handler)
    for router in ROUTERS:
        app.include_router(router)
    return app
