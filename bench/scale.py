"""``python -m bench scale``: the issue-13 figures, for this checkout ("now") and the design
the issue starts from ("today", a git worktree of ``--baseline``, default 5b48c80) in the
same run, and for devpi-server and simple-repository-server where the figure is theirs too.

Prints a Markdown table (figure | today | now | now/today | goal | met | peers) to stdout and
writes it to ``--out``/results.md, with every measurement as JSON rows in results.json.
bench/README.md ("Scale") says how each figure is measured. ``--quick`` is a smoke run
(small sizes, no peers) for tests/test_bench.py.

Each design runs its own code: gunicorn ``main:get_app()`` with cwd and PYTHONPATH = its
tree, and the in-process figures through ``bench/scale_probe.py`` in a subprocess with that
tree first on sys.path. A setting today's design does not have (``PACKAGE_FILES``,
``CACHE_MAX_BYTES``) is given only to a design whose ``gcs_sync/config.py`` names it; the
row says which mode ran.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, Optional

from testkit.fault_proxy import FaultProxy, OneWritePerSecond
from testkit.storage_servers import patched_environ

from . import load, machine, peers
from .baseline import Baseline, baseline_tree
from .baseline import environment as baseline_environment
from .cgroup import MemoryCgroup
from .compare import WRITABLE, ServerRun, wrapper_server
from .emulator import PROJECT, Emulator, running_emulator
from .errors import BenchError
from .progress import say
from .repository import MAX_PROJECTS, PROBE_PROJECT, Repository, generate, write_wheel
from .servers import REPO, WRAPPER_APP, Server, environment, launched, wait_until_ready
from .wrapper import PRODUCT_VARIABLES, wrapper_env

DEFAULT_REV = "5b48c80"  # the commit issue 13 starts from
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "scale"
PROBE = Path(__file__).resolve().with_name("scale_probe.py")
NOW = "now"
PARTS = ("elsewhere", "cold", "peers", "cache", "throttle", "p50")
PEERS = ("devpi", "srs")
# option: (full run, --quick)
PROFILES: dict[str, tuple[object, object]] = {
    "elsewhere_files": (100_000, 300),
    "elsewhere_rounds": (3, 1),
    "scale_files": (50_000, 300),
    "scale_seconds": (120.0, 1.0),
    "memory_seconds": (65.0, 2.0),
    "cache_files": (400, 8),
    "cache_mb": (5, 1),
    "cache_bound_mb": (200, 3),
    "throttle_uploads": (30, 4),
    "p50_files": (10_000, 300),
    "p50_seconds": (3.0, 0.5),
    "peers": (",".join(PEERS), "none"),
    "peer_load_seconds": (900.0, 60.0),
}
COLD_SECONDS = 900
BOOT_SECONDS = 120
THROTTLE_CLIENTS = 6
THROTTLE_PROJECTS = 5
CACHE_PROJECTS = 20
CACHE_CLIENTS = 4
SAMPLE_SECONDS = 0.2
MEMORY_SAMPLE_SECONDS = 1.0
LISTED_SECONDS = 60


# -- the designs ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Design:
    label: str  # "now" or "today (REV)"
    tree: Path
    baseline: Optional[Baseline]  # None for this checkout

    @property
    def slug(self) -> str:
        return "now" if self.baseline is None else f"today-{self.baseline.rev}"

    def knows(self, variable: str) -> bool:
        """Whether this design reads ``variable`` (its gcs_sync/config.py names it)."""
        try:
            return variable in (self.tree / "gcs_sync" / "config.py").read_text(encoding="utf-8")
        except OSError:
            return False

    def mode(self, wanted: str, extra: Optional[dict[str, str]] = None) -> tuple[dict[str, str], str]:
        """(settings, label) for PACKAGE_FILES=``wanted``: given only to a design that has it."""
        if self.knows("PACKAGE_FILES"):
            settings = {"PACKAGE_FILES": wanted}
            if extra and self.knows("CACHE_MAX_BYTES"):
                settings.update(extra)
            return settings, wanted
        return {}, "mirror (its only mode)"

    def process_env(self, env: dict[str, str]) -> dict[str, str]:
        if self.baseline is not None:
            return baseline_environment(self.tree, env)
        return {**environment(env, drop=PRODUCT_VARIABLES), "PYTHONPATH": str(REPO)}

    @contextlib.contextmanager
    def server(self, env: dict[str, str], workers: int, log_path: Path,
               cgroup: Optional[MemoryCgroup] = None) -> Iterator[Server]:
        with launched(f"{self.label} wrapper", WRAPPER_APP, workers=workers, env=self.process_env(env), cwd=self.tree,
                      log_path=log_path, cgroup=cgroup) as server:
            yield server


def run_probe(design: Design, env: dict[str, str], *args: str) -> dict:
    """bench/scale_probe.py with the design's code; its JSON (a BenchError if it failed or
    imported gcs_sync from anywhere but the design's tree)."""
    done = subprocess.run([sys.executable, str(PROBE), str(design.tree), *args], cwd=design.tree,
                          env=design.process_env(env), capture_output=True, text=True, timeout=7200)
    if done.returncode != 0:
        raise BenchError(f"{design.label}: scale_probe {args[0]} failed (exit {done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    try:
        report = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as exc:
        raise BenchError(f"{design.label}: scale_probe {args[0]} printed no report: {done.stdout[-1000:]!r}") from exc
    expected = str(design.tree.resolve() / "gcs_sync" / "__init__.py")
    if report.get("source") != expected:
        raise BenchError(f"{design.label}: scale_probe imported gcs_sync from {report.get('source')}, not {expected}")
    return report


# -- results --------------------------------------------------------------------------------


@dataclasses.dataclass
class Row:
    figure: str  # a key of FIGURES
    subject: str  # "now", "today (REV)", "devpi-server 6.20.3", ...
    value: Optional[float]  # in the figure's unit; None when skipped
    text: str  # what the table shows
    detail: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Figure:
    title: str
    unit: str
    goal: str
    met: Callable[[Row, Optional[Row]], Optional[bool]]  # (now, today) -> verdict


def _within(limit: float) -> Callable[[Row, Optional[Row]], Optional[bool]]:
    return lambda now, today: None if now.value is None else now.value <= limit


FIGURES: dict[str, Figure] = {
    "elsewhere": Figure("one upload elsewhere: work per instance", "ms", "≤ 20 ms, ≤ 2 bucket calls",
                        lambda now, today: None if now.value is None else
                        now.value <= 20 and now.detail.get("max_calls", 99) <= 2),
    "cold_catalog": Figure("cold start to full index, cache/redirect", "s", "≤ 1 s, no package bytes",
                           lambda now, today: None if now.value is None else
                           now.value <= 1 and now.detail.get("package_bytes", 1) == 0),
    "cold_mirror": Figure("cold start, mirror, local-folder bucket", "s", "≤ 5 s", _within(5)),
    "rss": Figure("memory of one instance (every process), PSS", "MB", "≤ 120 MB", _within(120)),
    "latency": Figure("`/simple/<p>/` over the scale window: p99.9", "ms", "p99.9 ≤ 5 ms, max ≤ 50 ms",
                      lambda now, today: None if now.value is None else
                      now.value <= 5 and now.detail.get("max_ms", 1e9) <= 50),
    "cache_disk": Figure("local disk in cache mode (max)", "MB", "≤ the bound",
                         lambda now, today: None if now.value is None else
                         now.value <= now.detail.get("bound_mb", 0)),
    "throttle": Figure("uploads/s with the one-write-per-second limit modelled", "uploads/s", "≥ 20",
                       lambda now, today: None if now.value is None else now.value >= 20),
    "p50": Figure("`/simple/<p>/` p50", "ms", "within 1.2x of today's",
                  lambda now, today: None if now.value is None or today is None or not today.value else
                  now.value <= 1.2 * today.value),
}


def _ms(seconds: float) -> float:
    return seconds * 1000


def _mb(size: float) -> float:
    return size / 1_000_000


def _calls_text(calls: dict[str, int]) -> str:
    total = sum(calls.values())
    return f"{total} ({', '.join(f'{k} {v}' for k, v in sorted(calls.items()))})" if calls else "0"


# -- helpers --------------------------------------------------------------------------------


def hardlink_copy(source: Path, target: Path) -> Path:
    """``target``: a copy of ``source`` made of hard links (files are never rewritten in
    place by any design: uploads, records and markers are new files or renames)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["cp", "-al", str(source), str(target)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise BenchError(f"cp -al {source} {target} failed: {done.stderr.strip()}")
    return target


def package_bytes(folder: Path) -> int:
    """Bytes of the files in ``folder`` outside its bookkeeping folder ``.gcs_sync``."""
    total = 0
    for root, dirs, files in os.walk(folder):
        if Path(root) == folder and ".gcs_sync" in dirs:
            dirs.remove(".gcs_sync")
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def disk_usage(folder: Path) -> int:
    """Bytes allocated on disk under ``folder`` (what ``du`` says), everything included."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def family(pid: int) -> list[int]:
    """``pid`` and every process under it (children, theirs: a listing process's child
    making a listing), as /proc tells it now."""
    found, waiting = [], [pid]
    while waiting:
        current = waiting.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                waiting.extend(int(child) for child in task.read_text().split())
            except OSError:
                continue  # (the task ended meanwhile)
    return found


def memory_mb(pids: list[int]) -> tuple[Optional[float], Optional[float]]:
    """(sum of VmRSS, sum of Pss) of ``pids`` in MB; None where /proc does not say."""
    rss = pss = 0
    seen = False
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1]) * 1024
                    seen = True
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return (_mb(rss), _mb(pss) if pss else None) if seen else (None, None)


