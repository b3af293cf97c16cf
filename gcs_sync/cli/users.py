"""``users add|remove|list``: the htpasswd file, local or in the bucket, through passlib.

PASSWORD_FILE (or ``--password-file``) names it as the server reads it: a local path, or
``gs://BUCKET/KEY`` / ``s3://BUCKET/KEY`` with the matching STORAGE_BACKEND. A change is
written whole, and only over the version that was read (``auth.stores``), so two edits at
once never lose one silently. After a change to a bucket object a change-feed entry
is written, so every instance reads the new users at its next check (within SYNC_INTERVAL
plus one sync). Passwords are read from the terminal or stdin, never from the command
line; neither they nor hashes are printed. User names follow ``auth.user_names``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Callable, Mapping, Optional

from passlib.apache import HtpasswdFile

from gcs_sync.auth.password_object import password_file_setting
from gcs_sync.auth.stores import (
    HtpasswdStore,
    existing_users,
    open_store,
    read_users,
    write_users,
)
from gcs_sync.auth.user_names import UserNameError, check_editable_user_name
from gcs_sync.cli.common import (
    EXIT_DIFFERENT,
    EXIT_OK,
    EXIT_USAGE,
    overridden_environ,
    store_settings,
)
from gcs_sync.errors import ObjectChanged, StorageError

# Hash schemes pypiserver (through passlib) verifies; bcrypt needs the bcrypt 4.0.x that
# requirements.txt pins. Each costs some CPU at every login: bcrypt and sha512_crypt at
# passlib's default rounds about 0.2-0.3 s; apr_md5_crypt (Apache's default) far less,
# and far weaker.
SCHEMES = ("bcrypt", "sha512_crypt", "apr_md5_crypt")


class _UsageError(Exception):
    """Bad input from the operator: a password."""


def _store(args: argparse.Namespace, environ: Mapping[str, str]) -> HtpasswdStore:
    """PASSWORD_FILE (``--password-file`` first), parsed as the server parses it."""
    merged = overridden_environ(args, environ)
    if args.password_file is not None:
        merged["PASSWORD_FILE"] = args.password_file
    return open_store(password_file_setting(merged), lambda: store_settings(args, merged))


def _announce(store: HtpasswdStore) -> int:
    """Tell the servers of the change; the command's exit code."""
    try:
        told = store.announce()
    except StorageError as exc:
        print(f"warning: the users are stored, but the change feed could not be written ({exc}): "
              "instances pick the change up at their next full listing (FULL_SYNC_INTERVAL)", file=sys.stderr)
        return EXIT_DIFFERENT
    if told:
        print("every instance reads it at its next check (within SYNC_INTERVAL, plus one sync)")
    return EXIT_OK


def _new_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(f"Password for {args.name}: ")
        if getpass.getpass("Again: ") != password:
            raise _UsageError("the passwords do not match; nothing was changed")
    if not password:
        raise _UsageError("the password is empty; nothing was changed")
    return password


def _written(store: HtpasswdStore, users: HtpasswdFile, version: Optional[str]) -> bool:
    try:
        write_users(store, users, version)
    except ObjectChanged as exc:
        print(f"error: {store.where} changed while this command ran ({exc.cause}); nothing was written: "
              "run it again", file=sys.stderr)
        return False
    return True


def run_add(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    name = check_editable_user_name(args.name)
    store = _store(args, environ)
    version, users = read_users(store, args.scheme)  # before the prompt: a bad PASSWORD_FILE fails first
    updated = users.set_password(name, _new_password(args))
    if not _written(store, users, version):
        return EXIT_DIFFERENT
    print(f"{'updated the password of' if updated else 'added'} user {name!r} in {store.where}")
    return _announce(store)


def run_remove(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    name = check_editable_user_name(args.name)
    store = _store(args, environ)
    version, users = existing_users(store)
    if not users.delete(name):
        print(f"error: no user {name!r} in {store.where}", file=sys.stderr)
        return EXIT_DIFFERENT
    if not users.users():
        # The server refuses an htpasswd file without users (a start stops; a new version
        # of an object is not taken): add the next user first.
        print(f"error: {name!r} is the last user of {store.where}; add another one first", file=sys.stderr)
        return EXIT_DIFFERENT
    if not _written(store, users, version):
        return EXIT_DIFFERENT
    print(f"removed user {name!r} from {store.where}")
    return _announce(store)


def run_list(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    store = _store(args, environ)
    _, users = existing_users(store)
    for name in sorted(users.users()):
        print(name)  # names only, never a hash
    return EXIT_OK


_Command = Callable[[argparse.Namespace, Mapping[str, str]], int]


def _usage_errors_as_exit_code(run: _Command) -> _Command:
    def guarded(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
        try:
            return run(args, environ)
        except (_UsageError, UserNameError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return guarded


def add_commands(commands: "argparse._SubParsersAction", parent: argparse.ArgumentParser) -> None:
    users_options = argparse.ArgumentParser(add_help=False)
    users_options.add_argument(
        "--password-file", metavar="PASSWORD_FILE",
        help="the htpasswd file: a local path, or gs://BUCKET/KEY or s3://BUCKET/KEY with the matching "
        "STORAGE_BACKEND [env PASSWORD_FILE]",
    )
    users = commands.add_parser(
        "users", help="add, remove or list the users of the htpasswd file (PASSWORD_FILE)",
        description="Manage the users of PASSWORD_FILE, a local htpasswd file or an object in the bucket. "
        "A change to an object reaches every instance within SYNC_INTERVAL plus one sync.",
    )
    actions = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add", parents=[users_options, parent], help="add a user, or change a user's password",
        description="Add user NAME, or change the password of an existing NAME. The password is asked "
        "twice on the terminal, or read as one line from stdin with --password-stdin; never from the "
        "command line.",
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--password-stdin", action="store_true", help="read the password as one line from stdin")
    add.add_argument("--scheme", choices=SCHEMES, default="bcrypt",
                     help="how the password is hashed (default: bcrypt)")
    add.set_defaults(run=_usage_errors_as_exit_code(run_add))

    remove = actions.add_parser("remove", parents=[users_options, parent], help="remove a user",
                                description="Remove user NAME; exit code 1 if there is no such user.")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(run=_usage_errors_as_exit_code(run_remove))

    listing = actions.add_parser("list", parents=[users_options, parent], help="list the user names",
                                 description="Print each user's name, one per line (never a hash).")
    listing.set_defaults(run=_usage_errors_as_exit_code(run_list))
