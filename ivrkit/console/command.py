"""``ivrkit console``: serve flows with the web console on, or make a password hash."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable

from ivrkit.console.passwords import hash_password

TOKEN_ENV = "IVRKIT_CONSOLE_TOKEN"
HASH_ENV = "IVRKIT_CONSOLE_PASSWORD_HASH"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
               serve: Callable[[argparse.Namespace], int]) -> None:
    console = commands.add_parser(
        "console",
        help="serve flows with the web console at /console (or --hash-password)",
        description="Serve flows like `ivrkit serve`, with the web console on: it needs "
        f"{TOKEN_ENV} or {HASH_ENV} (sign-in), or --insecure-dev (no sign-in, no token).",
    )
    console.add_argument("paths", nargs="*", help="flow modules or folders of them")
    console.add_argument("--host", default=None)
    console.add_argument("--port", type=int, default=None)
    console.add_argument("--database-url", default=None)
    console.add_argument("--public-url", default=None)
    console.add_argument("--insecure-dev", action="store_true",
                         help="DEVELOPMENT ONLY: no signature checks; console open if no token")
    console.add_argument(
        "--hash-password",
        action="store_true",
        help=f"read a password (twice, or once from a pipe) and print the {HASH_ENV} value",
    )
    console.set_defaults(handler=lambda args: run(args, serve), workers=1, access_log=False)


def run(args: argparse.Namespace, serve: Callable[[argparse.Namespace], int]) -> int:
    if args.hash_password:
        return _hash_password()
    if not args.paths:
        print("ivrkit console: name the flow modules to serve, e.g. flows/", file=sys.stderr)
        return 2
    if not (os.environ.get(TOKEN_ENV) or os.environ.get(HASH_ENV) or args.insecure_dev):
        print(
            f"ivrkit console: the console needs a sign-in: set {TOKEN_ENV} (a long random "
            f"string) or {HASH_ENV} (`ivrkit console --hash-password`), or pass "
            "--insecure-dev on a development machine",
            file=sys.stderr,
        )
        return 2
    return serve(args)


def _hash_password() -> int:
    if sys.stdin.isatty():
        password = getpass.getpass("Console password: ")
        if getpass.getpass("Again: ") != password:
            print("ivrkit console: the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("ivrkit console: use a password of 8 characters or more", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0