def until_complete(server, prefix: str, probe_files: int, projects: int, started: float) -> float:
    """Seconds from ``started`` until ``PREFIX/proj-000/`` lists all its files and ``PREFIX/``
    every project (polled every 20 ms); a BenchError past COLD_SECONDS."""
    deadline = started + COLD_SECONDS
    last = ""
    while time.monotonic() < deadline:
        try:
            status, body = load.fetch(server, f"{prefix}/{PROBE_PROJECT}/", timeout=30)
            if status == 200 and load.link_count(body) == probe_files:
                status, body = load.fetch(server, f"{prefix}/", timeout=30)
                if status == 200 and load.link_count(body) == projects:
                    return time.monotonic() - started
                last = f"{prefix}/ answered {status} with {load.link_count(body)} of {projects} projects"
            else:
                last = f"{prefix}/{PROBE_PROJECT}/ answered {status} with {load.link_count(body)} of {probe_files} files"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if server.process.poll() is not None:
            raise server.failure(f"exited with status {server.process.returncode} during its cold start")
        time.sleep(0.02)
    raise server.failure(f"not complete within {COLD_SECONDS}s of its launch (last: {last})")


def until_local(server, folder: Path, files: int, started: float) -> float:
    """Seconds from ``started`` until ``folder`` holds ``files`` package files (polled every
    second); a BenchError past COLD_SECONDS."""
    deadline = started + COLD_SECONDS
    while time.monotonic() < deadline:
        with os.scandir(folder) as entries:
            if sum(1 for entry in entries if not entry.name.startswith(".")) >= files:
                return time.monotonic() - started
        if server.process.poll() is not None:
            raise server.failure(f"exited with status {server.process.returncode} while filling its folder")
        time.sleep(1.0)
    raise server.failure(f"its folder did not hold all {files} files within {COLD_SECONDS}s of its launch")


