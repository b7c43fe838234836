"""The service from outside: running it (``ServerThread`` in this process, ``ServiceProcess`` as ``python -m
helpers.serving serve`` in a child, ``free_port``, ``fresh_folder``), calling its own routes (``CourseClient``), and
what notebook 07 shows of it (``notebook_data_dir``, ``DEMO_JOB_EXAMPLES``, ``job_summary``, ``sources_table``,
``error_examples``, ``print_stream``)."""
from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from helpers.config import Profile, paths
from helpers.serving.jobs import log_tail
from helpers.serving.settings import ServiceSettings
from helpers.serving.store import Store


# --- Running it ------------------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServerThread:
    """uvicorn serving ``app`` from a thread of this process (tests, benchmarks); ``with`` stops it."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None) -> None:
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The service did not start on {self.url}.")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class ServiceProcess:
    """``python -m helpers.serving serve`` in a child process on a free loopback port (notebook 07, benchmarks).

    Its log goes to ``<data_dir>/service.log``, not to the caller's output. ``stop()`` (or leaving ``with``) ends it.
    """

    def __init__(self, profile: Profile, data_dir: Path, port: int | None = None, startup_seconds: float = 600):
        self.profile, self.data_dir = profile, Path(data_dir)
        self.port = port or free_port()
        self.startup_seconds = startup_seconds
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "service.log"

    @property
    def settings(self) -> ServiceSettings:
        return ServiceSettings(profile=self.profile, data_dir=self.data_dir)

    def start(self) -> ServiceProcess:
        import httpx

        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "helpers.serving", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--profile", self.profile.name, "--data-dir", str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT)  # in the caller's process group: killed with it
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The service exited with status {self.process.returncode}: {log_tail(self.log)}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/v1/models", timeout=2).status_code == 401:  # up, and asking for a sign-in
                    return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"The service did not answer within {self.startup_seconds:.0f} s: {log_tail(self.log)}")

    def add_user(self, name: str, password: str, instructor: bool = False) -> None:
        Store(self.data_dir / "service.sqlite3").add_user(name, password, instructor)

    def sign_in(self, name: str, password: str) -> str:
        import httpx

        response = httpx.post(self.url + "/auth/token", json={"username": name, "password": password}, timeout=30)
        response.raise_for_status()
        return response.json()["access_token"]

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown: running jobs are cancelled
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def fresh_folder(folder: Path) -> Path:
    """An empty folder (a notebook re-run starts with no users, answers or jobs of the last run)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


# --- The client side: what notebook 07 and the page call besides the OpenAI routes ----------------------------------

DEMO_JOB_EXAMPLES = 8  # notebook 07's job: with one correction, 5 steps of the cpu profile; ~3.5 min on 2 cores with the gate


def notebook_data_dir(profile: Profile) -> Path:
    return paths().outputs / "serving" / f"notebook-{profile.name}"


class CourseClient:
    """The service's own routes (feedback, training jobs, status) and raw requests, over httpx with a bearer token."""

    def __init__(self, base_url: str, token: str | None) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=600)

    def raw_chat(self, model: str, title: str, **body) -> Any:
        """The HTTP response itself (status, headers, text), for looking at what the OpenAI client parses."""
        return self.http.post("/v1/chat/completions",
                              json={"model": model, "messages": [{"role": "user", "content": title}], **body})

    def rate(self, answer_id: str, rating: int, correction: str | None = None) -> dict:
        response = self.http.post("/v1/feedback", json={"answer_id": answer_id, "rating": rating,
                                                        "correction": correction})
        response.raise_for_status()
        return response.json()

    def feedback(self):
        import pandas as pd

        rows = self.http.get("/v1/feedback").raise_for_status().json()["data"]
        columns = ["id", "model", "product", "rating", "correction"]
        return pd.DataFrame(rows, columns=[*columns, "answer_id", "user", "answer"])[columns].set_index("id")

    def status(self) -> dict:
        return self.http.get("/v1/status").raise_for_status().json()

    def train(self, examples: int, include_feedback: bool = True) -> dict:
        response = self.http.post("/v1/train", json={"examples": examples, "include_feedback": include_feedback})
        response.raise_for_status()
        return response.json()

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/v1/train/{job_id}").raise_for_status().json()

    def cancel(self, job_id: str) -> dict:
        return self.http.delete(f"/v1/train/{job_id}").raise_for_status().json()

    def promote(self, job_id: str) -> dict:
        """Serve a job's adapter on purpose (instructors), whatever its promotion check said."""
        return self.http.post(f"/v1/train/{job_id}/promote").raise_for_status().json()

    def rollback(self) -> dict:
        """Serve again the adapter that served before the last swap (instructors)."""
        return self.http.post("/v1/adapters/rollback").raise_for_status().json()

    def watch(self, job_id: str, poll_seconds: float = 1.0) -> dict:
        """Polls the job until it ends, with a bar over its optimizer steps."""
        from helpers.quiet import progress

        job = self.job(job_id)
        # No total until the trainer knows its steps (loading and preparing the data come first).
        with progress(total=job["max_steps"], desc="training job", unit="step") as bar:
            while job["status"] == "running":
                time.sleep(poll_seconds)
                job = self.job(job_id)
                if job["max_steps"] and bar.total != job["max_steps"]:
                    bar.total = job["max_steps"]
                if job["loss"] is not None:
                    bar.set_postfix(loss=f"{job['loss']:.3f}", refresh=False)
                bar.update(job["step"] - bar.n)
        return job


