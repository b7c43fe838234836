"""The course service over a fake backend, in a process of its own: what tests/test_service_load.py kills.

    python tests/fake_service.py DATA_DIR PORT

The fake backend writes "<model> says <title> is fine." one word every DELAY seconds; a training job is a child that
sleeps, then writes an adapter folder (so a test can kill it midway with SIGKILL).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from helpers import serving
from helpers.config import lab_profile
from helpers.models import Answer

DELAY = 0.01
JOB_SECONDS = 30


class Stream:
    def __init__(self, pieces: list[str]) -> None:
        self.pieces, self.answer = pieces, None

    def __iter__(self):
        for piece in self.pieces:
            time.sleep(DELAY)
            yield piece
        self.answer = Answer("".join(self.pieces), True, len(self.pieces))

    def close(self) -> None:
        pass


class Backend:
    def __init__(self, adapter: Path) -> None:
        self._adapter = adapter

    @property
    def adapter(self) -> Path:
        return self._adapter

    def prepare(self, model: str, text: str) -> serving.Prepared:
        return serving.Prepared(model, text, f"prompt for {text}")

    def prepare_raw(self, model: str, prompt: str) -> serving.Prepared:
        return serving.Prepared(model, prompt, prompt)

    def pieces(self, prepared: serving.Prepared, max_tokens: int) -> list[str]:
        words = f"{prepared.model} says {prepared.product} is fine.".split()
        return [word if index == 0 else " " + word for index, word in enumerate(words)][:max_tokens]

    def complete(self, prepared: list[serving.Prepared], max_tokens: int) -> list[Answer]:
        answers = []
        for item in prepared:
            pieces = self.pieces(item, max_tokens)
            time.sleep(DELAY * len(pieces))
            answers.append(Answer("".join(pieces), True, len(pieces)))
        return answers

    def stream(self, prepared: serving.Prepared, max_tokens: int) -> Stream:
        return Stream(self.pieces(prepared, max_tokens))

    def use_adapter(self, adapter: Path) -> None:
        self._adapter = Path(adapter)

    def count_tokens(self, text: str) -> int:
        return len(text.split())


def slow_trainer(job_dir: Path, examples: int, profile, feedback) -> list[str]:
    script = (f"import time, pathlib; time.sleep({JOB_SECONDS}); adapter = pathlib.Path({str(job_dir)!r}) / 'adapter';"
              "adapter.mkdir(); (adapter / 'adapter_config.json').write_text('{}')")
    return [sys.executable, "-c", script]


def main(data_dir: str, port: str) -> None:
    import uvicorn

    settings = serving.ServiceSettings(profile=lab_profile(), data_dir=Path(data_dir), queue_capacity=4)
    store = serving.Store(settings.database)
    adapter = Path(store.get_state("adapter") or "outputs/adapters/initial")
    app = serving.create_app(settings, Backend(adapter), job_command=slow_trainer)
    print(json.dumps({"serving": str(adapter)}), flush=True)
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level="warning")


if __name__ == "__main__":
    main(*sys.argv[1:3])
