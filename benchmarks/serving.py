"""Serving benchmark: what the HTTP service adds to generation, streamed and whole, at concurrency 1 and 4.

    .venv/bin/python benchmarks/serving.py         # writes outputs/benchmarks/serving.json and serving.md

The same prompts (PROMPTS held-out titles, the fine-tuned model, the profile's max_new_tokens, greedy) are answered
in this process through the very backend the service uses (``helpers.serving.CourseBackend``, one generation at a
time behind a lock, as the service's queue does) and over HTTP by the service in a child process
(``python -m helpers.serving serve``) through the official ``openai`` client, in the same run, alternating in-process
and HTTP rounds. Reported per mode: mean time to first token (streamed; a whole answer's first token arrives with the
whole answer), mean latency, tokens/s of one request (its tokens / its latency), and throughput (all tokens / wall
time). Target: HTTP within 10% of in-process. The two processes take turns: while one generates the other waits.
"""
from __future__ import annotations

import json
import platform
import secrets
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import helpers
from helpers import serving
from helpers.config import paths

PROMPTS = 4  # ~9 s an answer of 80 tokens on 2 AVX2 cores: 4 prompts x 4 modes x 2 rounds x 2 sides ~ 10 minutes
CONCURRENCY = (1, 4)
ROUNDS = 2  # alternating in-process / HTTP rounds; the mean over rounds is reported
MODEL = "fine-tuned"
TARGET_OVERHEAD = 0.10


def machine() -> str:
    """The CPU's name, its core count, and whether it has AVX-512 (the kernels, and so the speed, differ)."""
    import os

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                platform.machine())
    return f"{name}, {os.cpu_count()} cores, {'AVX-512' if 'avx512f' in info else 'no AVX-512'}"


def in_process_request(backend, lock: threading.Lock, title: str, max_tokens: int, stream: bool) -> dict:
    started = time.perf_counter()
    first = None
    with lock:
        prepared = backend.prepare(MODEL, title)
        if stream:
            pieces = backend.stream(prepared, max_tokens)
            for _ in pieces:
                first = first or time.perf_counter()
            answer = pieces.answer
        else:
            answer = backend.complete([prepared], max_tokens)[0]
    ended = time.perf_counter()
    return {"ttft": (first or ended) - started, "latency": ended - started, "tokens": answer.new_tokens,
            "text": answer.text}


def http_request(client, title: str, max_tokens: int, stream: bool) -> dict:
    started = time.perf_counter()
    messages = [{"role": "user", "content": title}]
    if not stream:
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages, max_tokens=max_tokens)
        reply = raw.parse()
        ended = time.perf_counter()
        generation = float(raw.headers[serving.GENERATION_SECONDS_HEADER])
        return {"ttft": ended - started, "latency": ended - started, "tokens": reply.usage.completion_tokens,
                "text": reply.choices[0].message.content, "generation": generation}
    first, text, tokens = None, "", 0
    for item in client.chat.completions.create(model=MODEL, messages=messages, max_tokens=max_tokens, stream=True,
                                               stream_options={"include_usage": True}):
        if item.choices and item.choices[0].delta.content:
            first = first or time.perf_counter()
            text += item.choices[0].delta.content
        if item.usage:
            tokens = item.usage.completion_tokens
    ended = time.perf_counter()
    return {"ttft": (first or ended) - started, "latency": ended - started, "tokens": tokens, "text": text.strip()}


def run_round(request, titles: list[str], concurrency: int) -> dict:
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(request, titles))
    wall = time.perf_counter() - started
    timings = {}
    if "generation" in results[0]:
        # Whole answers over HTTP, at concurrency 1: latency - the service's own generation time = what HTTP, JSON,
        # sign-in and the database add, measured on the same request (no generation noise in it).
        timings["outside_generation_s"] = statistics.mean(result["latency"] - result["generation"] for result in results)
    return {**timings, "ttft_s": statistics.mean(result["ttft"] for result in results),
            "latency_s": statistics.mean(result["latency"] for result in results),
            "request_tokens_per_s": statistics.mean(result["tokens"] / result["latency"] for result in results),
            "throughput_tokens_per_s": sum(result["tokens"] for result in results) / wall,
            "texts": [result["text"] for result in results]}


def mean_of(rounds: list[dict]) -> dict:
    return {key: round(statistics.mean(item[key] for item in rounds), 4) for key in rounds[0] if key != "texts"}


