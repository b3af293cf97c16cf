"""The htpasswd check on its own (gcs_sync/auth/htpasswd.py): what the app tests cannot
reach through HTTP - threads racing a file change, the dummy hash's cost, odd passwords.
Real files, real passlib; no mocks."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from passlib.hash import apr_md5_crypt, bcrypt, sha512_crypt

from gcs_sync.auth.htpasswd import ACCEPTED, FailureBudget, HtpasswdChecker

from .test_auth import write_users


def unbounded() -> FailureBudget:
    return FailureBudget(burst=1_000_000)


def test_threads_racing_a_password_change_never_keep_the_old_password(tmp_path: Path) -> None:
    """Eight threads log in with both passwords while the file flips between them; once
    it stops, only the last password works: a login verified against an older version is
    never remembered after the change."""
    path = tmp_path / "htpasswd"
    first, second = apr_md5_crypt.hash("first"), apr_md5_crypt.hash("second")
    write_users(path, alice=first)
    check = HtpasswdChecker(str(path), failures=unbounded())
    errors: list[BaseException] = []
    stop = threading.Event()

    def login() -> None:
        try:
            while not stop.is_set():
                check("alice", "first")
                check("alice", "second")
                check("nobody", "first")
        except BaseException as exc:  # reported below, with the thread's failure
            errors.append(exc)

    threads = [threading.Thread(target=login) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        for n in range(200):
            write_users(path, alice=second if n % 2 else first)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert errors == [] and not any(thread.is_alive() for thread in threads)
    assert check("alice", "second") is True and check("alice", "first") is False


def test_the_dummy_hash_has_the_files_scheme_and_cost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """htpasswd -B writes bcrypt at cost 5, passlib at 12: an unknown user must cost what
    the file's users cost, not passlib's default."""
    path = tmp_path / "htpasswd"
    cheap = bcrypt.using(rounds=5, ident="2y")
    write_users(path, alice=cheap.hash("a"), bob=cheap.hash("b"), carol=sha512_crypt.hash("c"))
    check = HtpasswdChecker(str(path), failures=unbounded())
    verified: list[str] = []
    context_verify = ACCEPTED.verify

    def seen(secret: str, stored: str) -> bool:  # wraps passlib's verify, to see the hash it gets
        verified.append(stored)
        return context_verify(secret, stored)

    monkeypatch.setattr(ACCEPTED, "verify", seen)
    assert check("nobody", "a") is False  # the first unknown user of a version makes the dummy (one hash)
    assert check("nobody", "a") is False  # the next are verified against it
    assert len(verified) == 1 and verified[0].startswith("$2y$05$")


def test_a_password_no_scheme_can_take_is_a_wrong_password(tmp_path: Path) -> None:
    """bcrypt and sha512-crypt refuse a NUL byte with ValueError: a 403, never a 500."""
    path = tmp_path / "htpasswd"
    write_users(path, alice=bcrypt.using(rounds=4).hash("a"), bob=sha512_crypt.hash("b"))
    check = HtpasswdChecker(str(path), failures=unbounded())
    assert check("alice", "a\x00b") is False and check("bob", "b\x00") is False and check("nobody", "\x00") is False
    assert check("alice", "a") is True