def warm_up(server, prefix: str, package_path: Optional[str]) -> None:
    """A few requests of each kind, as a client would make after the start."""
    for _ in range(10):
        load.get_ok(server, f"{prefix}/")
        for k in range(5):
            load.get_ok(server, f"{prefix}/proj-{k:03d}/")
        if package_path:
            load.get_ok(server, package_path)


def latency_window(server, path: str, seconds: float) -> dict:
    """Sequential GETs of ``path`` (a new connection each) for ``seconds``: p50, p99.9, max."""
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(samples) < load.MIN_REQUESTS:
        started = time.perf_counter()
        load.get_ok(server, path)
        samples.append(time.perf_counter() - started)
    return {"p50_ms": _ms(load.percentile(samples, 50)), "p999_ms": _ms(load.percentile(samples, 99.9)),
            "max_ms": _ms(max(samples)), "requests": len(samples),
            "over_50ms": sum(1 for s in samples if s > 0.050)}


def _latency_row(subject: str, window: dict, files: int, mode: str) -> Row:
    return Row("latency", subject, window["p999_ms"],
               f"p50 {window['p50_ms']:.2f}, p99.9 {window['p999_ms']:.2f}, max {window['max_ms']:.1f} ms",
               {**window, "files": files, "mode": mode})


def _memory_row(subject: str, pids: Callable[[], list[int]], files: int, mode: str, seconds: float,
                cgroup: Optional[MemoryCgroup] = None) -> Row:
    """The instance's memory (every process of it, summed), read every MEMORY_SAMPLE_SECONDS
    for ``seconds``: the median and the largest reading. PSS is the row's value: each page
    counted once (a page the master shares with its forks, in shares), as a host counts
    it; summed RSS counts such a page once per process. With ``cgroup`` (the instance runs
    in one), what the kernel charges that cgroup too: a container's own figure, with the
    page cache the instance filled."""
    samples: list[tuple[float, float]] = []
    charged: list[tuple[float, float]] = []
    deadline = time.monotonic() + seconds
    while True:
        rss, pss = memory_mb(pids())
        if rss is not None:
            samples.append((rss, pss if pss is not None else rss))
        reading = None if cgroup is None else cgroup.charged_mb()
        if reading is not None:
            charged.append(reading)
        if time.monotonic() >= deadline:
            break
        time.sleep(MEMORY_SAMPLE_SECONDS)
    if not samples:
        return Row("rss", subject, None, "–")
    rss_median = statistics.median(rss for rss, _ in samples)
    pss_median = statistics.median(pss for _, pss in samples)
    rss_max, pss_max = max(rss for rss, _ in samples), max(pss for _, pss in samples)
    text = (f"PSS {pss_median:.0f} MB (max {pss_max:.0f}), RSS {rss_median:.0f} MB (max {rss_max:.0f})"
            if len(samples) > 1 else f"PSS {pss_median:.0f} MB, RSS {rss_median:.0f} MB")
    detail: dict = {"pss_mb": pss_median, "pss_max_mb": pss_max, "rss_mb": rss_median, "rss_max_mb": rss_max,
                    "samples": len(samples), "seconds": seconds, "processes": len(pids()), "files": files,
                    "mode": mode}
    if cgroup is not None and charged:
        total, anonymous = (statistics.median(column) for column in zip(*charged))
        total_max = max(total for total, _ in charged)
        text += f"; its cgroup {total:.0f} MB (max {total_max:.0f}), {anonymous:.0f} MB of it anonymous"
        detail.update(cgroup_mb=total, cgroup_max_mb=total_max, cgroup_anon_mb=anonymous,
                      cgroup_version=cgroup.version)
    return Row("rss", subject, pss_median, text, detail)


# -- one upload elsewhere -------------------------------------------------------------------


