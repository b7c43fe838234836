"""The command line, ``python -m helpers.serving serve|adduser|apikey|export-feedback|train-job``: ``main`` parses it,
``serve`` runs the service under uvicorn, ``settings_from`` and ``read_password`` read what the commands need."""
from __future__ import annotations

import argparse
import getpass
import importlib
import sys
from pathlib import Path

from helpers.config import PROFILES, active_profile, display_path
from helpers.serving.app import create_app
from helpers.serving.backend import backend_for
from helpers.serving.jobs import run_training_job
from helpers.serving.settings import ServiceSettings, default_data_dir
from helpers.serving.store import Store, export_feedback


# --- Command line ----------------------------------------------------------------------------------------------------


def settings_from(args) -> ServiceSettings:
    profile = PROFILES[args.profile]() if args.profile else active_profile(verbose=False)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir(profile)
    return ServiceSettings(profile=profile, data_dir=data_dir)


def read_password(name: str) -> str:
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {name}: ")
        if password != getpass.getpass("again: "):
            raise SystemExit("error: the two passwords differ")
        return password
    return sys.stdin.readline().rstrip("\n")


def serve(settings: ServiceSettings, host: str, port: int) -> int:
    import uvicorn

    print(f"== loading {settings.profile.summary()} (state in {display_path(settings.data_dir)})", flush=True)
    app = create_app(settings, backend_for(settings))
    with Store(settings.database).connect() as connection:
        users = connection.execute("SELECT COUNT(*) FROM users").fetchone()[0]
    if users == 0:
        print("   no users yet: python -m helpers.serving adduser NAME (password on standard input)", flush=True)
    print(f"== serving on http://{host}:{port} (OpenAI base_url http://{host}:{port}/v1)", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C/SIGINT, then re-raises it
        pass
    finally:
        app.state.jobs.stop_all()
    return 0


def package_summary() -> str:
    """The first paragraph of the package's docstring: what ``--help`` says the service is."""
    return importlib.import_module(__package__).__doc__.split("\n\n")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.serving", description=package_summary())
    commands = parser.add_subparsers(dest="command", required=True)
    for name, summary in (("serve", "start the service"), ("adduser", "add a user (password from standard input)"),
                          ("apikey", "print a new API key for a user"),
                          ("export-feedback", "write the corrections as training records (JSON lines)"),
                          ("train-job", "(internal) the child process of a training job")):
        command = commands.add_parser(name, help=summary)
        command.add_argument("--profile", choices=sorted(PROFILES), default=None)
        command.add_argument("--data-dir", default=None, help="where the database and jobs live "
                                                              "(default outputs/serving/<profile>)")
        if name == "serve":
            command.add_argument("--host", default="127.0.0.1")
            command.add_argument("--port", type=int, default=8000)
        if name in ("adduser", "apikey"):
            command.add_argument("name")
        if name == "adduser":
            command.add_argument("--instructor", action="store_true",
                                 help="may start and cancel training jobs (their adapter serves every user)")
        if name == "export-feedback":
            command.add_argument("--output", default=None, help="default <data-dir>/feedback.jsonl")
        if name == "train-job":
            command.add_argument("--job-dir", required=True)
            command.add_argument("--examples", type=int, required=True)
            command.add_argument("--feedback", default=None)
    args = parser.parse_args(argv)
    settings = settings_from(args)
    if args.command == "serve":
        return serve(settings, args.host, args.port)
    if args.command == "train-job":
        print(run_training_job(Path(args.job_dir), args.examples, settings.profile,
                               Path(args.feedback) if args.feedback else None))
        return 0
    store = Store(settings.database)
    if args.command == "adduser":
        password = read_password(args.name)
        if not password:
            print("error: empty password (give it on standard input)", file=sys.stderr)
            return 1
        store.add_user(args.name, password, args.instructor)
        role = "instructor" if args.instructor else "student"
        print(f"user {args.name} ({role}) saved in {display_path(settings.database)}")
    elif args.command == "apikey":
        try:
            print(store.add_api_key(args.name))
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    elif args.command == "export-feedback":
        target = Path(args.output) if args.output else settings.data_dir / "feedback.jsonl"
        count = export_feedback(store, target)
        print(f"{count} corrections written to {display_path(target)}")
    return 0
