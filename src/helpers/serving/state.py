"""What a route gets from the application's state: ``create_app`` puts the settings, store, admission queue, training
jobs, backend and sign-in guard on ``app.state``, and each alias below hands one of them to a route as a FastAPI
dependency (so a router works on any app that has them, and a test can mount one alone)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from helpers.serving.auth import SignInGuard
from helpers.serving.backend import Backend, GenerationQueue
from helpers.serving.jobs import TrainingJobs
from helpers.serving.settings import ServiceSettings
from helpers.serving.store import Store


def from_state(name: str):
    """A dependency returning ``app.state.<name>`` (async: no trip through the thread pool)."""

    async def dependency(request: Request):
        return getattr(request.app.state, name)

    dependency.__name__ = f"app_{name}"
    return dependency


Settings = Annotated[ServiceSettings, Depends(from_state("settings"))]
StoreDep = Annotated[Store, Depends(from_state("store"))]
Queue = Annotated[GenerationQueue, Depends(from_state("queue"))]
Jobs = Annotated[TrainingJobs, Depends(from_state("jobs"))]
BackendDep = Annotated[Backend, Depends(from_state("backend"))]
Guard = Annotated[SignInGuard, Depends(from_state("guard"))]
