"""Real processes for end-to-end tests: the app under gunicorn, twine, pip and uv."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from .wait import eventually

REPO = Path(__file__).resolve().parents[1]
USER, PASSWORD = "alice", "s3cret"
BOOT_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """The parent's environment without anything that would send a client elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_", "TWINE_"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", UV_NO_CONFIG="1")
    env.update(extra)
    return env


@dataclasses.dataclass
class Instance:
    url: str
    folder: Path
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str, auth: bool = False) -> tuple[int, bytes]:
        request = urllib.request.Request(self.url + path)
        if auth:
            import base64

            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> None:
        """gunicorn's quick shutdown (SIGQUIT): the workers exit at once and worker_exit
        still runs; a graceful SIGTERM waits up to a second more for each worker's poll loop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def links(instance: Instance, project: str) -> dict[str, str]:
    """The files on a project's page and the sha256 in each link; {} if the page is not 200."""
    status, body = instance.get(f"/simple/{project}/")
    return parse_links(body) if status == 200 else {}


def parse_links(page: bytes) -> dict[str, str]:
    """The files on a project page and the sha256 in each link."""
    return dict(re.findall(r'href="[^"#]*/packages/([^"#]+)#sha256=([0-9a-f]+)"', page.decode()))


def page_text(body: bytes, limit: int = 300) -> str:
    """An error page as one line of text (Bottle's error pages are HTML with a <style>)."""
    text = re.sub(r"<style.*?</style>|<[^>]+>", " ", body.decode(errors="replace"), flags=re.S)
    return " ".join(text.split())[:limit]


def start_instance(env: dict[str, str], folder: Path, log_dir: Path, workers: int = 2, timeout: int = 30) -> Instance:
    port = free_port()
    log_path = log_dir / f"gunicorn-{port}.log"
    full_env = clean_env({**env, "LOCAL_PACKAGE_DIRECTORY": str(folder)})
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "main:get_app()", "--chdir", str(REPO),
             "-b", f"127.0.0.1:{port}", "-w", str(workers), "--timeout", str(timeout)],
            env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
        )
    instance = Instance(f"http://127.0.0.1:{port}", folder, process, log_path)

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{instance.log()}")
        # Every worker has built its app (each logs "serving ... from"), and one answers.
        if instance.log().count(f"from {folder} (backend") < workers:
            return False
        try:
            return instance.get("/health")[0] == 200
        except OSError:
            return False

    if eventually(up, BOOT_SECONDS):
        return instance
    instance.stop()
    raise RuntimeError(f"gunicorn did not answer /health within {BOOT_SECONDS}s:\n{instance.log()}")


def run(args: list[str], env: Optional[dict[str, str]] = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=clean_env(env or {}), capture_output=True, text=True, timeout=timeout)


def twine_upload(url: str, *files: Path, password: str = PASSWORD) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "twine", "upload", "--non-interactive", "--disable-progress-bar",
                "--repository-url", url + "/", "-u", USER, "-p", password, *map(str, files)])


def new_venv(folder: Path) -> Path:
    """A throwaway virtual environment; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    return folder / "bin" / "python"


def pip_install(python: Path, index_url: str, requirement: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-cache-dir",
                "--index-url", index_url, requirement])


def uv_install(python: Path, index_url: str, requirement: str, cache: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "uv", "pip", "install", "--python", str(python),
                "--index-url", index_url, "--cache-dir", str(cache), requirement])


def upload_form(url: str, filename: str, data: bytes, user_agent: str = "gcs-sync-tests",
                user: str = USER, password: str = PASSWORD) -> tuple[int, str]:
    """A raw ``file_upload`` POST, as a non-twine client would send it."""
    import base64

    boundary = "gcssyncboundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name=":action"\r\n\r\nfile_upload\r\n'.encode(),
        (f'--{boundary}\r\nContent-Disposition: form-data; name="content"; filename="{filename}"\r\n'
         "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n",
        f"--{boundary}--\r\n".encode(),
    ]
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(url + "/", data=b"".join(parts), method="POST", headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Authorization": f"Basic {token}", "User-Agent": user_agent,
    })
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def remove_form(url: str, name: str, version: str) -> tuple[int, str]:
    import base64
    import urllib.parse

    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    body = urllib.parse.urlencode({":action": "remove_pkg", "name": name, "version": version}).encode()
    request = urllib.request.Request(url + "/", data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Basic {token}",
    })
    try:
        with urllib.request.urlopen(request, timeout=60) as reply:
            return reply.status, reply.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def uv_publish(url: str, *files: Path) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "uv", "publish", "--publish-url", url + "/", "-u", USER, "-p", PASSWORD,
                *map(str, files)])


def raw_http(url: str, request: bytes, *, half_close: bool = True, timeout: float = 30) -> tuple[int, bytes]:
    """Send bytes exactly as given (clients normalise paths and frame bodies; a hostile
    one does not) and read the reply to the end: (status, body); status 0 if the server
    closed without answering. ``half_close`` ends the client's side after the request, so
    a body shorter than its Content-Length reaches the server's end of input; without it,
    the server may keep the connection open (keepalive), so the reply ends with the body
    its Content-Length declares."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        reply = b""
        while not (not half_close and _whole(reply)) and (chunk := sock.recv(1 << 16)):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return (int(match[1]) if match else 0), body


def _whole(reply: bytes) -> bool:
    """Whether ``reply`` holds a head and all the body its Content-Length declares."""
    head, separator, body = reply.partition(b"\r\n\r\n")
    length = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    return bool(separator) and length is not None and len(body) >= int(length[1])