def job_summary(job: dict):
    """What a finished job did, without the values that differ between machines (loss) or runs (ids)."""
    import pandas as pd

    return pd.DataFrame({"value": {"status": job["status"], "training records": job["examples"],
                                   "plus corrections from feedback": job["feedback_examples"],
                                   "optimizer steps": f"{job['step']} of {job['max_steps']}",
                                   "promotion gate": gate_outcome(job.get("promotion")),
                                   "error": job["error"] or "none"}}).rename_axis("training job")


def gate_outcome(promotion: dict | None) -> str:
    if not promotion:
        return "not checked"
    return "passed: serves" if promotion["promoted"] else "refused: stays a candidate"


def promotion_table(job: dict):
    """The promotion check of a job: per metric, the serving and the new adapter's means on the same held-out
    products, the difference with its 95% paired interval, and the verdict against the margin."""
    import pandas as pd

    from helpers.evaluation import interval_text

    rows = (job.get("promotion") or {}).get("check") or []
    return pd.DataFrame([{"metric": row["metric"], "better": row.get("better", ""), "products": row["products"],
                          "serving": round(row["serving"], 2),
                          "candidate": round(row["candidate"], 2),
                          "difference [95% CI]": interval_text(row["difference"], row["low"], row["high"], signed=True),
                          "verdict": row["verdict"]} for row in rows],
                        columns=["metric", "better", "products", "serving", "candidate", "difference [95% CI]",
                                 "verdict"]
                        ).set_index("metric")


def sources_table(reply):
    """The sources of a ``rag`` reply (the extra ``sources`` field), one row per retrieved product."""
    import pandas as pd

    return pd.DataFrame(reply.model_extra["sources"]).set_index("rank")


def error_examples(base_url: str, token: str, student_token: str, settings: ServiceSettings):
    """One bad request of each kind and what the service answers: the status and its message."""
    import pandas as pd

    good = CourseClient(base_url, token)
    title = "Girls Ballet Tutu Neon Blue"
    cases = {
        "no token": lambda: CourseClient(base_url, None).raw_chat("fine-tuned", title),
        "a wrong token": lambda: CourseClient(base_url, "not-a-token").raw_chat("fine-tuned", title),
        "an unknown model": lambda: good.raw_chat("gpt-4o", title),
        "max_tokens over the cap": lambda: good.raw_chat("fine-tuned", title, max_tokens=settings.max_tokens + 1),
        "no user message": lambda: good.http.post("/v1/chat/completions", json={"model": "rag", "messages": []}),
        "a body over the limit": lambda: good.raw_chat("fine-tuned", "x" * settings.max_body_bytes),
        "feedback on no answer": lambda: good.http.post("/v1/feedback", json={"answer_id": "chatcmpl-none",
                                                                              "rating": 1}),
        "a student starting a training job": lambda: CourseClient(base_url, student_token).http.post(
            "/v1/train", json={"examples": 8}),
    }
    rows = {}
    for name, request in cases.items():
        response = request()
        rows[name] = {"status": response.status_code, "message": response.json()["error"]["message"]}
    return pd.DataFrame(rows).T.rename_axis("request")


def print_stream(chunks) -> str:
    """Prints a streamed reply as it arrives (OpenAI client chunks) and returns its text."""
    text = ""
    for item in chunks:
        for choice in item.choices:
            piece = choice.delta.content or ""
            print(piece, end="", flush=True)
            text += piece
    print()
    return text
