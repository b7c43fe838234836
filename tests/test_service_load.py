"""A class at once, and faults: 30 simulated students against the service running in a process of its own
(tests/fake_service.py: the real app over a fake backend), while a training job is killed with SIGKILL midway and the
service itself is killed with SIGKILL and restarted under load.

What must hold: every request is answered or refused with a clear status (200, 201, 429 with Retry-After; a refused
connection only while the service is down), no feedback row that got 201 is lost, no job stays "running", and the
adapter that served before keeps serving. The figures (requests, refusals, p50/p95 latency) are printed (pytest -s).
"""
from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from helpers import serving

STUDENTS = 30
ROUNDS = 2
PASSWORD = "correct horse battery staple"
SERVICE = Path(__file__).with_name("fake_service.py")
RETRIES = 200  # a student retries as told (Retry-After), with jitter, as a client library does


class Service:
    """tests/fake_service.py on a fixed port, killed with SIGKILL on demand."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir, self.port, self.process = data_dir, port, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Service:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "service.log", "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(SERVICE), str(self.data_dir), str(self.port)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        log = (self.data_dir / "service.log").read_text()[-3000:]
        raise RuntimeError(f"the fake service did not start:\n{log}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


class Record:
    """Every request's outcome: (what, status or 'connection refused', seconds)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, int | str, float]] = []
        self.lock = threading.Lock()
        self.feedback_ids: list[int] = []

    def add(self, what: str, status: int | str, seconds: float) -> None:
        with self.lock:
            self.rows.append((what, status, seconds))


def call(record: Record, what: str, send):
    """``send()`` until it is answered with something other than 429 or a refused connection (both recorded)."""
    for _ in range(RETRIES):
        started = time.perf_counter()
        try:
            response = send()
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
            record.add(what, "connection refused", time.perf_counter() - started)
            time.sleep(0.5)
            continue
        record.add(what, response.status_code, time.perf_counter() - started)
        if response.status_code != 429:
            return response
        assert response.headers.get("retry-after", "").isdigit(), response.headers
        time.sleep(int(response.headers["retry-after"]) * random.uniform(0.5, 1.5))
    return None


def one_student(index: int, url: str, record: Record) -> None:
    name = f"student-{index:02d}"
    signed_in = call(record, "sign in", lambda: httpx.post(url + "/auth/token", json={"username": name,
                                                                                     "password": PASSWORD}))
    assert signed_in is not None and signed_in.status_code == 200, signed_in and signed_in.text
    headers = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
    body = {"model": "fine-tuned", "messages": [{"role": "user", "content": f"Wooden Puzzle {index}"}]}
    for _ in range(ROUNDS):
        whole = call(record, "ask", lambda: httpx.post(url + "/v1/chat/completions", json=body, headers=headers,
                                                       timeout=60))
        assert whole is not None and whole.status_code == 200, whole and whole.text
        streamed = call(record, "stream", lambda: httpx.post(url + "/v1/chat/completions", json={**body, "stream": True},
                                                             headers=headers, timeout=60))
        assert streamed is not None and serving.parse_sse(streamed.text)[-1]["choices"][0]["finish_reason"]
        for how in ("stop reading", "disconnect"):
            partial_stream(record, url, headers, body, how)
        rated = call(record, "rate", lambda: httpx.post(url + "/v1/feedback", headers=headers, timeout=30, json={
            "answer_id": whole.json()["id"], "rating": -1, "correction": f"Wooden Puzzle {index}: 36 pieces."}))
        assert rated is not None and rated.status_code == 201, rated and rated.text
        with record.lock:
            record.feedback_ids.append(rated.json()["id"])


