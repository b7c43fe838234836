"""Training jobs: ``TrainingJobs`` runs one fine-tune at a time in a process group of its own and serves its adapter
only if it succeeds; ``training_job_command`` is the child's command line (``python -m helpers.serving train-job``),
``run_training_job`` what the child does, and ``read_progress``, ``log_tail`` and
``exit_with_parent`` the files and process plumbing between the two."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

from helpers.config import Profile, display_path
from helpers.files import replace_folder, write_json_atomically
from helpers.serving.protocol import ApiError
from helpers.serving.settings import ServiceSettings, logger
from helpers.serving.store import Store, export_feedback


# --- Training jobs ---------------------------------------------------------------------------------------------------


def training_job_command(job_dir: Path, examples: int, profile: Profile, feedback: Path | None) -> list[str]:
    command = [sys.executable, "-m", "helpers.serving", "train-job", "--job-dir", str(job_dir),
               "--examples", str(examples), "--profile", profile.name]
    return command + (["--feedback", str(feedback)] if feedback else [])


class TrainingJobs:
    """One fine-tune at a time, each in its own process group; its adapter is served only when the job succeeds.

    The child writes progress.json as it trains and saves its adapter to ``<job>/adapter`` with one rename, so the
    folder is either whole or absent. ``command`` builds the child's command line (tests pass a fake trainer).
    """

    def __init__(self, store: Store, settings: ServiceSettings, on_success, command=training_job_command,
                 current_adapter=lambda: None) -> None:
        self.store, self.settings, self.on_success, self.command = store, settings, on_success, command
        self.current_adapter = current_adapter
        self._lock = threading.Lock()
        self._processes: dict[str, subprocess.Popen] = {}
        self._cancelled: set[str] = set()
        for job in store.running_jobs():  # left by a service that stopped (the job exits with it: exit_with_parent)
            store.update_job(job["id"], status="failed", error="the service stopped while the job ran",
                             finished=time.time())

    def job_dir(self, job_id: str) -> Path:
        return self.settings.jobs_dir / job_id

    def start(self, user: str, examples: int, include_feedback: bool) -> dict:
        with self._lock:
            # "running" until its watcher has recorded the end (and swapped in the adapter): never two at once.
            if self.store.running_jobs():
                raise ApiError(409, "A training job is already running: wait for it or cancel it.", "conflict")
            job_id = "job-" + uuid.uuid4().hex[:12]
            folder = self.job_dir(job_id)
            folder.mkdir(parents=True)
            feedback = None
            records = self.store.training_records() if include_feedback else []
            if records:
                feedback = folder / "feedback.jsonl"
                export_feedback(self.store, feedback)
            self.store.add_job(job_id, user, examples, len(records))
            # What the promotion check compares the new adapter with: the one serving when the job starts.
            serving = self.current_adapter()
            (folder / SERVING_FILE).write_text(json.dumps({"adapter": str(serving) if serving else None}) + "\n")
            try:
                with open(folder / "job.log", "wb") as log:
                    process = subprocess.Popen(self.command(folder, examples, self.settings.profile, feedback),
                                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as error:
                self.store.update_job(job_id, status="failed", error=f"could not start: {error}", finished=time.time())
                raise
            self.store.update_job(job_id, pid=process.pid)
            self._processes[job_id] = process
        threading.Thread(target=self._watch, args=(job_id, process), daemon=True).start()
        return self.describe(job_id)

    def _watch(self, job_id: str, process: subprocess.Popen) -> None:
        code = process.wait()
        adapter = self.job_dir(job_id) / "adapter"
        if job_id in self._cancelled:
            self.store.update_job(job_id, status="cancelled", finished=time.time())
        elif code == 0 and (adapter / "adapter_config.json").is_file():
            if not read_promotion(self.job_dir(job_id)).get("promoted"):  # the gate said no: a candidate, not served
                self.store.update_job(job_id, status="candidate", adapter=str(adapter), finished=time.time())
                return
            try:
                self.on_success(adapter)
            except Exception as error:  # the adapter does not load: keep serving the old one, say why
                self.store.update_job(job_id, status="failed", error=f"the new adapter did not load: {error}",
                                      finished=time.time())
                return
            self.store.update_job(job_id, status="succeeded", adapter=str(adapter), finished=time.time())
        else:
            self.store.update_job(job_id, status="failed", finished=time.time(),
                                  error=f"exit status {code}: {log_tail(self.job_dir(job_id) / 'job.log')}")

    def cancel(self, job_id: str) -> dict:
        process = self._processes.get(job_id)
        if process is None or process.poll() is not None:
            return self.describe(job_id)
        self._cancelled.add(job_id)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the trainer and anything it started
        process.wait()
        for _ in range(100):  # the watcher records the cancellation
            if self.store.job(job_id)["status"] == "cancelled":
                break
            time.sleep(0.05)
        return self.describe(job_id)

    def promote(self, job_id: str) -> dict:
        """Serve a job's adapter on purpose (an instructor overruling the gate, or going back to an earlier job)."""
        job = self.store.job(job_id)
        if job is None:
            raise ApiError(404, f"No training job {job_id!r}.", "not_found")
        if job["status"] not in ("candidate", "succeeded") or not job["adapter"]:
            raise ApiError(409, f"Job {job_id} has no adapter to serve (status {job['status']}).", "conflict")
        self.on_success(Path(job["adapter"]))
        self.store.update_job(job_id, status="succeeded")
        return self.describe(job_id)

    def rollback(self) -> dict:
        """Serve the adapter that served before the last swap again."""
        previous = self.store.get_state("previous adapter")
        if not previous:
            raise ApiError(409, "No earlier adapter to go back to: this service has served only one.", "conflict")
        self.on_success(Path(previous))
        return {"object": "adapter", "adapter": display_path(Path(previous))}

    def describe(self, job_id: str) -> dict:
        job = self.store.job(job_id)
        if job is None:
            raise ApiError(404, f"No training job {job_id!r}.", "not_found")
        progress = read_progress(self.job_dir(job_id) / "progress.json")
        adapter = job["adapter"] and display_path(Path(job["adapter"]))
        return {"id": job_id, "object": "training.job", "status": job["status"], "examples": job["examples"],
                "feedback_examples": job["feedback_examples"], "step": progress.get("step", 0),
                "max_steps": progress.get("max_steps"), "loss": progress.get("loss"), "adapter": adapter,
                "error": job["error"], "promotion": read_promotion(self.job_dir(job_id)) or None}

    def stop_all(self) -> None:
        for job_id in list(self._processes):
            self.cancel(job_id)


