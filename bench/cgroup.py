"""A memory cgroup of its own for a benchmarked server, where this machine lets the
benchmark make one (root, with cgroup v1's memory hierarchy or cgroup v2 with the memory
controller): what a container host (App Engine, Cloud Run, a Kubernetes pod) charges the
instance, each page once and the page cache it filled included. Read beside the summed
PSS and RSS of its processes (bench/scale.py's memory row); elsewhere the row has those
two only.

    MemoryCgroup.made   a new cgroup under the hierarchy's root, or None (and why)
    .wrapped            a command that joins the cgroup, then execs the server
    .charged_mb         (anonymous memory plus page cache, anonymous) in MB, as charged now
    .remove             the cgroup, once its processes have ended
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Optional

from .progress import say

V1_ROOT = Path("/sys/fs/cgroup/memory")  # cgroup v1: the memory controller's own hierarchy
V2_ROOT = Path("/sys/fs/cgroup")  # cgroup v2: one hierarchy; the memory controller must be enabled
REMOVE_SECONDS = 10.0  # a cgroup can be removed only once the kernel has reaped its last process


class MemoryCgroup:
    def __init__(self, path: Path, version: int) -> None:
        self.path = path
        self.version = version

    @classmethod
    def made(cls, label: str) -> tuple[Optional["MemoryCgroup"], str]:
        """(a new cgroup named after ``label``, under the one this process is in, so the
        server stays within its limits), "") or (None, why there is none here)."""
        name = f"gcs-sync-bench-{label}-{uuid.uuid4().hex[:8]}"
        own = _own_cgroups()
        if "memory" in own and (V1_ROOT / "memory.stat").is_file():
            parent, version = V1_ROOT / own["memory"].lstrip("/"), 1
        elif "" in own and "memory" in _read(V2_ROOT / own[""].lstrip("/") / "cgroup.subtree_control").split():
            parent, version = V2_ROOT / own[""].lstrip("/"), 2
        else:
            return None, "no cgroup memory controller this process may use"
        try:
            (parent / name).mkdir()
        except OSError as exc:
            return None, f"cannot make a cgroup under {parent}: {exc.strerror}"
        return cls(parent / name, version), ""

    def wrapped(self, command: list[str]) -> list[str]:
        """``command``, run by a shell that first moves itself into this cgroup: every
        process it then forks (gunicorn's workers, the listing process) is charged here."""
        return ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(self.path), *command]

    def charged_mb(self) -> Optional[tuple[float, float]]:
        """(everything charged: anonymous memory and page cache, the anonymous part) in MB;
        None if the cgroup cannot be read."""
        stat = _stat(self.path / "memory.stat")
        if stat is None:
            return None
        # The same two parts in both versions (v1's usage_in_bytes is documented as fuzzy,
        # and v2's memory.current adds kernel memory, which v1 counts apart).
        if self.version == 1:  # the hierarchical totals
            anonymous, cache = stat.get("total_rss", 0), stat.get("total_cache", 0)
        else:
            anonymous, cache = stat.get("anon", 0), stat.get("file", 0)
        return (anonymous + cache) / 1e6, anonymous / 1e6

    def remove(self) -> None:
        """Remove the cgroup, waiting up to REMOVE_SECONDS for its last processes to go;
        left in place (and said) if they do not."""
        deadline = time.monotonic() + REMOVE_SECONDS
        while True:
            try:
                self.path.rmdir()
                return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    say(f"cgroup {self.path} left in place: {exc}")
                    return
                time.sleep(0.2)


def _own_cgroups() -> dict[str, str]:
    """This process's cgroup paths by controller ("" for cgroup v2's one hierarchy), from
    /proc/self/cgroup ("ID:CONTROLLERS:PATH" lines)."""
    own: dict[str, str] = {}
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    return own


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _stat(path: Path) -> Optional[dict[str, int]]:
    lines = _read(path).splitlines()
    if not lines:
        return None
    return {key: int(value) for key, value in (line.split() for line in lines if len(line.split()) == 2)}
