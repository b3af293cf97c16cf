"""The deploy recipes, tried as far as this machine allows (README: "Deploying").

There is no container engine here, so the Dockerfile is linted (hadolint, from PyPI) and
the files it copies into the image are started on their own, with the image's command and
environment: what the image would run, short of the base image and the pip step (which
the test requirements' install has done for this Python).
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from gcs_sync import Settings
from gcs_sync.auth.startup import check_startup
from testkit.servers import REPO, clean_env, free_port
from testkit.wait import eventually

HADOLINT = Path(sys.executable).with_name("hadolint")


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_dockerfile_passes_hadolint_at_every_level() -> None:
    lint = subprocess.run([str(HADOLINT), "--failure-threshold", "style", "Dockerfile"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.slow
def test_the_files_the_image_copies_start_the_server_with_the_image_command(tmp_path: Path) -> None:
    app_dir, bucket, packages = tmp_path / "app", tmp_path / "bucket", tmp_path / "packages"
    app_dir.mkdir()
    bucket.mkdir()
    env: dict[str, str] = {}
    command: list[str] = []
    for instruction, argument in dockerfile_instructions():
        if instruction == "COPY":
            *sources, _ = argument.split()
            for source in sources:
                path = REPO / source
                copy = shutil.copytree if path.is_dir() else shutil.copy2
                copy(path, app_dir / source.rstrip("/"))
        elif instruction == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(argument)))
        elif instruction == "CMD":
            command = json.loads(argument)
    assert command[0] == "gunicorn" and env["TIER"] == "prod"
    assert env["FORWARDED_ALLOW_IPS"] == "*"  # Cloud Run's front end sets X-Forwarded-Proto
    port = free_port()
    env.update(PORT=str(port), STORAGE_BACKEND="local", BUCKET_NAME=str(bucket),
               LOCAL_PACKAGE_DIRECTORY=str(packages), READY_DETAILS="public")  # to read "backend" back
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        # The image's command, run by this Python (the image's PATH has gunicorn on it).
        server = subprocess.Popen([sys.executable, "-m", *command], cwd=app_dir, env=clean_env(env),
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        answers: list[dict] = []

        def answered() -> bool:
            if server.poll() is not None:
                return True  # it exited: nothing to wait for
            try:  # gunicorn.conf.py binds 0.0.0.0:$PORT, as Cloud Run expects
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as reply:
                    answers.append(json.loads(reply.read()))
            except OSError:
                return False
            return True

        eventually(answered, 30, interval=0.2)
        ready = answers[0] if answers else None
        assert ready is not None, log.read_text()
        assert ready["status"] == "ok" and ready["backend"] == f"file://{bucket}/packages/"
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert server.returncode == 0, log.read_text()


def test_the_image_context_holds_exactly_what_the_dockerfile_copies() -> None:
    ignore = [line for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {source.rstrip("/") for instruction, argument in dockerfile_instructions()
              if instruction == "COPY" for source in argument.split()[:-1]}
    assert ignore[0] == "*" and copied == allowed


def test_app_yaml_is_a_valid_production_configuration(tmp_path: Path) -> None:
    app = yaml.safe_load((REPO / "app.yaml").read_text())
    assert app["entrypoint"] == "gunicorn -b :$PORT 'main:get_app()'"
    assert "warmup" in app["inbound_services"]  # /_ah/warmup waits for the first sync
    variables = {k: str(v).replace("REPLACE-WITH-YOUR-BUCKET", "my-bucket") for k, v in app["env_variables"].items()}
    variables["LOCAL_PACKAGE_DIRECTORY"] = str(tmp_path / "packages")  # /tmp/packages on App Engine
    settings = Settings.from_env(variables)
    check_startup(settings)
    assert (settings.tier, settings.storage_backend, settings.bucket_name) == ("prod", "gcs", "my-bucket")
    assert settings.max_upload_size == 32 * 1024**2 and not settings.push_local_changes
    assert settings.password_file == "gs://my-bucket/config/htpasswd"  # users kept in the bucket
    assert settings.forwarded_allow_ips == ("*",)  # only App Engine's front end reaches the instance
    # Files from the bucket on demand, large ones redirected: /tmp holds the cache only.
    assert settings.package_files == "cache" and settings.cache_max_bytes == 256 * 1024**2
    assert settings.redirect_min_bytes < 32_000_000  # under App Engine's response cap
