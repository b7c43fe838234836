"""``python -m helpers.serving ...``: the command line of ``helpers.serving.cli`` (the service, users, API keys,
exported feedback, and the child process of a training job)."""
from helpers.serving.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
