"""What the results were measured on."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def code_version(repo: Path) -> str:
    """The commit measured, and whether the product's files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "gcs_sync", "main.py", "gunicorn.conf.py", "requirements.txt")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"git {commit}" + (" with uncommitted changes to the product" if dirty else "")


def describe() -> dict[str, str]:
    return {
        "cores": f"{usable_cores()} usable ({os.cpu_count()} online)",
        "cpu": cpu_model(),
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "code": code_version(Path(__file__).resolve().parents[1]),
        "versions": ", ".join(f"{p} {_version(p)}" for p in ("pypiserver", "gunicorn", "google-cloud-storage",
                                                              "gcp-storage-emulator")),
    }