SERVING_FILE = "serving.json"
PROMOTION_FILE = "promotion.json"


def read_promotion(job_dir: Path) -> dict:
    """The job's promotion report ({} if none was written: a job that failed, or a trainer without the check)."""
    path = job_dir / PROMOTION_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def read_progress(path: Path) -> dict:
    """A job's progress.json; {} before its first step. A file that is not JSON (a trainer that does not write it
    atomically) is logged and read as no progress, rather than failing the status request."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        logger.warning("unreadable %s (%s): progress not shown", path, error)
        return {}


def log_tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.is_file() else []
    return " | ".join(text[-lines:]) or "no output"


def exit_with_parent(poll_seconds: float = 1.0) -> None:
    """A job runs in its own process group (so that cancelling it kills all of it); if the service dies without
    cancelling it, the job stops too instead of training for nobody."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_training_job(job_dir: Path, examples: int, profile: Profile, feedback: Path | None) -> Path:
    """The child process of a job: a fresh LoRA on ``examples`` training records plus the feedback corrections,
    progress to progress.json, the adapter to <job>/adapter with one rename."""
    import datasets
    from transformers import TrainerCallback

    from helpers.data import ensure_processed, load_processed, select_training_records
    from helpers.training.adapter import add_lora, load_base_model
    from helpers.training.records import training_examples
    from helpers.training.trainer import build_trainer

    exit_with_parent()
    profile = replace(profile, train_examples=examples)
    ensure_processed(profile, progress=False)
    train, _ = load_processed(profile)
    records = select_training_records(train, profile)
    if feedback is not None:
        corrections = datasets.Dataset.from_list([json.loads(line) for line in feedback.read_text().splitlines()])
        records = datasets.concatenate_datasets([records, corrections.cast(records.features)])
    model, tokenizer = load_base_model(profile)
    model = add_lora(model, profile)
    dataset = training_examples(records, train, profile, tokenizer.eos_token).dataset
    trainer = build_trainer(model, tokenizer, dataset, profile, output_dir=str(job_dir / "trainer"))

    class ProgressFile(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            write_json_atomically(job_dir / "progress.json", {"step": state.global_step, "max_steps": state.max_steps,
                                                             "loss": (logs or {}).get("loss")})

    trainer.add_callback(ProgressFile())
    trainer.train()
    staging = job_dir / ".adapter.partial"
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    (staging / "job.json").write_text(json.dumps({"examples": examples, "feedback_examples": len(records) - examples,
                                                  "profile": profile.name}) + "\n")
    replace_folder(staging, job_dir / "adapter")
    del trainer, model
    write_promotion_report(job_dir, profile)
    return job_dir / "adapter"


def write_promotion_report(job_dir: Path, profile: Profile) -> dict:
    """The promotion gate, in the job's process: the new adapter and the one serving answer the same held-out
    products (helpers.evaluation.promotion_products, never trained on), and their facts are compared with a
    non-inferiority margin. The serving adapter's answers are cached beside the jobs, by adapter and products."""
    from helpers.evaluation import PROMOTION_MARGIN, promotion_check, promotion_decision, promotion_products

    feedback = job_dir / "feedback.jsonl"
    corrected = [json.loads(line)["product"] for line in feedback.read_text().splitlines()] if feedback.is_file() else []
    products = promotion_products(profile, corrected)
    serving = json.loads((job_dir / SERVING_FILE).read_text())["adapter"] if (job_dir / SERVING_FILE).is_file() else None
    if serving is None:
        report = {"promoted": True, "reason": "no adapter was serving: the first one serves", "check": []}
    else:
        before = cached_answers(Path(serving), products, profile, job_dir.parent / ".promotion-answers")
        after = adapter_answers(job_dir / "adapter", products, profile)
        check = promotion_check(products, before, after, profile.seed)
        promoted, reason = promotion_decision(check)
        report = {"promoted": promoted, "reason": reason, "margin": PROMOTION_MARGIN, "products": len(products),
                  "serving adapter": display_path(Path(serving)), "check": check.to_dict("records")}
    write_json_atomically(job_dir / PROMOTION_FILE, report)
    return report


def adapter_answers(adapter: Path, products: list[dict], profile: Profile) -> list:
    from helpers.models import answer_products, load_model

    model, tokenizer = load_model(profile, adapter, verbose=False)
    return answer_products(model, tokenizer, [record["product"] for record in products], profile, progress=False)


def cached_answers(adapter: Path, products: list[dict], profile: Profile, cache: Path) -> list:
    """The serving adapter's answers to ``products``: generated once per adapter (its weights' hash), profile and
    products, then read back."""
    from helpers.models import Answer

    key = hashlib.sha256((adapter / "adapter_model.safetensors").read_bytes() + profile.name.encode()
                         + " ".join(record["uid"] for record in products).encode()).hexdigest()[:24]
    path = cache / f"{key}.json"
    if path.is_file():
        return [Answer(**answer) for answer in json.loads(path.read_text())]
    answers = adapter_answers(adapter, products, profile)
    cache.mkdir(parents=True, exist_ok=True)
    write_json_atomically(path, [vars(answer) for answer in answers])
    return answers