def measure_elsewhere(designs: list[Design], args, workdir: Path) -> list[Row]:
    n = args.elsewhere_files
    folder = workdir / "elsewhere"
    say(f"elsewhere: generating {n} wheels")
    source = generate(folder / "source", n)
    rows = []
    for design in designs:
        bucket = folder / design.slug / "bucket"
        hardlink_copy(source.folder, bucket / "packages")
        new = []
        for k in range(args.elsewhere_rounds):
            target = folder / design.slug / f"new-{k}"
            target.mkdir(parents=True)
            write_wheel(target, PROBE_PROJECT, f"9.0.{k}", b"an upload made elsewhere")
            new.append(str(target))
        settings, mode = design.mode("cache")
        env = wrapper_env(backend="local", bucket=str(bucket), local_folder=folder / design.slug / "local",
                          calls_dir=folder / design.slug / "calls",
                          extra={**settings, "SYNC_INTERVAL": "1", "FULL_SYNC_INTERVAL": "86400"})
        say(f"elsewhere: {design.label}: pre-sync of {n} files, then {len(new)} push(es) and one check each")
        report = run_probe(design, env, "elsewhere", *new)
        rounds = report["rounds"]
        unlisted = [r["file"] for r in rounds if not r["listed"]]
        if unlisted:
            raise BenchError(f"elsewhere: {design.label}: after its check the instance does not list {unlisted}")
        seconds = sorted(r["seconds"] for r in rounds)
        median = seconds[len(seconds) // 2]
        typical = next(r for r in rounds if r["seconds"] == median)
        max_calls = max(sum(r["calls"].values()) for r in rounds)
        row = Row("elsewhere", design.label, _ms(median),
                  f"{_ms(median):.1f} ms, {_calls_text(typical['calls'])} calls",
                  {"files": n, "mode": mode, "rounds": rounds, "max_calls": max_calls,
                   "presync_seconds": report["presync_seconds"]})
        say(f"elsewhere: {design.label}: {row.text} (pre-sync {report['presync_seconds']:.1f}s)")
        rows.append(row)
        shutil.rmtree(folder / design.slug / "local", ignore_errors=True)
    return rows


# -- cold start, memory, latency over time --------------------------------------------------


def _cold_run(design: Design, env: dict[str, str], repo: Repository, projects: int, args, log: Path,
              more: bool, mode: str) -> list[Row]:
    """One launch with an empty local folder: cold start (and, with ``more``, memory and
    the latency window on the same instance, run in a memory cgroup of its own where this
    machine lets the benchmark make one)."""
    cgroup = None
    if more:
        cgroup, why_not = MemoryCgroup.made(design.slug)
        if cgroup is None:
            say(f"cold: {design.label}: memory without a cgroup's figure ({why_not})")
    try:
        return _cold_launch(design, env, repo, projects, args, log, more, mode, cgroup)
    finally:
        if cgroup is not None:
            cgroup.remove()


def _cold_launch(design: Design, env: dict[str, str], repo: Repository, projects: int, args, log: Path,
                 more: bool, mode: str, cgroup: Optional[MemoryCgroup]) -> list[Row]:
    local = Path(env["LOCAL_PACKAGE_DIRECTORY"])
    started = time.monotonic()
    with design.server(env, args.workers, log, cgroup) as server:
        seconds = until_complete(server, "/simple", repo.probe_files, projects, started)
        server.check_source(design.tree)  # its workers run the design's own gcs_sync
        held = package_bytes(local)
        say(f"cold: {design.label} ({mode}): {seconds:.2f}s to a full index, {_mb(held):.1f} MB of package files local")
        held_text = "no package bytes" if held == 0 else f"{_mb(held):.1f} MB of packages"
        extra: dict = {"files": len(repo.files), "mode": mode, "package_bytes": held}
        if mode == "mirror":  # ready, then (a fill in the background) every file local
            extra["all_local_seconds"] = until_local(server, local, len(repo.files), started)
            held_text += f"; every file local after {extra['all_local_seconds']:.1f} s"
            say(f"cold: {design.label} (mirror): every file local after {extra['all_local_seconds']:.1f}s")
        rows = [Row("cold", design.label, seconds, f"{seconds:.2f} s, {held_text}", extra)]
        if more:
            warm_up(server, "/simple", repo.routes["/packages/<file>"])
            say(f"cold: {design.label}: /simple/<p>/ for {args.scale_seconds:.0f}s")
            window = latency_window(server, repo.routes["/simple/<p>/"], args.scale_seconds)
            rows.append(_latency_row(design.label, window, len(repo.files), mode))
            say(f"cold: {design.label}: {rows[-1].text} ({window['requests']} requests); "
                f"memory for {args.memory_seconds:.0f}s")
            rows.append(_memory_row(design.label, lambda: family(server.process.pid), len(repo.files), mode,
                                    args.memory_seconds, cgroup))
            say(f"cold: {design.label}: {rows[-1].text}")
    return rows


def measure_cold(designs: list[Design], args, workdir: Path) -> list[Row]:
    n = args.scale_files
    folder = workdir / "cold"
    say(f"cold: generating {n} wheels")
    repo = generate(folder / "source", n)
    projects = min(MAX_PROJECTS, n)
    rows: list[Row] = []
    for design in designs:
        base = folder / design.slug
        bucket = base / "bucket"
        hardlink_copy(repo.folder, bucket / "packages")
        # A bucket an instance has already run on (its records, snapshots), as in production.
        settings, mode = design.mode("cache")
        prepare = wrapper_env(backend="local", bucket=str(bucket), local_folder=base / "prepare",
                              calls_dir=base / "prepare-calls", extra=settings)
        report = run_probe(design, prepare, "presync")
        say(f"cold: {design.label}: bucket prepared by one instance's sync in {report['seconds']:.1f}s")
        shutil.rmtree(base / "prepare", ignore_errors=True)
        env = wrapper_env(backend="local", bucket=str(bucket), local_folder=base / "local-1",
                          calls_dir=base / "calls-1", extra=settings)
        first = _cold_run(design, env, repo, projects, args, base / "cold-1.log", True, mode)
        cold = first[0]
        if design.knows("PACKAGE_FILES"):
            rows.append(dataclasses.replace(cold, figure="cold_catalog"))
            mirror, _ = design.mode("mirror")
            env = wrapper_env(backend="local", bucket=str(bucket), local_folder=base / "local-2",
                              calls_dir=base / "calls-2", extra=mirror)
            second = _cold_run(design, env, repo, projects, args, base / "cold-2.log", False, "mirror")
            rows.append(dataclasses.replace(second[0], figure="cold_mirror"))
        else:  # one mode: the same run answers both rows
            rows.append(dataclasses.replace(cold, figure="cold_catalog"))
            rows.append(dataclasses.replace(cold, figure="cold_mirror"))
        rows.extend(first[1:])
        shutil.rmtree(base, ignore_errors=True)
    return rows


def measure_peers(designs: list[Design], args, workdir: Path) -> list[Row]:
    """The peers on the cold-start figure's files (``--scale-files``, generated alike)."""
    rows: list[Row] = []
    wanted = [p for p in args.peers.split(",") if p and p != "none"]
    if not wanted:
        return rows
    n = args.scale_files
    folder = workdir / "peers"
    say(f"peers: generating {n} wheels")
    repo = generate(folder / "source", n)
    projects = min(MAX_PROJECTS, n)
    for peer in wanted:
        packages = peers.DEVPI if peer == "devpi" else peers.SRS
        python, pins = peers.peer_python(packages)
        if python is None:
            say(f"peers: {peer}: {pins}")
            for figure in ("cold_catalog" if peer == "srs" else "cold_mirror", "rss", "latency"):
                rows.append(Row(figure, next(iter(packages)), None, pins))
            continue
        try:
            rows.extend(_devpi(python, pins, args, repo, projects, folder) if peer == "devpi"
                        else _srs(python, pins, args, repo, projects, folder))
        except BenchError as exc:
            say(f"peers: {pins}: SKIPPED: {exc}")
            rows.append(Row("rss", pins, None, f"SKIPPED: {str(exc).splitlines()[0][:200]}"))
    return rows


def _peer_rows(server: peers.PeerServer, figure: str, subject: str, repo: Repository, files: int,
               probe_files: int, projects: int, args, note: str) -> list[Row]:
    seconds = until_complete(server, server.simple_prefix, probe_files, projects, server.started)
    say(f"peers: {subject}: {seconds:.2f}s to a full index ({note})")
    rows = [Row(figure, subject, seconds, f"{seconds:.2f} s", {"files": files, "note": note})]
    warm_up(server, server.simple_prefix, None)
    window = latency_window(server, f"{server.simple_prefix}/{PROBE_PROJECT}/", args.scale_seconds)
    rows.append(_memory_row(subject, lambda: family(server.process.pid), files, note, args.memory_seconds))
    rows.append(_latency_row(subject, window, files, note))
    say(f"peers: {subject}: {rows[1].text}; {rows[2].text}")
    return rows


def _srs(python: Path, pins: str, args, repo: Repository, projects: int, folder: Path) -> list[Row]:
    served = peers.srs_folder(repo.folder, repo.files, folder / "srs")
    with peers.srs_server(python, served, folder / "srs.log") as server:
        return _peer_rows(server, "cold_catalog", pins, repo, len(repo.files), repo.probe_files, projects, args,
                          "serves a local folder")


def _devpi(python: Path, pins: str, args, repo: Repository, projects: int, folder: Path) -> list[Row]:
    # Loading devpi is slow (~170 files/s empty, ~35/s past 30,000 here), so its server
    # folder is kept between runs, keyed by the generated files, and a load goes on
    # where the last one stopped.
    serverdir, loaded_list = peers.devpi_cache(python, repo.folder, repo.files)
    loaded = set(loaded_list.read_text(encoding="utf-8").split()) if loaded_list.exists() else set()
    todo = tuple(name for name in repo.files if name not in loaded)
    if todo:
        say(f"peers: {pins}: loading {len(todo)} of {len(repo.files)} files through its HTTP API into {serverdir} "
            f"(at most {args.peer_load_seconds:.0f}s; {len(loaded)} loaded by earlier runs)")
        with peers.devpi_server(python, serverdir, folder / "devpi.log") as server:
            until_up(server)
            started = time.monotonic()
            with open(loaded_list, "a", encoding="utf-8", buffering=1) as record:  # line-buffered: kept if killed
                added = peers.devpi_fill(server, repo.folder, todo, started + args.peer_load_seconds,
                                         done=lambda name: record.write(name + "\n"))
            loaded.update(added)
            say(f"peers: {pins}: {len(added)} files loaded in {time.monotonic() - started:.0f}s")
    loaded_names = [name for name in repo.files if name in loaded]
    probe_files = sum(1 for name in loaded_names if name.startswith("proj_000-"))
    loaded_projects = len({name.split("-")[0] for name in loaded_names})
    note = "restart on its existing server folder" + (
        f"; only {len(loaded_names)} of {len(repo.files)} files loaded (--peer-load-seconds; a next run goes on)"
        if len(loaded_names) < len(repo.files) else "")
    with peers.devpi_server(python, serverdir, folder / "devpi.log") as server:
        return _peer_rows(server, "cold_mirror", pins, repo, len(loaded_names), probe_files, loaded_projects, args,
                          note)


def until_up(server: peers.PeerServer) -> None:
    deadline = time.monotonic() + BOOT_SECONDS
    while time.monotonic() < deadline:
        try:
            if load.fetch(server, "/+api", timeout=5)[0] == 200:  # type: ignore[arg-type]  # same protocol
                return
        except (OSError, http.client.HTTPException):
            pass
        if server.process.poll() is not None:
            raise server.failure(f"exited with status {server.process.returncode} while starting")
        time.sleep(0.1)
    raise server.failure(f"did not answer within {BOOT_SECONDS}s")


# -- local disk in cache mode ---------------------------------------------------------------


def measure_cache(designs: list[Design], args, workdir: Path) -> list[Row]:
    count, size, bound = args.cache_files, args.cache_mb * 1_000_000, args.cache_bound_mb * 1_000_000
    folder = workdir / "cache"
    source = folder / "source"
    source.mkdir(parents=True)
    say(f"cache: writing {count} wheels of {args.cache_mb} MB ({_mb(count * size):.0f} MB)")
    rng = random.Random(13)
    digests = {}
    for k in range(count):
        path = write_wheel(source, f"big-{k % CACHE_PROJECTS:02d}", f"1.0.{k // CACHE_PROJECTS}", rng.randbytes(size))
        digests[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    bucket_bytes = sum((source / name).stat().st_size for name in digests)
    rows = []
    for design in designs:
        base = folder / design.slug
        bucket = base / "bucket"
        hardlink_copy(source, bucket / "packages")
        settings, mode = design.mode("cache", {"CACHE_MAX_BYTES": str(bound)})
        if settings:  # records (and snapshots) as a running instance leaves them, without copying bytes
            run_probe(design, wrapper_env(backend="local", bucket=str(bucket), local_folder=base / "prepare",
                                          calls_dir=base / "prepare-calls", extra=settings), "presync")
            shutil.rmtree(base / "prepare", ignore_errors=True)
        local = base / "local"
        env = wrapper_env(backend="local", bucket=str(bucket), local_folder=local, calls_dir=base / "calls",
                          extra=settings)
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], disk_usage(local))
                stop.wait(SAMPLE_SECONDS)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        try:
            with design.server(env, args.workers, base / "server.log") as server:
                _until_listed(server, digests, started)
                server.check_source(design.tree)

                def fetch(name: str) -> None:
                    body = load.get_ok(server, f"/packages/{name}")
                    if hashlib.sha256(body).hexdigest() != digests[name]:
                        raise server.failure(f"/packages/{name} answered other bytes than the bucket holds")

                with concurrent.futures.ThreadPoolExecutor(CACHE_CLIENTS) as pool:
                    list(pool.map(fetch, sorted(digests)))
                peak[0] = max(peak[0], disk_usage(local))
        finally:
            stop.set()
            sampler.join(timeout=30)
        row = Row("cache_disk", design.label, _mb(peak[0]),
                  f"{_mb(peak[0]):.0f} MB ({mode}) of a {_mb(bucket_bytes):.0f} MB bucket",
                  {"mode": mode, "bound_mb": _mb(bound), "bucket_mb": _mb(bucket_bytes),
                   "files": count, "seconds": time.monotonic() - started})
        say(f"cache: {design.label}: local folder at most {row.text}, every file served once")
        rows.append(row)
        shutil.rmtree(base, ignore_errors=True)
    return rows


