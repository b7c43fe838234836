"""The course's three systems behind an OpenAI-compatible HTTP service (FastAPI + uvicorn).

Routes: ``GET /v1/models``, ``POST /v1/chat/completions`` (the user message is a product title; ``stream: true`` sends
Server-Sent Events in OpenAI's chunk format), ``POST /v1/completions`` (a finished prompt, what the RAG chain's remote
model sends), ``POST /auth/token`` (sign in), ``POST/GET /v1/feedback``, ``POST /v1/train`` / ``GET`` / ``DELETE
/v1/train/{id}`` (fine-tuning jobs in a separate process), ``POST /auth/logout``, ``GET/POST /v1/keys`` and ``DELETE
/v1/keys/{id}`` (one's own API keys), ``DELETE /v1/users/{name}`` and ``GET /v1/corrections``, ``POST
/v1/corrections/{id}/approve|reject`` (instructors: a correction trains nothing until approved), and a page at ``/``.
Every route but the page and sign-in needs ``Authorization: Bearer <token or API key>``.

Two cores generate one answer at a time: a request is admitted only while fewer than ``queue_capacity`` are admitted
(running or waiting), else it gets 429 at once. Users, tokens, answers, feedback and jobs live in one SQLite file in
WAL mode. Command line: ``python -m helpers.serving serve|adduser|apikey|deluser|role|export-feedback``.

The package, in dependency order: ``settings`` (limits and constants), ``store`` (SQLite), ``protocol`` (OpenAI's
shapes and errors), ``auth`` (sign-in guard, security dependencies), ``backend`` (the models, admission), ``streaming``
(streamed answers), ``jobs`` (training jobs), ``state`` (what a route gets from the app's state), ``accounts`` (keys, users, reviewed corrections: their routers),
``routes`` (the routers), ``app`` (``create_app``), ``client`` (running
and calling the service: tests, benchmarks, notebook 07) and ``cli`` (the command line). This module re-exports what
is used as ``helpers.serving.X``; the routers are imported from ``helpers.serving.routes`` (``create_app`` imports
them when it builds an app, so that importing the package does not declare them).
"""
from __future__ import annotations

from helpers.serving.settings import (API_KEY_PREFIX, GENERATION_SECONDS_HEADER, JOB_STATES_FINISHED,
                                      MAX_JOB_EXAMPLES, MODELS, ServiceSettings, default_data_dir, logger)
from helpers.serving.store import SCHEMA, Store, digest, export_feedback
from helpers.serving.protocol import (ApiError, BodyLimit, ChatRequest, CompletionRequest, Feedback, Message, SignIn,
                                      TrainRequest, assemble_stream, chunk, message_text, new_id, parse_sse, sse,
                                      usage)
from helpers.serving.auth import FailureWindow, SignInGuard, current_instructor, current_user
from helpers.serving.backend import Backend, CourseBackend, GenerationQueue, Prepared, backend_for
from helpers.serving.streaming import (ClosingStreamingResponse, Finished, StreamedGeneration, next_item, sse_events,
                                       streamed)
from helpers.serving.jobs import (TrainingJobs, exit_with_parent, log_tail, read_progress, run_training_job,
                                  training_job_command)
from helpers.serving.app import create_app
from helpers.serving.client import (DEMO_JOB_EXAMPLES, CourseClient, ServerThread, ServiceProcess, error_examples,
                                    free_port, fresh_folder, job_summary, notebook_data_dir, print_stream,
                                    promotion_table, sources_table)
from helpers.serving.cli import main, read_password, serve, settings_from

__all__ = [
    "API_KEY_PREFIX", "GENERATION_SECONDS_HEADER", "JOB_STATES_FINISHED", "MAX_JOB_EXAMPLES", "MODELS",
    "ServiceSettings", "default_data_dir", "logger",
    "SCHEMA", "Store", "digest", "export_feedback",
    "ApiError", "BodyLimit", "ChatRequest", "CompletionRequest", "Feedback", "Message", "SignIn", "TrainRequest",
    "assemble_stream", "chunk", "message_text", "new_id", "parse_sse", "sse", "usage",
    "FailureWindow", "SignInGuard", "current_instructor", "current_user",
    "Backend", "CourseBackend", "GenerationQueue", "Prepared", "backend_for",
    "ClosingStreamingResponse", "Finished", "StreamedGeneration", "next_item", "sse_events", "streamed",
    "TrainingJobs", "exit_with_parent", "log_tail", "read_progress", "run_training_job", "training_job_command",
    "create_app",
    "DEMO_JOB_EXAMPLES", "CourseClient", "ServerThread", "ServiceProcess", "error_examples", "free_port",
    "fresh_folder", "job_summary", "notebook_data_dir", "print_stream", "promotion_table", "sources_table",
    "main", "read_password", "serve", "settings_from",
]
