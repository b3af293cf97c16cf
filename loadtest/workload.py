"""The load: client threads against instances A and B for a fixed time, every operation
recorded in a ``Ledger``.

- ``--clients`` HTTP client threads, each picking at random (weights in ``HTTP_MIX``):
  a raw upload of a new file (``upload``), the same new filename through A and B at once
  (``pair-upload``, two operations), a removal of a file accepted at least ``ELIGIBLE_AGE``
  ago (``remove``), a project page (``get-simple``) or a download (``get-file``) of any
  file ever tried, in flight and removed ones included.
- One tools thread, slow and sequential: ``twine upload`` of a new wheel (``twine-upload``),
  a same-name pair of wheels through A and B at once with twine (``twine-pair``), and
  ``pip install`` of a wheel accepted at least ``ELIGIBLE_AGE`` ago, through the instance
  that did not take the upload, into a throwaway venv (``pip-install``).

Every request has a timeout (testkit/servers.py: 30 s reads, 60 s writes, 180 s tools), and
no operation starts after the deadline (but the tools thread finishes its round), so
the run is bounded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import itertools
import random
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Union

from testkit.packages import make_wheel, sdist_bytes
from testkit.servers import (
    Instance,
    new_venv,
    page_text,
    parse_links,
    pip_install,
    remove_form,
    twine_upload,
    upload_form,
)

SYNC_INTERVAL = 1.0
FULL_SYNC_INTERVAL = 2.0
# README's freshness bound: a request that starts SYNC_INTERVAL after a change made through
# the index, plus the duration of one check, on any instance, sees it. Reads never wait
# for a check (it runs in the background and they get the last complete view), so the
# margin is one check under this load (a listing and its transfers) and the client's
# own clock reading.
BOUND = SYNC_INTERVAL + 2.0
# Removals and installs pick only files accepted at least this long ago, so that both
# instances must know them: a 404 there is a failure, not bad timing.
ELIGIBLE_AGE = SYNC_INTERVAL + 1.0

DISTINCT_PROJECTS = [f"load{c}" for c in "abcdefgh"]  # raw uploads: loadc-1.37.tar.gz
PAIR_PROJECT = "lclash"  # raw same-name pairs: lclash-3.0.tar.gz
WHEEL_PROJECT = "lwheel"  # twine uploads, pip installs: lwheel-3.0-py3-none-any.whl
TWINE_PAIR_PROJECT = "ltwinepair"  # same-name pairs with twine
PROJECTS = DISTINCT_PROJECTS + [PAIR_PROJECT, WHEEL_PROJECT, TWINE_PAIR_PROJECT]

HTTP_MIX = {"get-file": 35, "get-simple": 30, "upload": 20, "remove": 8, "pair-upload": 4}
READS = ("get-file", "get-simple")


def _text_of(body: bytes) -> str:
    """The reason in one of Bottle's error pages, as one line."""
    text = html.unescape(page_text(body))
    return text.split("caused an error:", 1)[-1].strip()


Status = Union[int, str]  # an HTTP status, or "error: ..." when there was no answer


@dataclasses.dataclass
class Op:
    kind: str
    instance: str  # "A" or "B"
    target: str  # filename, or project for get-simple
    status: Status = 0
    started: float = 0.0  # seconds since the load began
    ended: float = 0.0
    detail: str = ""  # why, for anything unexpected
    digest: Optional[str] = None  # get-file: sha256 of a 200's body
    listed: Optional[dict[str, str]] = None  # get-simple: filename -> sha256 on a 200 page


@dataclasses.dataclass
class Attempt:
    """One upload of one file through one instance."""

    filename: str
    op: Op
    data: bytes
    pair: Optional[str] = None  # the filename, for both halves of a same-name pair

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def expected_refusal(self) -> int:
        return 400 if self.op.kind == "twine-pair" else 409  # pypiserver answers twine with 400


def op_record(op: Op) -> dict:
    """One line of operations.jsonl (a page's links as their number only)."""
    record = dataclasses.asdict(op)
    record["listed"] = None if op.listed is None else len(op.listed)
    record["started"], record["ended"] = round(op.started, 4), round(op.ended, 4)
    return record