def _until_listed(server: Server, digests: dict[str, str], started: float) -> None:
    """Until every file is on its project's page (the index is complete)."""
    projects = sorted({name.split("-")[0].replace("_", "-") for name in digests})
    deadline = started + COLD_SECONDS
    while time.monotonic() < deadline:
        listed: set[str] = set()
        try:
            for project in projects:
                status, body = load.fetch(server, f"/simple/{project}/")
                if status == 200:
                    listed.update(name for name in digests if name.encode() in body)
        except (OSError, http.client.HTTPException):
            pass
        if listed == set(digests):
            return
        if server.process.poll() is not None:
            raise server.failure(f"exited with status {server.process.returncode} during its cold start")
        time.sleep(0.1)
    raise server.failure(f"did not list all {len(digests)} files within {COLD_SECONDS}s")


# -- uploads under the one-write-per-second limit -------------------------------------------


def _gcs_bucket(emulator: Emulator, name: str) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with patched_environ({"STORAGE_EMULATOR_HOST": emulator.url}):
        storage.Client(project=PROJECT, credentials=AnonymousCredentials()).create_bucket(name)


def _gcs_names(emulator: Emulator, bucket: str) -> set[str]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with patched_environ({"STORAGE_EMULATOR_HOST": emulator.url}):
        client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
        return {blob.name for blob in client.list_blobs(bucket, prefix="packages/")}


