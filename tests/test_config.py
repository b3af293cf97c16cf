"""Configuration: defaults per tier, and one clear error naming the variable for bad input."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gcs_sync import ConfigError, Settings
from gcs_sync.auth.password_object import password_object
from gcs_sync.auth.startup import check_startup
from gcs_sync.config import DEFAULT_MAX_UPLOAD_SIZE


def test_dev_defaults_need_no_configuration() -> None:
    settings = Settings.from_env({})
    assert settings.tier == "dev" and settings.storage_backend == "local"
    assert settings.bucket_name == str(Path("./data/bucket").absolute())
    assert settings.local_package_directory == Path("./data/packages").absolute()
    assert settings.remote_package_directory == "packages"
    assert settings.authenticate == ("update",) and settings.password_file is None
    assert settings.overwrite is False and settings.disable_fallback is True


def test_prod_defaults_to_gcs_and_tmp() -> None:
    settings = Settings.from_env({"TIER": "prod", "BUCKET_NAME": "my-bucket"})
    assert settings.storage_backend == "gcs" and settings.bucket_name == "my-bucket"
    assert settings.local_package_directory == Path("/tmp/packages")
    assert settings.store_url == "gs://my-bucket/packages"


def test_pypiserver_options_are_reachable(tmp_path: Path) -> None:
    settings = Settings.from_env({
        "OVERWRITE": "true", "SYNC_INTERVAL": "2.5", "DISABLE_FALLBACK": "no",
        "FALLBACK_URL": "https://example.invalid/simple/", "HASH_ALGO": "md5",
        "HEALTH_ENDPOINT": "/healthz", "CACHE_CONTROL": "60", "AUTHENTICATE": "update, download",
        "PASSWORD_FILE": str(_htpasswd(tmp_path)), "REMOTE_PACKAGE_DIRECTORY": "/team/pkgs/",
    })
    assert settings.overwrite and settings.sync_interval == 2.5 and not settings.disable_fallback
    assert settings.hash_algo == "md5" and settings.health_endpoint == "/healthz"
    assert settings.cache_control == 60 and settings.authenticate == ("download", "update")
    assert settings.remote_package_directory == "team/pkgs"


def _htpasswd(tmp_path: Path) -> Path:
    from passlib.apache import HtpasswdFile

    path = tmp_path / "htpasswd"
    users = HtpasswdFile(str(path), new=True)
    users.set_password("u", "p")
    users.save()
    return path


BAD = [
    ({"TIER": "staging"}, "TIER"),
    ({"STORAGE_BACKEND": "azure"}, "STORAGE_BACKEND"),
    ({"TIER": "prod"}, "BUCKET_NAME"),
    ({"STORAGE_BACKEND": "s3"}, "BUCKET_NAME"),
    ({"SYNC_INTERVAL": "soon"}, "SYNC_INTERVAL"),
    ({"SYNC_INTERVAL": "-1"}, "SYNC_INTERVAL"),
    ({"STORAGE_TIMEOUT": "0"}, "STORAGE_TIMEOUT"),
    ({"FEED_CLOCK_SKEW": "-5"}, "FEED_CLOCK_SKEW"),
    ({"FEED_RETENTION": "0"}, "FEED_RETENTION"),
    ({"FEED_RETENTION": "600"}, "FEED_RETENTION"),  # shorter than twice the window every reader re-reads
    ({"OVERWRITE": "perhaps"}, "OVERWRITE"),
    ({"DISABLE_FALLBACK": "2"}, "DISABLE_FALLBACK"),
    ({"AUTHENTICATE": "upload"}, "AUTHENTICATE"),
    ({"HASH_ALGO": "sha999"}, "HASH_ALGO"),
    ({"HEALTH_ENDPOINT": "health"}, "HEALTH_ENDPOINT"),
    ({"CACHE_CONTROL": "1.5"}, "CACHE_CONTROL"),
    ({"REMOTE_PACKAGE_DIRECTORY": "a/../b"}, "REMOTE_PACKAGE_DIRECTORY"),
    ({"PASSWORD_FILE": "/nonexistent/htpasswd"}, "PASSWORD_FILE"),
    ({"AUTHENTICATE": "list,update"}, "PASSWORD_FILE"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"PUSH_LOCAL_CHANGES": "sometimes"}, "PUSH_LOCAL_CHANGES"),
    ({"BUCKET_NAME": "/nonexistent/bucket"}, "BUCKET_NAME"),
    ({"LOCAL_PACKAGE_DIRECTORY": "/etc/hostname/packages"}, "LOCAL_PACKAGE_DIRECTORY"),
    ({"STORAGE_BACKEND": "gcs", "BUCKET_NAME": "gs://my-bucket"}, "BUCKET_NAME"),
    ({"STORAGE_BACKEND": "s3", "BUCKET_NAME": "my-bucket/packages"}, "BUCKET_NAME"),
    ({"MAX_UPLOAD_SIZE": "0"}, "MAX_UPLOAD_SIZE"),
    ({"MAX_UPLOAD_SIZE": "lots"}, "MAX_UPLOAD_SIZE"),
    ({"MAX_UPLOAD_SIZE": "1.5MB"}, "MAX_UPLOAD_SIZE"),
    ({"MAX_UPLOAD_SIZE": "10TB"}, "MAX_UPLOAD_SIZE"),
    ({"READY_DETAILS": "everyone"}, "READY_DETAILS"),
    ({"WELCOME": "/nonexistent/welcome.html"}, "WELCOME"),
    ({"WELCOME": "/etc"}, "WELCOME"),
    ({"PACKAGE_FILES": "copy"}, "PACKAGE_FILES"),
    ({"PACKAGE_FILES": "redirect"}, "PACKAGE_FILES"),  # the dev default: a local folder signs nothing
    ({"STORAGE_BACKEND": "local", "BUCKET_NAME": "/tmp", "PACKAGE_FILES": "redirect"}, "PACKAGE_FILES"),
    ({"CACHE_MAX_BYTES": "0"}, "CACHE_MAX_BYTES"),
    ({"CACHE_MAX_BYTES": "a lot"}, "CACHE_MAX_BYTES"),
    ({"REDIRECT_MIN_BYTES": "30 megs"}, "REDIRECT_MIN_BYTES"),
    ({"SIGNED_URL_EXPIRY": "0"}, "SIGNED_URL_EXPIRY"),
    ({"SIGNED_URL_EXPIRY": "604801"}, "SIGNED_URL_EXPIRY"),
    ({"SIGNED_URL_EXPIRY": "5m"}, "SIGNED_URL_EXPIRY"),
    ({"SIGNING_SERVICE_ACCOUNT": "index"}, "SIGNING_SERVICE_ACCOUNT"),
]


@pytest.mark.parametrize("environ, variable", BAD, ids=[f"{v}={e}" for e, v in BAD])
def test_bad_settings_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_startup(Settings.from_env(environ))
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")
    assert "\n" not in str(caught.value)


def test_local_changes_are_pushed_in_dev_only() -> None:
    assert Settings.from_env({}).push_local_changes is True
    assert Settings.from_env({"TIER": "prod", "BUCKET_NAME": "b"}).push_local_changes is False


def test_a_bad_hash_algorithm_says_what_is_expected() -> None:
    with pytest.raises(ConfigError, match="HASH_ALGO: must be a hashlib algorithm"):
        Settings.from_env({"HASH_ALGO": "garbage"})


def test_an_htpasswd_file_without_users_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "htpasswd"
    empty.write_text("")
    with pytest.raises(ConfigError, match="PASSWORD_FILE: .*no users"):
        check_startup(Settings.from_env({"PASSWORD_FILE": str(empty)}))


def test_open_index_needs_both_dots() -> None:
    assert Settings.from_env({"AUTHENTICATE": ".", "PASSWORD_FILE": "."}).authenticate == ()
    with pytest.raises(ConfigError, match="PASSWORD_FILE"):
        Settings.from_env({"PASSWORD_FILE": "."})


@pytest.mark.parametrize("value, size", [
    (None, 100 * 1024**2), ("512", 512), ("32MB", 32_000_000), ("100MiB", 104_857_600), ("1 GiB", 1 << 30),
    ("5kb", 5000),
])
def test_max_upload_size_takes_bytes_or_a_unit(value: str, size: int) -> None:
    settings = Settings.from_env({} if value is None else {"MAX_UPLOAD_SIZE": value})
    assert settings.max_upload_size == size
    assert DEFAULT_MAX_UPLOAD_SIZE == 100 * 1024**2  # PyPI's own default limit for a file


@pytest.mark.parametrize("environ, mode", [
    ({}, "mirror"),  # dev: a checkout with a disk
    ({"TIER": "prod", "STORAGE_BACKEND": "local", "BUCKET_NAME": "/tmp"}, "mirror"),
    ({"TIER": "prod", "BUCKET_NAME": "b"}, "cache"),  # App Engine / Cloud Run: memory, 32 MB responses
    ({"TIER": "prod", "STORAGE_BACKEND": "s3", "BUCKET_NAME": "b"}, "cache"),
    ({"STORAGE_BACKEND": "gcs", "BUCKET_NAME": "b"}, "mirror"),  # dev tier on a cloud bucket
    ({"TIER": "prod", "BUCKET_NAME": "b", "PACKAGE_FILES": "Redirect"}, "redirect"),
    ({"TIER": "prod", "BUCKET_NAME": "b", "PACKAGE_FILES": "mirror"}, "mirror"),
    ({"PACKAGE_FILES": "cache"}, "cache"),  # a local folder can be cached from, not signed
])
def test_package_files_default_follows_the_host(environ: dict[str, str], mode: str) -> None:
    assert Settings.from_env(environ).package_files == mode


def test_package_files_settings_defaults_and_units() -> None:
    settings = Settings.from_env({})
    assert settings.cache_max_bytes == 256 * 1024**2
    assert settings.redirect_min_bytes == 30 * 1024**2  # under App Engine's 32 MB response cap
    assert settings.signed_url_expiry == 300 and settings.signing_service_account is None
    settings = Settings.from_env({
        "CACHE_MAX_BYTES": "1GiB", "REDIRECT_MIN_BYTES": "10MB", "SIGNED_URL_EXPIRY": "604800",
        "SIGNING_SERVICE_ACCOUNT": "index@proj.iam.gserviceaccount.com",
    })
    assert settings.cache_max_bytes == 1 << 30 and settings.redirect_min_bytes == 10_000_000
    assert settings.signed_url_expiry == 604800
    assert settings.signing_service_account == "index@proj.iam.gserviceaccount.com"


def test_redirect_on_a_local_folder_says_why() -> None:
    with pytest.raises(ConfigError, match="PACKAGE_FILES: redirect needs a bucket that signs URLs"):
        Settings.from_env({"PACKAGE_FILES": "redirect"})


# An htpasswd file that pypiserver would read but cannot use: each stops the start.
BAD_HTPASSWD = [
    (b"alice:$apr1$.5LAXVmv$pv6XjgAcJ.Anwacdpj8Kz0\njust a line\n", "malformed htpasswd file (error reading line 2)"),
    # Damaged hashes: passlib raises ValueError at every login of that user, a 500.
    (b"alice:$apr1$garbage\n", "the entry of user 'alice' is not a usable hash"),
    (b"alice:$6$bad\n", "the entry of user 'alice' is not a usable hash"),
    (b"alice:$2b$12$short\n", "the entry of user 'alice' is not a usable hash: salt too small"),
    (b"alice:$apr1$salt$tooshort\n", "the entry of user 'alice' is not a usable hash"),
    (b"\xff\xfe:$apr1$.5LAXVmv$pv6XjgAcJ.Anwacdpj8Kz0\n", "cannot read htpasswd file"),  # not UTF-8
]


@pytest.mark.parametrize("content, problem", BAD_HTPASSWD, ids=[p for _, p in BAD_HTPASSWD])
def test_a_malformed_htpasswd_file_stops_the_start(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        check_startup(Settings.from_env({"PASSWORD_FILE": str(path)}))
    assert caught.value.variable == "PASSWORD_FILE" and problem in str(caught.value) and str(path) in str(caught.value)
    assert "garbage" not in str(caught.value) and "tooshort" not in str(caught.value)  # a hash is a secret


# Entries in formats passlib does not verify: stock pypiserver takes each as a plaintext
# password, so the hash string itself logs in. Each stops the start, naming its line.
UNACCEPTED_HASHES = {
    "yescrypt": "$y$j9T$F5Jx5fExrKuJdvbQpK0Zo1$7iDHlOrYh0jqN8ylDPyq0Mhd/xZq5ePzXz5WCy.vyr5",
    "argon2": "$argon2id$v=19$m=65536,t=3,p=4$c29tZXNhbHQ$RdescudvJCsgt3ub+b+dWRWJTmaaJObG",
    "ssha": "{SSHA}xJqIzzTb2ma4xfTBzCC1xFpLRbk2NzgyOA==",
    "des_crypt": "abJnggxhB/yWI",
    "plaintext": "bobs-password",
}


@pytest.mark.parametrize("stored", UNACCEPTED_HASHES.values(), ids=UNACCEPTED_HASHES.keys())
def test_an_entry_of_a_scheme_not_accepted_stops_the_start_naming_its_line(tmp_path: Path, stored: str) -> None:
    path = tmp_path / "htpasswd"
    path.write_text(f"# the team\nalice:$apr1$.5LAXVmv$pv6XjgAcJ.Anwacdpj8Kz0\n\nbob:{stored}\n")
    with pytest.raises(ConfigError) as caught:
        check_startup(Settings.from_env({"PASSWORD_FILE": str(path)}))
    message = str(caught.value)
    assert message.startswith(f"PASSWORD_FILE: htpasswd file {path}, line 4: the entry of user 'bob' is not a usable hash")
    assert "bcrypt, sha512_crypt, sha256_crypt, apr_md5_crypt, md5_crypt, ldap_sha1" in message
    assert stored not in message  # a hash is a secret


def test_a_missing_htpasswd_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"PASSWORD_FILE: no such file: {tmp_path / 'nope'}"):
        check_startup(Settings.from_env({"PASSWORD_FILE": str(tmp_path / "nope")}))


def test_an_htpasswd_path_that_is_a_folder_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"PASSWORD_FILE: cannot read htpasswd file {tmp_path}: .*Is a directory"):
        check_startup(Settings.from_env({"PASSWORD_FILE": str(tmp_path)}))


_READ_AS_NOBODY = """
import os, sys
from gcs_sync import ConfigError, Settings  # imported as root: the interpreter lives under /root
from gcs_sync.auth.startup import check_startup
os.setgroups([]); os.setgid(65534); os.setuid(65534)
try:
    check_startup(Settings.from_env({"PASSWORD_FILE": sys.argv[1], "LOCAL_PACKAGE_DIRECTORY": sys.argv[2]}))