def measure(backend, service_url: str, token: str, titles: list[str], max_tokens: int) -> list[dict]:
    from openai import OpenAI

    lock = threading.Lock()
    rows = []
    for stream in (False, True):
        for concurrency in CONCURRENCY:
            # One client, as an application would hold it: its connection pool serves the concurrent requests.
            client = OpenAI(base_url=service_url + "/v1", api_key=token, max_retries=0, timeout=600)

            def over_http(title: str) -> dict:
                return http_request(client, title, max_tokens, stream)

            in_process, http = [], []
            for _ in range(ROUNDS):
                in_process.append(run_round(lambda title: in_process_request(backend, lock, title, max_tokens, stream),
                                            titles, concurrency))
                http.append(run_round(over_http, titles, concurrency))
            same = sum(a == b for a, b in zip(in_process[0]["texts"], http[0]["texts"]))
            local_mean, http_mean = mean_of(in_process), mean_of(http)
            rows.append({
                "mode": "streamed" if stream else "whole", "concurrency": concurrency,
                "in_process": local_mean, "http": http_mean, "same_answers": f"{same} of {len(titles)}",
                "overhead": {
                    "ttft": round(http_mean["ttft_s"] / local_mean["ttft_s"] - 1, 3),
                    "latency": round(http_mean["latency_s"] / local_mean["latency_s"] - 1, 3),
                    "throughput": round(1 - http_mean["throughput_tokens_per_s"] / local_mean["throughput_tokens_per_s"], 3),
                },
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [f"Serving benchmark ({result['machine']}; profile {result['profile']}, model {MODEL}, "
             f"{result['prompts']} held-out titles, max_tokens {result['max_tokens']}, greedy, {ROUNDS} rounds)", "",
             "| mode | concurrency | TTFT in-process / HTTP (s) | latency in-process / HTTP (s) | tokens/s per request "
             "in-process / HTTP | throughput in-process / HTTP (tokens/s) | HTTP overhead: TTFT, latency, throughput "
             "| same answers |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        local, http, overhead = row["in_process"], row["http"], row["overhead"]
        lines.append(f"| {row['mode']} | {row['concurrency']} | {local['ttft_s']:.2f} / {http['ttft_s']:.2f} | "
                     f"{local['latency_s']:.2f} / {http['latency_s']:.2f} | {local['request_tokens_per_s']:.1f} / "
                     f"{http['request_tokens_per_s']:.1f} | {local['throughput_tokens_per_s']:.1f} / "
                     f"{http['throughput_tokens_per_s']:.1f} | {overhead['ttft']:+.1%}, {overhead['latency']:+.1%}, "
                     f"{overhead['throughput']:+.1%} | {row['same_answers']} |")
    single = next(row for row in result["rows"] if row["mode"] == "whole" and row["concurrency"] == 1)["http"]
    lines += ["", f"Whole answers at concurrency 1, on the same requests: latency {single['latency_s']:.3f} s, of which "
                  f"the service's generation {single['latency_s'] - single['outside_generation_s']:.3f} s and everything "
                  f"else (HTTP, JSON, sign-in, the SQLite write) {single['outside_generation_s'] * 1000:.0f} ms = "
                  f"{single['outside_generation_s'] / single['latency_s']:.1%}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    from helpers.data import evaluation_samples
    from helpers.training.adapter import ensure_adapter

    profile = helpers.config.active_profile()
    titles = [record["product"] for record in evaluation_samples(profile)["held-out"][:PROMPTS]]
    adapter = ensure_adapter(profile)
    with tempfile.TemporaryDirectory() as folder:
        password = secrets.token_urlsafe(16)
        with serving.ServiceProcess(profile, Path(folder) / "service") as service:
            service.add_user("bench", password)
            token = service.sign_in("bench", password)
            backend = serving.CourseBackend(profile, adapter)
            backend.complete([backend.prepare(MODEL, titles[0])], 4)  # warm-up, both sides
            serving.CourseClient(service.url, token).raw_chat(MODEL, titles[0], max_tokens=4)
            rows = measure(backend, service.url, token, titles, profile.max_new_tokens)
    result = {"machine": machine(),
              "profile": profile.name, "prompts": len(titles), "max_tokens": profile.max_new_tokens,
              "target_overhead": TARGET_OVERHEAD, "rows": rows}
    target = paths().outputs / "benchmarks" / "serving.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=1) + "\n")
    target.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"written to {target} and {target.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