def measure_throttle(designs: list[Design], args, workdir: Path) -> list[Row]:
    count = args.throttle_uploads
    folder = workdir / "throttle"
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    with running_emulator(folder / "emulator.log") as emulator:
        for design in designs:
            base = folder / design.slug
            wheels_dir = base / "wheels"
            wheels_dir.mkdir(parents=True)
            wheels = [write_wheel(wheels_dir, f"thr-{k % THROTTLE_PROJECTS}", f"1.0.{k}", os.urandom(2000))
                      for k in range(count)]
            bucket = f"throttle-{uuid.uuid4().hex[:10]}"
            _gcs_bucket(emulator, bucket)
            limit = OneWritePerSecond()
            with FaultProxy(emulator.host, emulator.port) as proxy:
                proxy.add_rule(None, "", limit)
                settings, mode = design.mode("cache")
                env = wrapper_env(backend="gcs", bucket=bucket, local_folder=base / "local", calls_dir=base / "calls",
                                  extra={**emulator.env(proxy.url), **WRITABLE, **settings})
                with design.server(env, args.workers, base / "server.log") as server:
                    wait_until_ready(server, lambda s: load.fetch(s, "/simple/")[0] == 200, BOOT_SECONDS)
                    server.check_source(design.tree)
                    say(f"throttle: {design.label}: {count} uploads from {THROTTLE_CLIENTS} clients through the "
                        "one-write-per-second model")
                    started = time.perf_counter()
                    with concurrent.futures.ThreadPoolExecutor(THROTTLE_CLIENTS) as pool:
                        seconds = list(pool.map(lambda w: load.upload(server, w.name, w.read_bytes()), wheels))
                    elapsed = time.perf_counter() - started
                    _until_all_listed(server, [w.name for w in wheels])
            stored = _gcs_names(emulator, bucket)
            missing = [w.name for w in wheels if f"packages/{w.name}" not in stored]
            if missing:
                raise BenchError(f"throttle: {design.label}: {len(missing)} acknowledged uploads are not in the "
                                 f"bucket, e.g. {missing[0]}")
            throttled = sorted(set(limit.throttled))
            rate = count / elapsed
            row = Row("throttle", design.label, rate,
                      f"{rate:.1f} uploads/s, {len(limit.throttled)} 429s",
                      {"uploads": count, "clients": THROTTLE_CLIENTS, "seconds": elapsed, "mode": mode,
                       "p50_upload_ms": _ms(load.percentile(seconds, 50)), "throttled": len(limit.throttled),
                       "throttled_objects": throttled[:10]})
            say(f"throttle: {design.label}: {row.text}" + (f" on {throttled[:3]}" if throttled else ""))
            rows.append(row)
    return rows


