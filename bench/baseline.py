"""The previous design as a third server: a git worktree of ``--baseline REV`` (default
41c5ef9, the code before issue 11's metadata records), run as ``main:get_app()`` under
gunicorn with cwd and PYTHONPATH = that worktree, so it imports its own ``gcs_sync``
(checked: every worker logs the file it imported, see gunicorn_hooks.py).

Its pre-sync runs that tree's code too, in a subprocess (its state format is not this
tree's). The worktree is made with ``git worktree add --detach`` inside the benchmark's
working folder and removed on the way out, whatever happened (Ctrl-C too). If git or the
commit is not available, ``baseline_tree`` says so and yields None: the run goes on
without the baseline.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from .errors import BenchError
from .progress import say
from .servers import REPO
from .wrapper import PRODUCT_VARIABLES

DEFAULT_REV = "41c5ef9"
GIT_SECONDS = 120

# Run in the worktree's own interpreter process: its gcs_sync, its state format.
_PRESYNC = """
import json, logging, sys, time
sys.path.insert(0, sys.argv[1])
import gcs_sync
from gcs_sync import Settings, build_app
logging.getLogger("gcs_sync").setLevel(logging.ERROR)
import os
started = time.monotonic()
client = build_app(Settings.from_env(os.environ)).config["gcs_sync.client"]
client.sync()
print(json.dumps({"seconds": time.monotonic() - started, "source": gcs_sync.__file__,
                  "calls": dict(client.driver.calls)}))
"""


def label(rev: str) -> str:
    return f"wrapper@{rev}"


@dataclasses.dataclass(frozen=True)
class Baseline:
    rev: str
    tree: Path  # the worktree

    @property
    def name(self) -> str:
        return label(self.rev)


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=GIT_SECONDS)


@contextlib.contextmanager
def baseline_tree(rev: Optional[str], workdir: Path) -> Iterator[Optional[Path]]:
    """A detached worktree of ``rev`` in ``workdir``, removed on the way out; None (said on
    stderr) if ``rev`` is None, or git or the commit is not available."""
    if rev is None:
        yield None
        return
    tree = workdir / f"baseline-{rev}"
    try:
        made = _git("worktree", "add", "--detach", str(tree), rev)
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"baseline {rev}: SKIPPED, git is not available ({type(exc).__name__}: {exc})")
        yield None
        return
    if made.returncode != 0:
        say(f"baseline {rev}: SKIPPED, `git worktree add --detach {tree} {rev}` failed: "
            f"{(made.stderr or made.stdout).strip()}")
        yield None
        return
    try:
        say(f"baseline {rev}: worktree at {tree}")
        yield tree
    finally:
        removed = _git("worktree", "remove", "--force", str(tree))
        if removed.returncode != 0:
            say(f"baseline {rev}: could not remove the worktree {tree}: {removed.stderr.strip()}")
        _git("worktree", "prune")


def environment(tree: Path, env: dict[str, str]) -> dict[str, str]:
    """The baseline's process environment: no product variable from the caller's shell,
    ``env``, and PYTHONPATH = the worktree alone."""
    import os

    result = {k: v for k, v in os.environ.items() if k not in PRODUCT_VARIABLES}
    result.update(env)
    result["PYTHONPATH"] = str(tree)
    return result


def presync(tree: Path, env: dict[str, str]) -> float:
    """The baseline fills its local folder with its own code (a subprocess in the worktree);
    its seconds. A BenchError if it failed or imported gcs_sync from anywhere else."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _PRESYNC, str(tree)], cwd=tree, env=environment(tree, env),
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise BenchError(f"baseline pre-sync in {tree} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise BenchError(f"baseline pre-sync in {tree} printed no report: {done.stdout[-1000:]!r}") from exc
    expected = str(tree.resolve() / "gcs_sync" / "__init__.py")
    if report["source"] != expected:
        raise BenchError(f"baseline pre-sync imported gcs_sync from {report['source']}, not {expected}")
    say(f"baseline pre-sync: {report['seconds']:.1f}s with {report['source']} "
        f"({time.monotonic() - started:.1f}s with the interpreter's start)")
    return float(report["seconds"])