except ConfigError as exc:
    print(exc)
    sys.exit(3)
"""


def test_an_unreadable_htpasswd_file_stops_the_start(tmp_path: Path) -> None:
    """chmod does not stop root, who runs these tests here: then the check runs in a
    child process that has dropped to ``nobody`` before reading the file."""
    with tempfile.TemporaryDirectory() as shared:  # /tmp: reachable by nobody, unlike tmp_path
        os.chmod(shared, 0o755)
        path = Path(shared) / "htpasswd"
        path.write_text("alice:$apr1$.5LAXVmv$pv6XjgAcJ.Anwacdpj8Kz0\n")
        path.chmod(0)
        packages = Path(shared) / "packages"
        packages.mkdir(mode=0o777)
        packages.chmod(0o777)
        if os.geteuid() != 0:
            with pytest.raises(ConfigError) as caught:
                check_startup(Settings.from_env({"PASSWORD_FILE": str(path), "LOCAL_PACKAGE_DIRECTORY": str(packages)}))
            message = str(caught.value)
        else:
            child = subprocess.run([sys.executable, "-c", _READ_AS_NOBODY, str(path), str(packages)],
                                   cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=60)
            assert child.returncode == 3, child.stdout + child.stderr
            message = child.stdout.strip()
    assert message.startswith(f"PASSWORD_FILE: cannot read htpasswd file {path}: ")
    assert "Permission denied" in message


def test_a_password_file_in_the_bucket_is_parsed_without_reading_it() -> None:
    """The object is read at start-up (build_app); configuration makes no network call,
    so this passes with no storage server for this bucket."""
    settings = Settings.from_env({"STORAGE_BACKEND": "gcs", "BUCKET_NAME": "my-bucket",
                                  "PASSWORD_FILE": "gs://my-users/config/htpasswd"})
    check_startup(settings)
    location = password_object(settings)
    assert location is not None and str(location) == "gs://my-users/config/htpasswd"
    assert (location.bucket, location.folder, location.name) == ("my-users", "config", "htpasswd")
    s3 = Settings.from_env({"STORAGE_BACKEND": "s3", "BUCKET_NAME": "b", "PASSWORD_FILE": "s3://b/htpasswd"})
    assert password_object(s3) is not None and (password_object(s3).folder, password_object(s3).name) == ("", "htpasswd")
    assert password_object(Settings.from_env({})) is None


BAD_PASSWORD_OBJECTS = [
    ("gcs", "s3://my-bucket/config/htpasswd", "is an object of STORAGE_BACKEND=s3, but STORAGE_BACKEND is gcs"),
    ("s3", "gs://my-bucket/config/htpasswd", "is an object of STORAGE_BACKEND=gcs, but STORAGE_BACKEND is s3"),
    ("local", "gs://my-bucket/config/htpasswd", "but STORAGE_BACKEND is local"),
    ("gcs", "gs://my-bucket", "must name an object"),
    ("gcs", "gs://my-bucket/", "must name an object"),
    ("gcs", "gs://my-bucket/config/", "must name an object"),
    ("gcs", "gs://my-bucket/config/../htpasswd", "must name an object"),
    ("s3", "s3://my-bucket//htpasswd", "must name an object"),
    ("gcs", "gs://my bucket/htpasswd", "is not a bucket name"),
    ("gcs", "file:///etc/htpasswd", "only gs:// and s3:// URLs name an object; a local file is a plain path"),
]


@pytest.mark.parametrize("backend, value, problem", BAD_PASSWORD_OBJECTS, ids=[v for _, v, _ in BAD_PASSWORD_OBJECTS])
def test_a_bad_password_object_url_names_password_file(backend: str, value: str, problem: str, tmp_path: Path) -> None:
    bucket = str(tmp_path) if backend == "local" else "my-bucket"
    with pytest.raises(ConfigError) as caught:
        check_startup(Settings.from_env({"STORAGE_BACKEND": backend, "BUCKET_NAME": bucket, "PASSWORD_FILE": value}))
    assert caught.value.variable == "PASSWORD_FILE" and problem in str(caught.value)


@pytest.mark.parametrize("value, allowed", [
    ("10.0.0.1", ("10.0.0.1",)), (" 10.0.0.1 , ::1 ", ("10.0.0.1", "::1")), ("*", ("*",)),
])
def test_forwarded_allow_ips_is_read_as_gunicorn_reads_it(value: str, allowed: tuple[str, ...]) -> None:
    assert Settings.from_env({"FORWARDED_ALLOW_IPS": value}).forwarded_allow_ips == allowed
    assert Settings.from_env({}).forwarded_allow_ips == ("127.0.0.1", "::1")  # gunicorn's default


@pytest.mark.parametrize("value", ["10.0.0.0/8", "proxy.internal", "10.0.0.1;10.0.0.2"])
def test_a_bad_forwarded_allow_ips_stops_the_start(value: str) -> None:
    with pytest.raises(ConfigError, match="FORWARDED_ALLOW_IPS: .* is not an IP address"):
        Settings.from_env({"FORWARDED_ALLOW_IPS": value})


@pytest.mark.parametrize("content, problem", [
    (b"\xff\xfe not text", "cannot read the welcome page"),
    (b"{{UNKNOWN_VARIABLE}}", "NameError"),
    (b"{{ 1 + }}", "SyntaxError"),
], ids=["not utf-8", "unknown variable", "syntax"])
def test_a_welcome_page_that_cannot_render_stops_the_start(tmp_path: Path, content: bytes, problem: str) -> None:
    # Stock pypiserver reads it at start-up too, but renders it only per request: a 500 on "/".
    page = tmp_path / "welcome.html"
    page.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        check_startup(Settings.from_env({"WELCOME": str(page)}))
    assert str(caught.value).startswith("WELCOME: ") and problem in str(caught.value)
    assert str(page) in str(caught.value) and "\n" not in str(caught.value)