def _until_all_listed(server: Server, names: list[str]) -> None:
    projects = sorted({name.split("-")[0].replace("_", "-") for name in names})
    deadline = time.monotonic() + LISTED_SECONDS
    while time.monotonic() < deadline:
        pages = b"".join(load.fetch(server, f"/simple/{p}/")[1] for p in projects)
        if all(name.encode() in pages for name in names):
            return
        time.sleep(0.2)
    raise server.failure(f"the {len(names)} uploads were not all listed within {LISTED_SECONDS}s")


# -- /simple/<p>/ p50 at 10,000 files (as the main benchmark measures it) --------------------


def measure_p50(designs: list[Design], args, workdir: Path) -> list[Row]:
    n = args.p50_files
    folder = workdir / "p50"
    say(f"p50: generating {n} wheels")
    repo = generate(folder / "source", n)
    rows = []
    for design in designs:
        copy = dataclasses.replace(repo, folder=hardlink_copy(repo.folder, folder / design.slug / "bucket" / "packages"))
        run = ServerRun(design.label, n, {})
        with wrapper_server(copy, args.workers, folder / design.slug, "p50", run, design.baseline) as server:
            latency = load.latencies(server, copy.routes["/simple/<p>/"], args.p50_seconds)
        rows.append(Row("p50", design.label, _ms(latency.p50), f"{_ms(latency.p50):.2f} ms",
                        {"files": n, "p99_ms": _ms(latency.p99), "requests": latency.requests}))
        say(f"p50: {design.label}: /simple/<p>/ p50 {_ms(latency.p50):.2f} ms ({latency.requests} requests)")
        shutil.rmtree(folder / design.slug, ignore_errors=True)
    return rows


# -- the report -----------------------------------------------------------------------------


def _size_note(rows: list[Row]) -> str:
    sizes = sorted({int(r.detail["files"]) for r in rows if r.detail.get("files")})
    return ", ".join(f"{s:,}" for s in sizes)


