"""The README's quick start, run as a newcomer would: its own lines, taken from README.md
(so the two cannot drift apart), in a copy of the repository with nothing installed.

The lines are run as written, with two things filled in: the port (gunicorn's bind comes
from ``GUNICORN_CMD_ARGS``, and ``127.0.0.1:8080`` in the client lines becomes that port,
so the test does not need 8080 free) and NAME (a wheel this test builds into ``dist/``).
The installs are real ``pip install``s into new venvs, from the machine's pip
configuration (its index or mirror), as a newcomer's would be.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from testkit.packages import make_wheel
from testkit.servers import REPO, free_port
from testkit.wait import eventually

PROJECT = "quickstart-demo"
BOOT_SECONDS = 240  # a venv and `pip install -r requirements.txt` first: 14 s here from a local mirror
STEP_SECONDS = 240


def quick_start_blocks() -> list[str]:
    """The fenced sh blocks of README.md's "## Quick start" section, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, re.S | re.M)


def newcomer_env() -> dict[str, str]:
    """A shell's environment without this project's settings or a client's own overrides."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "SSL_CERT_FILE", "PYENV_ROOT", "PYENV_VERSION")
    return {name: os.environ[name] for name in keep if name in os.environ}


@pytest.mark.slow
def test_the_readme_quick_start_uploads_and_installs(tmp_path: Path) -> None:
    blocks = quick_start_blocks()
    # 1: start the server (one line); 2: the client's lines; 3: the tests (.ci/run runs it).
    assert len(blocks) == 3 and "requirements-test.txt" in blocks[2]
    server_line, client_lines = blocks[0].strip(), blocks[1].strip().splitlines()
    assert "\n" not in server_line and "twine upload" in blocks[1] and "pip install" in blocks[1]

    checkout = tmp_path / "checkout"
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (REPO / name).is_file():
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, checkout / name)
    make_wheel(checkout / "dist", PROJECT, "1.0")

    port = free_port()
    env = newcomer_env()
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        server = subprocess.Popen(
            ["bash", "-c", server_line], cwd=checkout, stdout=log_file, stderr=subprocess.STDOUT,
            env={**env, "GUNICORN_CMD_ARGS": f"-b 127.0.0.1:{port}"}, start_new_session=True,
        )
    try:
        def answers() -> bool:
            assert server.poll() is None, log_path.read_text(errors="replace")
            return _answers(f"http://127.0.0.1:{port}/health")

        assert eventually(answers, BOOT_SECONDS, interval=0.5), log_path.read_text(errors="replace")
        for line in client_lines:
            line = line.replace("127.0.0.1:8080", f"127.0.0.1:{port}").replace(" NAME", f" {PROJECT}")
            done = subprocess.run(["bash", "-c", line], cwd=checkout, env=env, capture_output=True, text=True,
                                  timeout=STEP_SECONDS)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        # What the user sees: the package installed from the index and in the "bucket".
        installed = subprocess.run(["client/bin/python", "-c", "import quickstart_demo; print(quickstart_demo.VALUE)"],
                                   cwd=checkout, capture_output=True, text=True, timeout=60)
        assert installed.stdout.strip() == f"{PROJECT} 1.0"
        assert (checkout / "data" / "bucket" / "packages" / "quickstart_demo-1.0-py3-none-any.whl").is_file()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def test_ci_runs_the_readme_test_commands() -> None:
    """.ci/run runs the README's test lines (the quick start's third block), as written."""
    lines = quick_start_blocks()[2].strip().splitlines()
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert lines and all(line in ci for line in lines)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError):
        return False
