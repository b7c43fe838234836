"""The command line, ``python -m helpers.serving serve|adduser|apikey|deluser|role|export-feedback|train-job``:
``main`` parses it with one argparse sub-parser per command, each bound to the function that runs it; ``serve`` runs
the service under uvicorn; ``settings_from`` and ``read_password`` read what the commands need. ``adduser`` refuses an existing name
unless ``--reset-password`` (which keeps the role); only ``role`` changes a role."""
from __future__ import annotations

import argparse
import getpass
import importlib
import sys
import time
from pathlib import Path

from helpers.config import PROFILES, active_profile, display_path, prepare_environment
from helpers.serving.app import create_app
from helpers.serving.backend import backend_for
from helpers.serving.jobs import run_training_job
from helpers.serving.settings import ServiceSettings, default_data_dir
from helpers.serving.store import Store, export_feedback


# --- Command line ----------------------------------------------------------------------------------------------------


def settings_from(args) -> ServiceSettings:
    profile = PROFILES[args.profile]() if args.profile else active_profile(verbose=False)
    prepare_environment(profile)
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


def run_serve(args, settings: ServiceSettings) -> int:
    return serve(settings, args.host, args.port)


def run_train_job(args, settings: ServiceSettings) -> int:
    print(run_training_job(Path(args.job_dir), args.examples, settings.profile,
                           Path(args.feedback) if args.feedback else None))
    return 0


def run_adduser(args, settings: ServiceSettings) -> int:
    store = Store(settings.database)
    # Before the password is asked for: an existing name needs --reset-password, which keeps the role.
    existing = store.check_name(args.name, exists=True if args.reset_password else False)
    if args.instructor and existing is not None and not existing["instructor"]:
        raise ValueError(f"--reset-password keeps the role: python -m helpers.serving role {args.name} "
                         "instructor makes them an instructor.")
    password = read_password(args.name)
    if not password:
        raise ValueError("empty password (give it on standard input)")
    if args.reset_password:
        instructor = store.add_user(args.name, password, exists=True)
        print(f"password of {args.name} ({'instructor' if instructor else 'student'}) reset in "
              f"{display_path(settings.database)}: their tokens and API keys no longer work")
        return 0
    store.add_user(args.name, password, args.instructor, exists=False)
    role = "instructor" if args.instructor else "student"
    print(f"user {args.name} ({role}) saved in {display_path(settings.database)}")
    return 0


def run_apikey(args, settings: ServiceSettings) -> int:
    key = Store(settings.database).create_api_key(args.name, settings.api_key_days)
    print(key["key"])  # alone on standard output: KEY=$(python -m helpers.serving apikey NAME)
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(key["expires"]))
    print(f"key {key['id']} (ending {key['last4']}) expires {expires} (api_key_days={settings.api_key_days:g})",
          file=sys.stderr)
    return 0


def run_deluser(args, settings: ServiceSettings) -> int:
    Store(settings.database).delete_user(args.name)
    print(f"user {args.name} deleted from {display_path(settings.database)}: their tokens and API keys no longer "
          "work; their answers and feedback stay")
    return 0


def run_role(args, settings: ServiceSettings) -> int:
    Store(settings.database).set_role(args.name, args.role == "instructor")
    print(f"user {args.name} ({args.role}) saved in {display_path(settings.database)}")
    return 0


def run_export_feedback(args, settings: ServiceSettings) -> int:
    target = Path(args.output) if args.output else settings.data_dir / "feedback.jsonl"
    count = export_feedback(Store(settings.database), target)
    print(f"{count} corrections written to {display_path(target)}")
    return 0


def add_serve_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=int, default=8000)


def add_adduser_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("name")
    command.add_argument("--reset-password", action="store_true",
                         help="set a new password of an existing user, keeping their role (without it, adduser "
                              "refuses an existing name)")
    command.add_argument("--instructor", action="store_true",
                         help="may start and cancel training jobs (their adapter serves every user)")


def add_name_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument("name")


def add_role_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("name")
    command.add_argument("role", choices=("instructor", "student"))


def add_export_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--output", default=None, help="default <data-dir>/feedback.jsonl")


def add_train_job_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("--job-dir", required=True)
    command.add_argument("--examples", type=int, required=True)
    command.add_argument("--feedback", default=None)


# name → (help, its own arguments, what runs it). A ValueError from a command is its error message (exit 1).
COMMANDS = {
    "serve": ("start the service", add_serve_arguments, run_serve),
    "adduser": ("add a user (password from standard input)", add_adduser_arguments, run_adduser),
    "apikey": ("print a new API key for a user (its expiry on standard error)", add_name_argument, run_apikey),
    "deluser": ("delete a user: their tokens and keys stop working, their feedback stays", add_name_argument,
                run_deluser),
    "role": ("make a user an instructor or a student", add_role_arguments, run_role),
    "export-feedback": ("write the approved corrections as training records (JSON lines)", add_export_arguments,
                        run_export_feedback),
    "train-job": ("(internal) the child process of a training job", add_train_job_arguments, run_train_job),
}


def command_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m helpers.serving", description=package_summary())
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (summary, add_arguments, run) in COMMANDS.items():
        command = commands.add_parser(name, help=summary)
        command.add_argument("--profile", choices=sorted(PROFILES), default=None)
        command.add_argument("--data-dir", default=None, help="where the database and jobs live "
                                                              "(default outputs/serving/<profile>)")
        add_arguments(command)
        command.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = command_parser().parse_args(argv)
    try:
        return args.run(args, settings_from(args))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