class Ledger:
    """Everything that happened, shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: list[Op] = []
        self.attempts: list[Attempt] = []
        self.accepted: dict[str, Attempt] = {}  # filename -> the upload that got 200 (the first one)
        self.removals: dict[str, Op] = {}  # filename -> its removal (each file is removed at most once)
        self.tried: list[str] = []  # every filename ever uploaded, for reads
        self.reserved: set[str] = set()  # never removed: wheels to install, pair winners

    def add_op(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)

    def add_attempt(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)
            self.ops.append(attempt.op)
            if attempt.op.status == 200 and attempt.filename not in self.accepted:
                self.accepted[attempt.filename] = attempt

    def note_tried(self, filename: str, reserved: bool) -> None:
        with self.lock:
            self.tried.append(filename)
            if reserved:
                self.reserved.add(filename)

    def claim_removable(self, rng: random.Random, now: float) -> Optional[str]:
        """A file accepted at least ELIGIBLE_AGE ago, never removed, not reserved; it is
        marked as being removed."""
        with self.lock:
            candidates = [
                name for name, attempt in self.accepted.items()
                if name not in self.reserved and name not in self.removals
                and attempt.op.ended <= now - ELIGIBLE_AGE
            ]
            if not candidates:
                return None
            name = rng.choice(candidates)
            self.removals[name] = Op("remove", "", name)  # replaced by the real one when done
            return name

    def set_removal(self, op: Op) -> None:
        with self.lock:
            self.removals[op.target] = op
            self.ops.append(op)

    def installable(self, now: float, done: set[str]) -> Optional[Attempt]:
        """The newest twine-uploaded wheel accepted at least ELIGIBLE_AGE ago, not installed yet."""
        with self.lock:
            ready = [a for a in self.accepted.values()
                     if a.op.kind == "twine-upload" and a.filename not in done and a.op.ended <= now - ELIGIBLE_AGE]
        return max(ready, key=lambda a: a.op.ended, default=None)

    def accepted_pending(self, done: set[str]) -> list[Attempt]:
        with self.lock:
            return [a for a in self.accepted.values() if a.op.kind == "twine-upload" and a.filename not in done]


def _twine_status(result: subprocess.CompletedProcess) -> tuple[Status, str]:
    output = result.stdout + result.stderr
    if result.returncode == 0:
        return 200, ""
    found = re.search(r"HTTPError: (\d{3})", output)
    detail = " ".join(output.split())[-300:]
    return (int(found.group(1)), detail) if found else (f"error: twine exited {result.returncode}", detail)


class Workload:
    def __init__(self, instances: dict[str, Instance], workdir: Path, seconds: float, clients: int,
                 seed: int) -> None:
        self.instances = instances
        self.workdir = workdir
        self.seconds = seconds
        self.clients = clients
        self.seed = seed
        self.ledger = Ledger()
        self._versions = itertools.count(1)
        self._pairs = itertools.count(1)
        self._wheels = itertools.count(1)
        self._venvs = itertools.count(1)
        self.t0 = 0.0
        self.deadline = 0.0
        self.stuck_threads: list[str] = []

    # -- timing --------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _timed(self, op: Op, call: Callable[[], Status]) -> Op:
        op.started = self.now()
        try:
            op.status = call()
        except Exception as exc:  # no answer (OSError, HTTPException, a tool's timeout), or a bug here
            op.status = f"error: {type(exc).__name__}"
            op.detail = str(exc)[:300]
        op.ended = self.now()
        return op

    def other(self, name: str) -> str:
        return "B" if name == "A" else "A"

    # -- HTTP operations -----------------------------------------------------------

    def _upload(self, kind: str, name: str, filename: str, data: bytes, pair: Optional[str] = None) -> Attempt:
        op = Op(kind, name, filename)

        def call() -> Status:
            status, text = upload_form(self.instances[name].url, filename, data)
            if status != 200:
                op.detail = _text_of(text.encode())
            return status

        attempt = Attempt(filename, self._timed(op, call), data, pair)
        self.ledger.add_attempt(attempt)
        return attempt

    def upload(self, rng: random.Random) -> None:
        project, version = rng.choice(DISTINCT_PROJECTS), f"1.{next(self._versions)}"
        filename = f"{project}-{version}.tar.gz"
        self.ledger.note_tried(filename, reserved=False)
        # A real sdist (uploads are opened and checked), of 1-32 KB of incompressible filler.
        data = sdist_bytes(project, version, filler=rng.randbytes(rng.randint(1_000, 32_000)))
        self._upload("upload", rng.choice("AB"), filename, data)

    def pair_upload(self, rng: random.Random) -> None:
        version = f"{next(self._pairs)}.0"
        filename = f"{PAIR_PROJECT}-{version}.tar.gz"
        self.ledger.note_tried(filename, reserved=True)
        size = rng.randint(1_000, 32_000)
        # Real sdists of one name and size, with other bytes.
        contents = {name: sdist_bytes(PAIR_PROJECT, version, value=name, filler=rng.randbytes(size)) for name in "AB"}
        self._at_once({name: lambda name=name: self._upload("pair-upload", name, filename, contents[name], filename)
                       for name in "AB"})

    def _at_once(self, calls: dict[str, Callable[[], object]]) -> None:
        """Run one call per instance in its own thread, released together."""
        barrier = threading.Barrier(len(calls), timeout=30)

        def released(call: Callable[[], object]) -> None:
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            call()

        threads = [threading.Thread(target=released, args=(call,), name=f"pair-{name}", daemon=True)
                   for name, call in calls.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=200)  # each call has its own, shorter, timeout
            if thread.is_alive():
                self.stuck_threads.append(thread.name)

    def remove(self, rng: random.Random) -> None:
        filename = self.ledger.claim_removable(rng, self.now())
        if filename is None:
            return
        project, version = filename.removesuffix(".tar.gz").split("-")
        op = Op("remove", rng.choice("AB"), filename)

        def call() -> Status:
            status, text = remove_form(self.instances[op.instance].url, project, version)
            if status != 200:
                op.detail = _text_of(text.encode())
            return status

        self.ledger.set_removal(self._timed(op, call))

    def get_simple(self, rng: random.Random) -> None:
        op = Op("get-simple", rng.choice("AB"), rng.choice(PROJECTS))
        instance = self.instances[op.instance]

        def call() -> Status:
            status, body = instance.get(f"/simple/{op.target}/")
            if status == 200:
                op.listed = parse_links(body)
            else:
                op.detail = _text_of(body)
            return status

        self.ledger.add_op(self._timed(op, call))

    def get_file(self, rng: random.Random) -> None:
        with self.ledger.lock:
            if not self.ledger.tried:
                return
            filename = rng.choice(self.ledger.tried)
        op = Op("get-file", rng.choice("AB"), filename)
        instance = self.instances[op.instance]

        def call() -> Status:
            status, body = instance.get(f"/packages/{filename}")
            if status == 200:
                op.digest = hashlib.sha256(body).hexdigest()
            else:
                op.detail = _text_of(body)
            return status

        self.ledger.add_op(self._timed(op, call))

    def http_client(self, index: int) -> None:
        rng = random.Random(f"{self.seed}-{index}")
        kinds, weights = zip(*HTTP_MIX.items())
        actions = {kind: getattr(self, kind.replace("-", "_")) for kind in kinds}
        while time.monotonic() < self.deadline:
            actions[rng.choices(kinds, weights)[0]](rng)

    # -- tools: twine and pip --------------------------------------------------------

    def twine_upload(self) -> None:
        k = next(self._wheels)
        name = "AB"[k % 2]
        wheel = make_wheel(self.workdir / "dist" / f"w{k}", WHEEL_PROJECT, f"{k}.0", value=f"{WHEEL_PROJECT} {k}")
        self.ledger.note_tried(wheel.name, reserved=True)
        self._twine("twine-upload", name, wheel)

    def _twine(self, kind: str, name: str, wheel: Path, pair: Optional[str] = None) -> None:
        op = Op(kind, name, wheel.name)

        def call() -> Status:
            status, op.detail = _twine_status(twine_upload(self.instances[name].url, wheel))
            return status

        self.ledger.add_attempt(Attempt(wheel.name, self._timed(op, call), wheel.read_bytes(), pair))

    def twine_pair(self) -> None:
        k = next(self._pairs)
        wheels = {name: make_wheel(self.workdir / "dist" / f"p{k}{name}", TWINE_PAIR_PROJECT, f"{k}.0",
                                   value=f"through {name}") for name in "AB"}
        self.ledger.note_tried(wheels["A"].name, reserved=True)
        self._at_once({name: lambda name=name: self._twine("twine-pair", name, wheels[name], wheels[name].name)
                       for name in "AB"})

    def pip_install(self, installed: set[str]) -> None:
        """Install the newest wheel accepted long enough ago, waiting for one (at most
        ELIGIBLE_AGE) if the only candidates are newer."""
        wait_until = time.monotonic() + ELIGIBLE_AGE + 0.5
        attempt = self.ledger.installable(self.now(), installed)
        while attempt is None and time.monotonic() < wait_until and self.ledger.accepted_pending(installed):
            time.sleep(0.1)
            attempt = self.ledger.installable(self.now(), installed)
        if attempt is None:
            return
        installed.add(attempt.filename)
        version = attempt.filename.split("-")[1]
        op = Op("pip-install", self.other(attempt.op.instance), attempt.filename)
        venv = self.workdir / "venvs" / f"v{next(self._venvs)}"

        def call() -> Status:
            try:
                python = new_venv(venv)
                result = pip_install(python, self.instances[op.instance].url + "/simple/", f"{WHEEL_PROJECT}=={version}")
                if result.returncode != 0:
                    op.detail = " ".join((result.stdout + result.stderr).split())[-400:]
                    return f"error: pip exited {result.returncode}"
                probe = subprocess.run([str(python), "-c", f"import {WHEEL_PROJECT}; print({WHEEL_PROJECT}.VALUE)"],
                                       capture_output=True, text=True, timeout=60)
                value = probe.stdout.strip()
                if value != f"{WHEEL_PROJECT} {version.split('.')[0]}":
                    op.detail = f"installed, but the module says {value!r} {probe.stderr[-200:]!r}"
                    return "error: wrong code installed"
                return 200
            finally:
                shutil.rmtree(venv, ignore_errors=True)

        self.ledger.add_op(self._timed(op, call))

    def tools_client(self) -> None:
        """Rounds of a twine upload, a twine pair and a pip install until the deadline; past
        it, a round goes on only with what has not been done once yet, so that even a
        short run does each."""
        installed: set[str] = set()
        done: set[str] = set()
        steps = {"twine-upload": self.twine_upload, "twine-pair": self.twine_pair,
                 "pip-install": lambda: self.pip_install(installed)}
        while time.monotonic() < self.deadline:
            for kind, step in steps.items():
                if time.monotonic() < self.deadline or kind not in done:
                    step()
                    done.add(kind)

    # -- the run -------------------------------------------------------------------

    def run(self) -> float:
        """Run the load; return its length in seconds (from the start to the last answer,
        a little past ``seconds``: a tool started before the deadline finishes)."""
        self.t0 = time.monotonic()
        self.deadline = self.t0 + self.seconds
        threads = [threading.Thread(target=self.http_client, args=(i,), name=f"client-{i}", daemon=True)
                   for i in range(self.clients)]
        threads.append(threading.Thread(target=self.tools_client, name="tools", daemon=True))
        for thread in threads:
            thread.start()
        join_by = self.deadline + 400  # past every request's own timeout
        for thread in threads:
            thread.join(timeout=max(0.0, join_by - time.monotonic()))
            if thread.is_alive():
                self.stuck_threads.append(thread.name)
        return max((op.ended for op in self.ledger.ops), default=self.now())
