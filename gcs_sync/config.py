"""Settings: read once from the environment, validated, frozen.

Nothing else in the package reads ``os.environ``; the SDKs still read their own variables
(``STORAGE_EMULATOR_HOST``, ``AWS_ENDPOINT_URL``, credential chains), as users expect.
Every parser raises ``ConfigError`` naming the variable, so a bad deployment fails at
start-up with one line saying what to fix.

Reading the settings touches no file: what they name on disk (the local bucket folder,
LOCAL_PACKAGE_DIRECTORY, the htpasswd file, the WELCOME page) is checked by the start-up
check (``gcs_sync.auth.startup``), which every entry point runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import ipaddress
import re
from pathlib import Path, PurePosixPath
from typing import Callable, Mapping, Optional, TypedDict, TypeVar, overload

from pypiserver.config import DEFAULTS, auth_arg, health_endpoint_arg, strtobool

from gcs_sync.errors import ConfigError

T = TypeVar("T")

TIERS = ("dev", "prod")
BACKENDS = ("gcs", "s3", "local")
READY_DETAILS = ("authenticated", "public")
DEFAULT_MAX_UPLOAD_SIZE = 100 * 1024**2  # PyPI's own default limit for one file
DEFAULT_FORWARDED_ALLOW_IPS = ("127.0.0.1", "::1")  # gunicorn's default: a proxy on the same host
# How package files reach clients: a local copy of every file ("mirror"), files fetched
# from the bucket on demand into a bounded cache ("cache"), or a redirect to a signed URL
# ("redirect"). See README, "Package files: mirror, cache or redirect".
PACKAGE_FILES_MODES = ("mirror", "cache", "redirect")
DEFAULT_CACHE_MAX_BYTES = 256 * 1024**2
# App Engine and Cloud Run cap a response at 32 MB: larger files must be redirected there.
DEFAULT_REDIRECT_MIN_BYTES = 30 * 1024**2
DEFAULT_SIGNED_URL_EXPIRY = 300
MAX_SIGNED_URL_EXPIRY = 604800  # GCS V4 signed URLs live at most 7 days (S3 SigV4 too)

class _TierDefaults(TypedDict):
    STORAGE_BACKEND: str
    BUCKET_NAME: Optional[str]
    LOCAL_PACKAGE_DIRECTORY: str
    PUSH_LOCAL_CHANGES: bool


# Tier profiles: dev runs from a checkout with no cloud; prod is App Engine or Cloud Run,
# where only /tmp is writable and the bucket must be named explicitly.
_TIER_DEFAULTS: dict[str, _TierDefaults] = {
    "dev": {
        "STORAGE_BACKEND": "local",
        "BUCKET_NAME": "./data/bucket",
        "LOCAL_PACKAGE_DIRECTORY": "./data/packages",
        "PUSH_LOCAL_CHANGES": True,
    },
    "prod": {
        "STORAGE_BACKEND": "gcs",
        "BUCKET_NAME": None,
        "LOCAL_PACKAGE_DIRECTORY": "/tmp/packages",
        # /tmp cleaners lose files: never take that as a deletion; and nothing but the
        # index itself adds files to /tmp/packages.
        "PUSH_LOCAL_CHANGES": False,
    },
}


@dataclasses.dataclass(frozen=True)
class Settings:
    tier: str = "dev"
    storage_backend: str = "local"
    bucket_name: str = "./data/bucket"
    remote_package_directory: str = "packages"
    local_package_directory: Path = Path("./data/packages")
    # None: read-only server. ".": no authentication at all (pypiserver's convention).
    # A local path, or a bucket object as gs://BUCKET/KEY or s3://BUCKET/KEY
    # (gcs_sync.auth.password_object parses it).
    password_file: Optional[str] = None
    authenticate: tuple[str, ...] = ("update",)
    overwrite: bool = False
    # Seconds a checked view counts as fresh: at most one read of the bucket's change feed
    # (one listing call from this instance's position) per interval per instance.
    sync_interval: float = 5.0
    # Seconds between full listings, whatever the feed says: the bound for
    # changes made straight in the bucket by other tools.
    full_sync_interval: float = 60.0
    # Whether, under gunicorn, those full listings run in a process of their own beside the
    # workers (started by the master; gcs_sync/web/lister.py), so that no request waits
    # for one; else in each worker's checker thread (one process, and one copy of the
    # state, fewer).
    full_sync_process: bool = True
    # How far apart two writers' clocks may be (seconds): every instance re-reads that much
    # of the change feed before its position, so an entry named by a slow clock is not missed.
    feed_clock_skew: float = 300.0
    # How long change-feed entries are kept (seconds): an instance that has not read the feed
    # for longer than this (less the skew) lists the whole bucket instead.
    feed_retention: float = 86400.0
    # Transfers at a time during a sync (a cold start downloads everything).
    sync_concurrency: int = 8
    # Whether files added to or deleted from the local folder by hand reach the bucket
    # (True), or are left alone and downloaded again (False). The index's own uploads and
    # removals always reach the bucket.
    push_local_changes: bool = True
    disable_fallback: bool = True
    fallback_url: str = DEFAULTS.FALLBACK_URL
    hash_algo: Optional[str] = "sha256"
    health_endpoint: str = DEFAULTS.HEALTH_ENDPOINT
    cache_control: Optional[int] = None
    # The page at "/": pypiserver's --welcome, a bottle template file, as WELCOME names it;
    # None for pypiserver's own page. Read and rendered once by the start-up check.
    welcome: Optional[str] = None
    # Budget for one bucket operation: each attempt's network timeouts are half of it and
    # retries stop at it, so a failing call gives up after about this long (an attempt
    # already under way may add up to half again). With the folder-lock wait, also this
    # long, a request stays inside gunicorn's 30 s worker timeout.
    storage_timeout: float = 10.0
    # Seconds an instance sees the intent of an unfinished multi-file upload before it
    # takes the request for dead and removes what it stored (pending.py): well beyond
    # gunicorn's 30 s, which bounds a request.
    pending_upload_expiry: float = 120.0
    # Largest request body accepted, in bytes: an upload's files plus the form around them.
    max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE
    log_level: str = "INFO"
    # Who sees /ready's details (the bucket's URL, error messages, file names):
    # "authenticated" callers (valid credentials from PASSWORD_FILE) or everyone ("public").
    # Anonymous callers otherwise get the status, counts and a short reason only.
    ready_details: str = "authenticated"
    # Only the default dev folder is created on first use; a named one must exist, like a bucket.
    create_bucket_folder: bool = False
    # Peers whose X-Forwarded-Proto/-For count (gunicorn's forwarded_allow_ips, which
    # gunicorn reads from the same variable); "*" trusts every peer. forwarded.py.
    forwarded_allow_ips: tuple[str, ...] = DEFAULT_FORWARDED_ALLOW_IPS
    # "mirror" (every file held locally), "cache" (fetched on demand, at most
    # cache_max_bytes kept) or "redirect" (a signed URL of the bucket's object).
    package_files: str = "mirror"
    cache_max_bytes: int = DEFAULT_CACHE_MAX_BYTES
    # In cache mode, files at least this large are redirected when signing works.
    redirect_min_bytes: int = DEFAULT_REDIRECT_MIN_BYTES
    signed_url_expiry: int = DEFAULT_SIGNED_URL_EXPIRY
    # The service account whose signature signed URLs carry (GCS, through IAM signBlob);
    # None: the runtime credentials' own account.
    signing_service_account: Optional[str] = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Settings":
        """The settings ``environ`` gives, validated without touching any file."""
        reader = _EnvReader(environ)
        tier = reader.choice("TIER", TIERS, "dev")
        defaults = _TIER_DEFAULTS[tier]
        backend = reader.choice("STORAGE_BACKEND", BACKENDS, defaults["STORAGE_BACKEND"])
        # Only the dev folder has a sensible default; a cloud bucket must be named.
        bucket_default = defaults["BUCKET_NAME"] if backend == "local" else None
        bucket_name = reader.text("BUCKET_NAME", bucket_default)
        create_bucket_folder = backend == "local" and bucket_name == bucket_default
        if not bucket_name:
            raise ConfigError("BUCKET_NAME", f"required with STORAGE_BACKEND={backend}")
        if backend == "local":  # a folder: fixed now, so the working directory can't move it
            bucket_name = str(Path(bucket_name).expanduser().absolute())
        else:
            _check_bucket_name(bucket_name)
        local_directory = Path(
            reader.text("LOCAL_PACKAGE_DIRECTORY", defaults["LOCAL_PACKAGE_DIRECTORY"])
        ).expanduser().absolute()
        authenticate = tuple(reader.parsed("AUTHENTICATE", auth_arg, ["update"]))
        password_file = reader.text("PASSWORD_FILE", None) or None
        _check_auth_combination(authenticate, password_file)
        sync_interval = reader.parsed("SYNC_INTERVAL", _non_negative_float, 5.0)
        full_sync_interval = reader.parsed("FULL_SYNC_INTERVAL", _non_negative_float, max(60.0, sync_interval))
        if full_sync_interval < sync_interval:
            raise ConfigError(
                "FULL_SYNC_INTERVAL",
                f"({full_sync_interval:g}s) must not be shorter than SYNC_INTERVAL ({sync_interval:g}s)",
            )
        feed_clock_skew = reader.parsed("FEED_CLOCK_SKEW", _non_negative_float, 300.0)
        feed_retention = reader.parsed("FEED_RETENTION", _positive_float, 86400.0)
        if feed_retention < 2 * (feed_clock_skew + 60.0):
            raise ConfigError(
                "FEED_RETENTION",
                f"({feed_retention:g}s) must be at least twice FEED_CLOCK_SKEW plus a minute "
                f"({2 * (feed_clock_skew + 60.0):g}s): entries must outlive the window every instance re-reads",
            )
        default_hash_algo: Optional[str] = "sha256"
        return cls(
            tier=tier,
            storage_backend=backend,
            bucket_name=bucket_name,
            remote_package_directory=reader.parsed(
                "REMOTE_PACKAGE_DIRECTORY", _parse_prefix, "packages"
            ),
            local_package_directory=local_directory,
            password_file=password_file,
            authenticate=authenticate,
            overwrite=reader.parsed("OVERWRITE", strtobool, False),
            sync_interval=sync_interval,
            full_sync_interval=full_sync_interval,
            full_sync_process=reader.parsed("FULL_SYNC_PROCESS", strtobool, True),
            feed_clock_skew=feed_clock_skew,
            feed_retention=feed_retention,
            sync_concurrency=reader.parsed("SYNC_CONCURRENCY", _concurrency, 8),
            push_local_changes=reader.parsed(
                "PUSH_LOCAL_CHANGES", strtobool, defaults["PUSH_LOCAL_CHANGES"]
            ),
            disable_fallback=reader.parsed("DISABLE_FALLBACK", strtobool, True),
            fallback_url=reader.text("FALLBACK_URL", DEFAULTS.FALLBACK_URL),
            hash_algo=reader.parsed("HASH_ALGO", _parse_hash_algo, default_hash_algo),
            health_endpoint=reader.parsed(
                "HEALTH_ENDPOINT", health_endpoint_arg, DEFAULTS.HEALTH_ENDPOINT
            ),
            cache_control=reader.parsed("CACHE_CONTROL", _non_negative_int, None),
            welcome=reader.text("WELCOME", None),
            storage_timeout=reader.parsed("STORAGE_TIMEOUT", _positive_float, 10.0),
            pending_upload_expiry=reader.parsed("PENDING_UPLOAD_EXPIRY", _positive_float, 120.0),
            max_upload_size=reader.parsed("MAX_UPLOAD_SIZE", _byte_size, DEFAULT_MAX_UPLOAD_SIZE),
            log_level=reader.choice(
                "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True
            ),
            ready_details=reader.choice("READY_DETAILS", READY_DETAILS, "authenticated"),
            create_bucket_folder=create_bucket_folder,
            forwarded_allow_ips=reader.parsed("FORWARDED_ALLOW_IPS", _parse_allow_ips, DEFAULT_FORWARDED_ALLOW_IPS),
            package_files=_package_files(reader, tier, backend),
            cache_max_bytes=reader.parsed("CACHE_MAX_BYTES", _byte_size, DEFAULT_CACHE_MAX_BYTES),
            redirect_min_bytes=reader.parsed("REDIRECT_MIN_BYTES", _byte_size, DEFAULT_REDIRECT_MIN_BYTES),
            signed_url_expiry=reader.parsed("SIGNED_URL_EXPIRY", _signed_url_expiry, DEFAULT_SIGNED_URL_EXPIRY),
            signing_service_account=reader.parsed("SIGNING_SERVICE_ACCOUNT", _service_account, None),
        )

    @property
    def store_url(self) -> str:
        """Where the packages live, as a URL for logs and the state file."""
        scheme = {"gcs": "gs", "s3": "s3", "local": "file"}[self.storage_backend]
        prefix = f"/{self.remote_package_directory}" if self.remote_package_directory else ""
        return f"{scheme}://{self.bucket_name}{prefix}"


def read_variable(environ: Mapping[str, str], name: str) -> Optional[str]:
    """A variable as every setting reads it: without surrounding spaces; None if unset or blank."""
    value = environ.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


class _EnvReader:
    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    @overload
    def text(self, name: str, default: str) -> str: ...

    @overload
    def text(self, name: str, default: Optional[str]) -> Optional[str]: ...

    def text(self, name: str, default: Optional[str]) -> Optional[str]:
        value = read_variable(self._environ, name)
        return default if value is None else value

    def choice(self, name: str, allowed: tuple[str, ...], default: str, upper: bool = False) -> str:
        value = self.text(name, default)
        value = value.upper() if upper else value.lower()
        if value not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def parsed(self, name: str, parse: Callable[[str], T], default: T) -> T:
        value = self.text(name, None)
        if value is None:
            return default
        try:
            return parse(value)
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise ConfigError(name, f"{exc} (got {value!r})") from exc


def _non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise ValueError("must be a number of seconds, 0 or more")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a number of seconds above 0")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError("must be a whole number, 0 or more")
    return number


def _concurrency(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 64:
        raise ValueError("must be a whole number from 1 (one transfer at a time) to 64")
    return number


_SIZE = re.compile(r"(\d+)\s*([kmg]i?b)?", re.I)
_UNITS = {None: 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def _byte_size(value: str) -> int:
    match = _SIZE.fullmatch(value.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError("must be a number of bytes above 0, optionally with a unit: KB, MB, GB (powers "
                         "of 1000) or KiB, MiB, GiB (powers of 1024), e.g. 100MiB")
    unit = match[2].lower() if match[2] else None
    return int(match[1]) * _UNITS[unit]


def _package_files(reader: _EnvReader, tier: str, backend: str) -> str:
    """PACKAGE_FILES: a VM or a dev checkout has a disk, so it mirrors; App Engine and
    Cloud Run (prod on a cloud bucket) keep files in memory, so they cache."""
    default = "cache" if tier == "prod" and backend != "local" else "mirror"
    mode = reader.choice("PACKAGE_FILES", PACKAGE_FILES_MODES, default)
    if mode == "redirect" and backend == "local":
        raise ConfigError("PACKAGE_FILES", "redirect needs a bucket that signs URLs (STORAGE_BACKEND=gcs or s3); "
                          "a local folder cannot: use mirror or cache")
    return mode


def _signed_url_expiry(value: str) -> int:
    seconds = int(value)
    if not 1 <= seconds <= MAX_SIGNED_URL_EXPIRY:
        raise ValueError(f"must be a whole number of seconds from 1 to {MAX_SIGNED_URL_EXPIRY} (7 days, "
                         "the longest a V4 signed URL lives)")
    return seconds


_SERVICE_ACCOUNT = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _service_account(value: str) -> str:
    if _SERVICE_ACCOUNT.fullmatch(value) is None:
        raise ValueError("must be a service account's email, e.g. index@PROJECT.iam.gserviceaccount.com")
    return value


def _parse_hash_algo(value: str) -> Optional[str]:
    # pypiserver's app() does not validate this; a bad name would surface as a 500 later.
    if value in hashlib.algorithms_available:
        return value
    if value.lower() in ("off", "false", "no", "0", "n", "f"):
        return None
    raise ValueError("must be a hashlib algorithm such as sha256, or off")


def _parse_allow_ips(value: str) -> tuple[str, ...]:
    """FORWARDED_ALLOW_IPS as gunicorn reads it: comma-separated IP addresses, or ``*``
    for every peer. Raises ValueError naming a bad entry (a network such as 10.0.0.0/8
    included: gunicorn 23 refuses those too)."""
    ips = tuple(part.strip() for part in value.split(",") if part.strip())
    for ip in ips:
        if ip != "*":
            try:
                ipaddress.ip_address(ip)
            except ValueError as exc:
                raise ValueError(f"{ip!r} is not an IP address (a comma-separated list of addresses, "
                                 "or * for every peer)") from exc
    return ips


def _parse_prefix(value: str) -> str:
    prefix = value.strip("/")
    parts = PurePosixPath(prefix).parts if prefix else ()
    if "\\" in prefix or any(part in (".", "..") for part in parts):
        raise ValueError("must be a plain folder path inside the bucket, without '..' or '\\'")
    return "/".join(parts)


# What GCS and S3 allow in a bucket name (S3's legacy names may also have capitals), so
# that "gs://bucket", "bucket/folder" or a stray space is refused before any request.
_BUCKET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,221}")


def is_bucket_name(name: str) -> bool:
    return _BUCKET_NAME.fullmatch(name) is not None


def _check_bucket_name(name: str) -> None:
    if not is_bucket_name(name):
        raise ConfigError(
            "BUCKET_NAME",
            f"{name!r} is not a bucket name (letters, digits, '.', '-' and '_'; no gs:// or s3:// and "
            "no folder: the folder is REMOTE_PACKAGE_DIRECTORY)",
        )


def _check_auth_combination(authenticate: tuple[str, ...], password_file: Optional[str]) -> None:
    if not authenticate and password_file not in (None, "."):
        raise ConfigError(
            "AUTHENTICATE", "is '.' (no authentication) but PASSWORD_FILE is set; unset one"
        )
    if authenticate and password_file == ".":
        raise ConfigError("PASSWORD_FILE", "is '.' (no authentication) but AUTHENTICATE is set")
    if password_file is None and set(authenticate) & {"list", "download"}:
        raise ConfigError(
            "PASSWORD_FILE",
            f"is required: AUTHENTICATE={','.join(authenticate)} protects reads, and without "
            "a password file nobody could read",
        )
