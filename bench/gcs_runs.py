"""The wrapper against the GCS emulator: steady-state bucket calls, and cold start.

Steady state: pre-synced, then a paced mix of the three routes at ``--steady-rate``
requests/s for ``--steady-seconds``; bucket calls per request sent.

Cold start: from launching gunicorn (empty local folder, no pre-sync) to the first 200 of
``/simple/<p>/`` that lists all of that project's files, with SYNC_CONCURRENCY=1 and =8.
Twice: straight to the emulator (loopback: ~2.7 ms of client CPU per download and no
network wait, so threads have nothing to overlap), and through testkit/fault_proxy.py adding
``--rtt-ms`` per request, standing in for the round trip to a real bucket.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path
from typing import Optional

from testkit.fault_proxy import FaultProxy

from . import load
from .emulator import Emulator, fill_bucket, running_emulator
from .progress import say
from .repository import Repository, generate
from .servers import REPO, WRAPPER_APP, environment, launched, wait_until_ready
from .wrapper import PRODUCT_VARIABLES, presync, worker_calls, wrapper_env

BUCKET = "bench"
BOOT_SECONDS = 60
COLD_START_SECONDS = 240  # the deadline of one cold start
MODES = (1, 8)  # SYNC_CONCURRENCY: sequential, parallel


@dataclasses.dataclass
class Steady:
    n: int
    target_rate: float
    paced: load.Paced
    requests: int  # everything sent to the server, readiness probes included
    calls: collections.Counter
    workers_reported: int

    @property
    def calls_per_request(self) -> float:
        return sum(self.calls.values()) / self.requests


@dataclasses.dataclass
class ColdStart:
    network: str
    n: int
    seconds: dict[int, float] = dataclasses.field(default_factory=dict)  # SYNC_CONCURRENCY -> s
    # TcpExtListenOverflows during each run (system-wide; None off Linux): a connection
    # dropped by a full accept queue is retried after 1 s, which would swamp the timing.
    overflows: dict[int, Optional[int]] = dataclasses.field(default_factory=dict)

    @property
    def speedup(self) -> Optional[float]:
        if all(mode in self.seconds for mode in MODES):
            return self.seconds[MODES[0]] / self.seconds[MODES[-1]]
        return None


def measure_gcs(args, workdir: Path) -> tuple[Steady, list[ColdStart]]:
    n = args.gcs_files
    folder = workdir / "gcs"
    folder.mkdir(parents=True, exist_ok=True)
    repo = generate(folder / "files" / "packages", n, seed=3)
    with running_emulator(folder / "emulator.log") as emulator:
        say(f"GCS emulator on port {emulator.port}: uploading {n} files")
        started = time.monotonic()
        fill_bucket(emulator, BUCKET, repo)
        say(f"uploaded {n} files in {time.monotonic() - started:.1f}s")
        steady = measure_steady(emulator, repo, args, folder)
        networks = [("direct", None)] + ([] if args.quick else [(f"+{args.rtt_ms:g} ms/request", args.rtt_ms)])
        cold = [measure_cold_start(emulator, repo, args, folder, label, rtt) for label, rtt in networks]
    return steady, cold


def measure_steady(emulator: Emulator, repo: Repository, args, folder: Path) -> Steady:
    calls_dir = folder / "steady-calls"
    env = wrapper_env(backend="gcs", bucket=BUCKET, local_folder=folder / "steady-local", calls_dir=calls_dir,
                      extra=emulator.env())
    seconds, _ = presync(env)
    say(f"steady state: pre-synced {len(repo.files)} files in {seconds:.1f}s; "
        f"{args.steady_rate:g} req/s for {args.steady_seconds:g}s")
    with launched("wrapper (gcs)", WRAPPER_APP, workers=args.workers, env=environment(env, drop=PRODUCT_VARIABLES),
                  cwd=REPO, log_path=folder / "steady.log") as server:
        path = repo.routes["/simple/<p>/"]
        wait_until_ready(server, lambda s: load.link_count(load.get_ok(s, path)) == repo.probe_files, BOOT_SECONDS)
        paced = load.paced(server, list(repo.routes.values()), args.steady_rate, args.steady_seconds)
    calls, reported = worker_calls(calls_dir)
    steady = Steady(len(repo.files), args.steady_rate, paced, server.requests, calls, reported)
    say(f"steady state: {paced.requests} requests at {paced.rate:.1f}/s, {sum(calls.values())} bucket calls "
        f"({dict(calls)}) from {reported} workers: {steady.calls_per_request:.4f} per request")
    return steady


def listen_overflows() -> Optional[int]:
    """The kernel's count of connections dropped because an accept queue was full."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:]))
            return int(counters["ListenOverflows"]) if "ListenOverflows" in counters else None
    return None


def measure_cold_start(emulator: Emulator, repo: Repository, args, folder: Path, network: str,
                       rtt_ms: Optional[float]) -> ColdStart:
    result = ColdStart(network, len(repo.files))
    proxy = None
    if rtt_ms is not None:
        proxy = FaultProxy(emulator.host, emulator.port)
        proxy.latency = rtt_ms / 1000
        proxy.start()
    try:
        url = proxy.url if proxy is not None else emulator.url
        for mode in MODES:
            before = listen_overflows()
            result.seconds[mode] = _cold_start(emulator, url, repo, args, folder, network, mode)
            after = listen_overflows()
            result.overflows[mode] = None if before is None or after is None else after - before
            say(f"cold start {network}, SYNC_CONCURRENCY={mode}: {result.seconds[mode]:.2f}s"
                + (f" ({result.overflows[mode]} listen overflows on this machine meanwhile)"
                   if result.overflows[mode] else ""))
    finally:
        if proxy is not None:
            proxy.stop()
    return result


def _cold_start(emulator: Emulator, url: str, repo: Repository, args, folder: Path, network: str, mode: int) -> float:
    tag = f"cold-{'direct' if url == emulator.url else 'rtt'}-{mode}"
    env = wrapper_env(backend="gcs", bucket=BUCKET, local_folder=folder / f"{tag}-local",
                      calls_dir=folder / f"{tag}-calls",
                      extra={**emulator.env(url), "SYNC_CONCURRENCY": str(mode)})
    path = repo.routes["/simple/<p>/"]

    def complete(status: int, body: bytes) -> bool:
        return status == 200 and load.link_count(body) == repo.probe_files

    started = time.monotonic()
    with launched("wrapper (gcs, cold)", WRAPPER_APP, workers=args.workers,
                  env=environment(env, drop=PRODUCT_VARIABLES), cwd=REPO, log_path=folder / f"{tag}.log") as server:
        done_at = load.poll(server, path, complete, deadline=started + COLD_START_SECONDS)
        if done_at is None:
            raise server.failure(f"cold start ({network}, SYNC_CONCURRENCY={mode}): GET {path} did not list "
                                 f"all {repo.probe_files} files within {COLD_START_SECONDS}s")
    return done_at - started