def partial_stream(record: Record, url: str, headers: dict, body: dict, how: str) -> None:
    """A stream read for its first event only: then held open without reading for a while, or hung up at once."""
    started = time.perf_counter()
    try:
        with httpx.stream("POST", url + "/v1/chat/completions", json={**body, "stream": True}, headers=headers,
                          timeout=60) as response:
            record.add(how, response.status_code, time.perf_counter() - started)
            if response.status_code == 200:
                lines = response.iter_lines()
                next(lines)
                if how == "stop reading":
                    time.sleep(1.0)
    except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError):
        record.add(how, "connection refused", time.perf_counter() - started)


def job_pid(data_dir: Path, job_id: str) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = serving.Store(data_dir / "service.sqlite3").job(job_id)
        if job and job["pid"]:
            return job["pid"]
        time.sleep(0.1)
    raise AssertionError(f"{job_id} never started")


def percentile(values: list[float], share: float) -> float:
    return statistics.quantiles(values, n=100)[int(share * 100) - 1] if len(values) > 1 else values[0]


def test_a_class_of_30_a_killed_job_and_a_killed_service_lose_nothing(tmp_path):
    data_dir, port = tmp_path / "service", serving.free_port()
    store = serving.Store(data_dir / "service.sqlite3")
    for index in range(STUDENTS):
        store.add_user(f"student-{index:02d}", PASSWORD)
    store.add_user("teacher", PASSWORD, instructor=True)
    record, service, orphans = Record(), Service(data_dir, port).start(), []
    try:
        teacher = {"Authorization": "Bearer " + httpx.post(service.url + "/auth/token", json={
            "username": "teacher", "password": PASSWORD}).json()["access_token"]}
        served_before = httpx.get(service.url + "/v1/status", headers=teacher).json()["adapter"]

        # A job killed with SIGKILL midway: failed, and the adapter that served keeps serving.
        killed = httpx.post(service.url + "/v1/train", json={"examples": 8}, headers=teacher).json()["id"]
        os.killpg(job_pid(data_dir, killed), signal.SIGKILL)
        deadline = time.monotonic() + 30
        while httpx.get(f"{service.url}/v1/train/{killed}", headers=teacher).json()["status"] == "running":
            assert time.monotonic() < deadline, "the killed job stays running"
            time.sleep(0.2)
        assert httpx.get(f"{service.url}/v1/train/{killed}", headers=teacher).json()["status"] == "failed"

        # A job running when the service is killed, and the class asking throughout.
        running = httpx.post(service.url + "/v1/train", json={"examples": 8}, headers=teacher).json()["id"]
        orphans.append(job_pid(data_dir, running))
        with ThreadPoolExecutor(max_workers=STUDENTS) as pool:
            students = [pool.submit(one_student, index, service.url, record) for index in range(STUDENTS)]
            while len(record.rows) < STUDENTS * ROUNDS * 3:
                time.sleep(0.05)
            service.kill()
            killed_at = len(record.rows)
            service.start()
            for student in students:
                student.result()

        statuses = [status for _, status, _ in record.rows]
        assert set(statuses) <= {200, 201, 429, "connection refused"}, set(statuses)
        feedback = store.feedback()
        assert {row["id"] for row in feedback} >= set(record.feedback_ids)
        assert len(record.feedback_ids) == STUDENTS * ROUNDS
        assert not store.running_jobs()
        assert store.job(running)["status"] == "failed" and "stopped" in store.job(running)["error"]
        assert httpx.get(service.url + "/v1/status", headers=teacher).json()["adapter"] == served_before
        answered = sorted(seconds for what, status, seconds in record.rows if status in (200, 201))
        print(f"\nload: {len(record.rows)} requests from {STUDENTS} students ({ROUNDS} rounds); "
              f"200/201: {len(answered)}, 429: {statuses.count(429)}, refused connections while restarting: "
              f"{statuses.count('connection refused')}; service killed after request {killed_at}; "
              f"latency of answered requests p50 {percentile(answered, 0.5):.3f} s, p95 {percentile(answered, 0.95):.3f} s; "
              f"feedback rows {len(feedback)} (all {len(record.feedback_ids)} acknowledged ones kept)")
    finally:
        service.kill()
        for pid in orphans:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