def markdown(rows: list[Row], meta: dict) -> str:
    today_label = meta["today"]
    lines = [f"# Scale: issue 13's figures ({meta['started_utc']})", "",
             f"Command: `{meta['command']}`  ",
             f"Machine: {meta['machine'].get('cores')} cores, {meta['machine'].get('cpu')}; {meta['workers']} gunicorn "
             f"workers; now = this checkout ({meta['now_commit']}), today = {today_label}; peers: "
             f"{', '.join(meta['peers']) or 'none'}", "",
             f"| figure | files | {today_label} | now | now / today | goal | now meets goal | peers |",
             "|---|---|---|---|---|---|---|---|"]
    for key, figure in FIGURES.items():
        mine = [r for r in rows if r.figure == key]
        if not mine:
            continue
        now = next((r for r in mine if r.subject == NOW), None)
        today = next((r for r in mine if r.subject == today_label), None)
        others = [r for r in mine if r.subject not in (NOW, today_label)]
        ratio = ""
        if now and today and now.value is not None and today.value:
            quotient = now.value / today.value
            ratio = f"{quotient:.2f}x" if quotient >= 0.1 else f"{quotient:.2g}x"
        verdict = figure.met(now, today) if now else None
        met = {True: "yes", False: "NO", None: "–"}[verdict]
        peer_text = "; ".join(f"{r.subject}: {r.text}" + (f" ({r.detail['files']:,} files)"
                                                          if r.detail.get("files") and now and r.detail["files"] !=
                                                          now.detail.get("files") else "") for r in others)
        mode = f" ({now.detail['mode']})" if now and now.detail.get("mode") and key != "cache_disk" else ""
        goal = figure.goal
        if key == "cache_disk" and now is not None:
            goal = f"≤ {now.detail['bound_mb']:.0f} MB (the bound)"
        lines.append(f"| {figure.title} | {_size_note([r for r in (now, today) if r])} | "
                     f"{today.text if today else '–'} | {(now.text + mode) if now else '–'} | {ratio} | {goal} | "
                     f"{met} | {peer_text or '–'} |")
    lines += ["", "Ratios divide the figure's value (ms, s, MB, uploads/s as named). The JSON rows in "
              "results.json carry every detail (bucket calls per round, PSS, modes, sizes)."]
    return "\n".join(lines) + "\n"


# -- command line ---------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description="Issue 13's figures: this checkout, "
                                     "the design it started from, and peers. See bench/README.md (Scale).")
    parser.add_argument("--baseline", default=DEFAULT_REV, metavar="REV",
                        help=f"today's design, from a git worktree (default {DEFAULT_REV}); 'none' to skip")
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts to run, of {','.join(PARTS)} (default all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--elsewhere-files", type=int, help="bucket size of the upload-elsewhere figure (100000)")
    parser.add_argument("--elsewhere-rounds", type=int, help="uploads elsewhere, one check each (3)")
    parser.add_argument("--scale-files", type=int, help="bucket size of cold start, RSS, latency (50000)")
    parser.add_argument("--scale-seconds", type=float, help="length of the latency window (120)")
    parser.add_argument("--memory-seconds", type=float,
                        help="memory read every second for this long, after the latency window (65: one full listing)")
    parser.add_argument("--cache-files", type=int, help="files of the cache-mode bucket (400)")
    parser.add_argument("--cache-mb", type=int, help="MB per file of the cache-mode bucket (5)")
    parser.add_argument("--cache-bound-mb", type=int, help="CACHE_MAX_BYTES in MB (200)")
    parser.add_argument("--throttle-uploads", type=int, help="uploads under the write-limit model (30)")
    parser.add_argument("--p50-files", type=int, help="bucket size of the p50 figure (10000)")
    parser.add_argument("--p50-seconds", type=float, help="seconds of the p50 measurement (3)")
    parser.add_argument("--peers", help=f"peers to run, of {','.join(PEERS)}, or none (default both; --quick none)")
    parser.add_argument("--peer-load-seconds", type=float, help="at most this long loading devpi (900)")
    parser.add_argument("--out", type=Path, help=f"results folder (default {DEFAULT_OUT}; --quick: {DEFAULT_OUT}-quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 2 s window, no peers")
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    for name, (full, quick) in PROFILES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.out is None:
        args.out = DEFAULT_OUT.with_name("scale-quick") if args.quick else DEFAULT_OUT
    if args.baseline.strip().lower() in ("", "none"):
        args.baseline = None
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(args.parts) - set(PARTS)) + sorted(
        set(p for p in args.peers.split(",") if p) - set(PEERS) - {"none"})
    if unknown:
        parser.error(f"unknown part or peer: {', '.join(unknown)}")
    return args


def _commit() -> str:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def _terminate(signum, frame):
    say(f"got signal {signum}: stopping")
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="gcs-sync-scale-"))
    say(f"scale: working folder {workdir}")
    rows: list[Row] = []
    today_label = f"today ({args.baseline})" if args.baseline else "today (not run)"
    meta = {"command": " ".join(["python -m bench scale", *argv]), "machine": machine.describe(),
            "workers": args.workers, "now_commit": _commit(), "today": today_label,
            "peers": [], "started_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "settings": {k: getattr(args, k) for k in PROFILES}}
    try:
        with baseline_tree(args.baseline, workdir) as tree:
            designs = []
            if tree is not None:
                designs.append(Design(today_label, tree, Baseline(args.baseline, tree)))
            designs.append(Design(NOW, REPO, None))
            measures = {"elsewhere": measure_elsewhere, "cold": measure_cold, "peers": measure_peers,
                        "cache": measure_cache,
                        "throttle": measure_throttle, "p50": measure_p50}
            for part in args.parts:
                rows += measures[part](designs, args, workdir)
    except BenchError as exc:
        say(f"FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted; servers stopped")
        return 130
    finally:
        if args.keep:
            say(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    meta["peers"] = sorted({r.subject for r in rows if r.subject != NOW and r.subject != today_label})
    meta["wall_seconds"] = time.monotonic() - started
    text = markdown(rows, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text, encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]},
                                                      indent=1, default=str), encoding="utf-8")
    say(f"scale: wrote {args.out / 'results.md'} and results.json in {meta['wall_seconds']:.0f}s")
    sys.stdout.write(text)
    return 0
