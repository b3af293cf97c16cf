"""Who may log in: the htpasswd file's check of a Basic login, in place of pypiserver's.

pypiserver's own check (passlib's ``HtpasswdFile`` with its default context) takes any
entry it does not recognise as a hash for the ``plaintext`` scheme: the hash string itself
then logs in, and the real password is refused. It also answers an unknown user at once
and a wrong password after a whole bcrypt (about 0.2 s), which tells who exists, and it
pays that bcrypt at every request, so a password guesser costs the workers 0.2 s of CPU
per try. ``HtpasswdChecker`` instead:

- knows only ``ACCEPTED_SCHEMES``; ``check_entries`` refuses any other entry, naming its
  line (``check_htpasswd`` stops the start with it; a new version of the file with such
  an entry is not applied, the previous users stay);
- re-reads the file when it changes (the bucket's copy is replaced atomically, with a new
  mtime: password_file.step_mtime), as pypiserver does;
- verifies an unknown user's password against a dummy hash of the file's own scheme and
  cost, so a wrong name takes as long as a wrong password;
- remembers a successful login for ``CACHE_SECONDS`` by an HMAC of user and password under
  a key made for this process (never the password), forgotten when the file changes, so a
  pip install pays one verification, not one per request;
- spends at most ``FailureBudget`` on logins that fail: past it, a login that is not
  remembered gets 429 without being verified, so guessers cannot take a worker's CPU.

Thread-safe: the file, the cache and the budget are guarded by one lock, never held while
a hash is computed.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from typing import Callable, Iterable, Optional

from passlib.apache import HtpasswdFile
from passlib.context import CryptContext
from pypiserver.bottle_wrapper import HTTPError

from gcs_sync.auth.user_names import is_holdable
from gcs_sync.errors import ConfigError

log = logging.getLogger("gcs_sync.htpasswd_auth")  # the name operators' log queries know

# What htpasswd, openssl passwd and passlib write, minus the weak or exotic: des_crypt
# (8-character passwords), plaintext, and formats passlib cannot verify (yescrypt "$y$",
# argon2, "{SSHA}").
ACCEPTED_SCHEMES = ("bcrypt", "sha512_crypt", "sha256_crypt", "apr_md5_crypt", "md5_crypt", "ldap_sha1")
ACCEPTED = CryptContext(schemes=list(ACCEPTED_SCHEMES), default="bcrypt")
# A remembered login is valid this long. A change of the file forgets every login at once,
# so this only bounds how long a worker holds a login's HMAC: 5 minutes covers a CI job's
# installs and uploads with one verification per worker.
CACHE_SECONDS = 300.0
CACHE_ENTRIES = 1024  # the oldest are forgotten first beyond this: memory stays small
# Failed logins a worker verifies: a burst of FAILURE_BURST, then one per FAILURE_INTERVAL.
# At bcrypt's 0.2-0.25 s, a guesser gets at most about a quarter of one core per worker;
# a person who mistypes a few times never notices.
FAILURE_BURST = 10
FAILURE_INTERVAL = 1.0


class HtpasswdProblem(ValueError):
    """An htpasswd file pypiserver would read but cannot use; names the line, never the hash."""


class AccountedHtpasswd(HtpasswdFile):
    """passlib's htpasswd reader restricted to ACCEPTED, remembering each user's line."""

    def __init__(self, path: Optional[str] = None, **kwargs: object) -> None:
        self.lines: dict[str, int] = {}
        self._parsing: dict[str, int] = {}
        super().__init__(path, context=ACCEPTED, **kwargs)

    def _load_lines(self, lines: Iterable[bytes]) -> None:
        self._parsing = {}
        super()._load_lines(lines)
        self.lines = {self._decode_field(user): number for user, number in self._parsing.items()}

    def _parse_record(self, record: bytes, lineno: int) -> tuple[bytes, bytes]:
        user, hash_ = super()._parse_record(record, lineno)
        self._parsing.setdefault(user, lineno)  # passlib keeps a name's first line too
        return user, hash_


def check_entries(htpasswd: AccountedHtpasswd, shown: str) -> None:
    """Raise HtpasswdProblem for the first entry that is not a well-formed hash of an
    accepted scheme: such an entry would either log in with the hash string itself
    (pypiserver's plaintext fallback) or fail every login of that user with a 500."""
    for user in htpasswd.users():
        stored = htpasswd.get_hash(user)
        line = htpasswd.lines.get(user, 0)
        where = f"htpasswd file {shown}, line {line}: the entry of user {user!r} is not a usable hash"
        handler = ACCEPTED.identify(stored, resolve=True)
        if handler is None:  # the hash itself is never shown: it is a secret
            raise HtpasswdProblem(f"{where}: it is not {', '.join(ACCEPTED_SCHEMES)} "
                                  "('python -m gcs_sync users add' writes bcrypt)")
        try:
            parsed = handler.from_string(stored)
            if getattr(parsed, "checksum", None) is None:
                raise ValueError("it has a salt but no checksum")
        except ValueError as exc:
            raise HtpasswdProblem(f"{where}: {exc}") from exc


def read_htpasswd(path: str, shown: Optional[str] = None) -> AccountedHtpasswd:
    """The file, checked by ``check_entries``. Raises OSError (FileNotFoundError included),
    ValueError for a malformed line or bytes that are not UTF-8, HtpasswdProblem."""
    htpasswd = AccountedHtpasswd(path)
    htpasswd.users()  # names are decoded here, not when the file is read
    check_entries(htpasswd, shown or path)
    return htpasswd


def check_htpasswd(path: str, shown_as: Optional[str] = None) -> None:
    """Raise ConfigError unless ``path`` is an htpasswd file with users whose every entry
    is a well-formed hash of an accepted scheme (ACCEPTED_SCHEMES); the message names
    ``shown_as`` (the bucket object a copy came from) or the path, and the line of a bad
    entry, never its hash."""
    shown = shown_as or path
    try:
        htpasswd = read_htpasswd(path, shown)
    except FileNotFoundError as exc:
        raise ConfigError("PASSWORD_FILE", f"no such file: {shown}") from exc
    except HtpasswdProblem as exc:
        raise ConfigError("PASSWORD_FILE", str(exc)) from exc
    except (OSError, ValueError) as exc:  # ValueError: a malformed line, or not UTF-8
        raise ConfigError("PASSWORD_FILE", f"cannot read htpasswd file {shown}: {exc}") from exc
    if not htpasswd.users():
        raise ConfigError("PASSWORD_FILE", f"htpasswd file {shown} has no users")


class FailureBudget:
    """A token bucket of failed verifications: FAILURE_BURST, refilled one per interval."""

    def __init__(self, burst: int = FAILURE_BURST, interval: float = FAILURE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._burst = float(burst)
        self._interval = interval
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def available(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) / self._interval)
        self._stamp = now
        return self._tokens >= 1.0

    def spend(self) -> None:
        self._tokens = max(0.0, self._tokens - 1.0)

    def retry_after(self) -> int:
        return max(1, int((1.0 - self._tokens) * self._interval + 0.999))


class HtpasswdChecker:
    """pypiserver's ``auther(user, password) -> bool`` over an htpasswd file."""

    def __init__(self, path: str, *, cache_seconds: float = CACHE_SECONDS,
                 failures: Optional[FailureBudget] = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._cache_seconds = cache_seconds
        self._failures = failures or FailureBudget(clock=clock)
        self._clock = clock
        self._lock = threading.Lock()
        self._key = secrets.token_bytes(32)  # per process: a remembered login is useless elsewhere
        self._cache: "collections.OrderedDict[bytes, float]" = collections.OrderedDict()
        self._file = AccountedHtpasswd()
        self._version: Optional[str] = None
        self._generation = 0  # moves with every file version: a verification of an older one is not remembered
        self._dummy: Optional[str] = None
        with self._lock:
            self._reload_if_changed()

    def __call__(self, user: str, password: str) -> bool:
        key = self._cache_key(user, password)
        with self._lock:
            self._reload_if_changed()
            expiry = self._cache.get(key)
            if expiry is not None and expiry > self._clock():
                return True
            if not self._failures.available():
                raise HTTPError(429, "Too many failed logins; try again shortly",
                                headers={"Retry-After": str(self._failures.retry_after())})
            generation = self._generation
            stored = self._stored_hash(user)
            dummy = self._dummy
        try:
            if stored is None:  # the same work as a wrong password, so timing does not tell
                if dummy is None:
                    self._make_dummy()  # hashing costs what verifying does
                else:
                    ACCEPTED.verify(password, dummy)
                valid = False
            else:
                valid = ACCEPTED.verify(password, stored)
        except ValueError as exc:  # a password the scheme cannot take (a NUL byte): a wrong one
            log.warning("login refused: %s", type(exc).__name__)
            valid = False
        with self._lock:
            if not valid:
                self._failures.spend()
            elif generation == self._generation:
                self._remember(key)
        if not valid and password == "":
            # uv publish -u NAME without -p sends an empty password instead of prompting:
            # say so, rather than a bare 403 that reads as a wrong password.
            raise HTTPError("403 Empty password", f"The password for user {user} was empty: "
                            "give it to the client (uv publish: -p or UV_PUBLISH_PASSWORD).\n")
        return valid

    # -- the file ----------------------------------------------------------------------

    def _reload_if_changed(self) -> None:
        """Under the lock: read the file again if it was replaced or rewritten. A version
        that cannot be read or has an unusable entry is not applied: the users of the
        last good one stay, and the problem is logged once per version."""
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            self._refuse(f"missing:{exc.errno}", f"cannot read htpasswd file {self._path}: {exc}")
            return
        version = f"{stat.st_ino}:{stat.st_size}:{stat.st_mtime_ns}"
        if version == self._version:
            return
        self._version = version
        try:
            new = read_htpasswd(self._path)
        except (OSError, ValueError) as exc:  # HtpasswdProblem included
            log.error("PASSWORD_FILE: %s; keeping the users read before", exc)
            return
        self._file = new
        self._generation += 1
        self._cache.clear()  # a removed user or a changed password counts at once
        self._dummy = None

    def _refuse(self, version: str, problem: str) -> None:
        if version != self._version:
            self._version = version
            log.error("PASSWORD_FILE: %s; keeping the users read before", problem)

    def _stored_hash(self, user: str) -> Optional[str]:
        if not is_holdable(user):  # passlib would raise ValueError: stock pypiserver answers 500
            log.warning("login refused: not a user name an htpasswd file can hold")
            return None
        return self._file.get_hash(user)

    def _make_dummy(self) -> None:
        """A hash of a random password with the scheme and cost most of the file's users
        have (bcrypt at passlib's default if it has none), made once per file version."""
        with self._lock:
            hashes = [self._file.get_hash(user) for user in self._file.users()]
            generation = self._generation
        settings: collections.Counter[tuple] = collections.Counter()
        for stored in hashes:
            handler = ACCEPTED.identify(stored, resolve=True)
            parsed = handler.from_string(stored)
            options = tuple((name, getattr(parsed, name)) for name in ("rounds", "ident")
                            if name in handler.setting_kwds and getattr(parsed, name, None) is not None)
            settings[(handler, options)] += 1
        if settings:
            (handler, options), _ = settings.most_common(1)[0]
            dummy = handler.using(**dict(options)).hash(secrets.token_urlsafe(16))
        else:
            dummy = ACCEPTED.hash(secrets.token_urlsafe(16))
        with self._lock:
            if generation == self._generation:
                self._dummy = dummy

    # -- remembered logins -------------------------------------------------------------

    def _cache_key(self, user: str, password: str) -> bytes:
        secret = user.encode("utf-8", "surrogatepass") + b"\x00" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, secret, hashlib.sha256).digest()

    def _remember(self, key: bytes) -> None:
        self._cache[key] = self._clock() + self._cache_seconds
        self._cache.move_to_end(key)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
