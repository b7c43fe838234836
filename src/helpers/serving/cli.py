"""The command line, ``python -m helpers.serving serve|adduser|apikey|deluser|role|export-feedback|train-job``:
``main`` parses it, ``serve`` runs the service under uvicorn, ``account_command`` does the commands on users, keys and
feedback, ``settings_from`` and ``read_password`` read what the commands need. ``adduser`` refuses an existing name
unless ``--reset-password`` (which keeps the role); only ``role`` changes a role."""
from __future__ import annotations

import argparse
import getpass
import importlib
import sys
import time
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
                          ("apikey", "print a new API key for a user (its expiry on standard error)"),
                          ("deluser", "delete a user: their tokens and keys stop working, their feedback stays"),
                          ("role", "make a user an instructor or a student"),
                          ("export-feedback", "write the approved corrections as training records (JSON lines)"),
                          ("train-job", "(internal) the child process of a training job")):
        command = commands.add_parser(name, help=summary)
        command.add_argument("--profile", choices=sorted(PROFILES), default=None)
        command.add_argument("--data-dir", default=None, help="where the database and jobs live "
                                                              "(default outputs/serving/<profile>)")
        if name == "serve":
            command.add_argument("--host", default="127.0.0.1")
            command.add_argument("--port", type=int, default=8000)
        if name in ("adduser", "apikey", "deluser", "role"):
            command.add_argument("name")
        if name == "role":
            command.add_argument("role", choices=("instructor", "student"))
        if name == "adduser":
            command.add_argument("--reset-password", action="store_true",
                                 help="set a new password of an existing user, keeping their role (without it, "
                                      "adduser refuses an existing name)")
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
    try:
        return account_command(args, store, settings)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def account_command(args, store: Store, settings: ServiceSettings) -> int:
    """adduser, apikey, deluser, role and export-feedback; a ValueError is the command's error message."""
    if args.command == "adduser":
        # Before the password is asked for: an existing name needs --reset-password, which keeps the role.
        existing = store.check_name(args.name, exists=True if args.reset_password else False)
        if args.instructor and existing is not None and not existing["instructor"]:
            raise ValueError(f"--reset-password keeps the role: python -m helpers.serving role {args.name} "
                             "instructor makes them an instructor.")
        password = read_password(args.name)
        if not password:
            print("error: empty password (give it on standard input)", file=sys.stderr)
            return 1
        if args.reset_password:
            instructor = store.add_user(args.name, password, exists=True)
            print(f"password of {args.name} ({'instructor' if instructor else 'student'}) reset in "
                  f"{display_path(settings.database)}: their tokens and API keys no longer work")
            return 0
        store.add_user(args.name, password, args.instructor, exists=False)
        role = "instructor" if args.instructor else "student"
        print(f"user {args.name} ({role}) saved in {display_path(settings.database)}")
    elif args.command == "apikey":
        key = store.create_api_key(args.name, settings.api_key_days)
        print(key["key"])  # alone on standard output: KEY=$(python -m helpers.serving apikey NAME)
        expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(key["expires"]))
        print(f"key {key['id']} (ending {key['last4']}) expires {expires} (api_key_days={settings.api_key_days:g})",
              file=sys.stderr)
    elif args.command == "deluser":
        store.delete_user(args.name)
        print(f"user {args.name} deleted from {display_path(settings.database)}: their tokens and API keys no longer "
              "work; their answers and feedback stay")
    elif args.command == "role":
        store.set_role(args.name, args.role == "instructor")
        print(f"user {args.name} ({args.role}) saved in {display_path(settings.database)}")
    elif args.command == "export-feedback":
        target = Path(args.output) if args.output else settings.data_dir / "feedback.jsonl"
        count = export_feedback(store, target)
        print(f"{count} corrections written to {display_path(target)}")
    return 0
