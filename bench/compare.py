"""Both servers on the same generated files: per repository size, and the hashing case.

Servers run one after the other (never together: they would share the cores), stock
first, each measured route by route: sequential latency, then throughput.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
from pathlib import Path
from typing import Iterator, Optional

from . import load
from .progress import say
from .repository import Repository, generate, generate_big_project
from .servers import REPO, WRAPPER_APP, Server, environment, launched, stock_app, wait_until_ready
from .wrapper import PRODUCT_VARIABLES, presync, worker_calls, wrapper_env

BOOT_SECONDS = 60
SERVERS = ("stock", "wrapper")


@dataclasses.dataclass(frozen=True)
class RouteResult:
    p50: float  # seconds
    p99: float
    samples: int
    rps: Optional[float]  # None where throughput was not measured


@dataclasses.dataclass
class ServerRun:
    server: str
    n: int
    routes: dict[str, RouteResult]
    peak_rss_mb: Optional[float] = None
    requests: int = 0
    bucket_calls: Optional[collections.Counter] = None  # the wrapper's workers; None for stock
    workers_reported: int = 0
    presync_seconds: Optional[float] = None

    @property
    def calls_per_request(self) -> Optional[float]:
        if self.bucket_calls is None or not self.requests:
            return None
        return sum(self.bucket_calls.values()) / self.requests


def _lists_all(repo: Repository):
    path = repo.routes["/simple/<p>/"]
    return lambda server: load.link_count(load.get_ok(server, path)) == repo.probe_files


@contextlib.contextmanager
def stock_server(repo: Repository, workers: int, logs: Path, tag: str) -> Iterator[Server]:
    env = environment({}, drop=PRODUCT_VARIABLES)
    with launched("stock", stock_app(repo.folder), workers=workers, env=env, cwd=logs,
                  log_path=logs / f"stock-{tag}.log") as server:
        wait_until_ready(server, _lists_all(repo), BOOT_SECONDS)
        yield server


@contextlib.contextmanager
def wrapper_server(repo: Repository, workers: int, logs: Path, tag: str, run: ServerRun) -> Iterator[Server]:
    """The wrapper on the local backend (the repository folder is BUCKET/packages), with its
    local folder pre-synced; its workers' bucket calls land in ``run`` once it stopped."""
    calls_dir = logs / f"wrapper-{tag}-calls"
    env = wrapper_env(backend="local", bucket=str(repo.bucket), local_folder=logs / f"wrapper-{tag}-local",
                      calls_dir=calls_dir)
    run.presync_seconds, _ = presync(env)
    try:
        with launched("wrapper", WRAPPER_APP, workers=workers, env=environment(env, drop=PRODUCT_VARIABLES),
                      cwd=REPO, log_path=logs / f"wrapper-{tag}.log") as server:
            wait_until_ready(server, _lists_all(repo), BOOT_SECONDS)
            yield server
    finally:
        run.bucket_calls, run.workers_reported = worker_calls(calls_dir)
        if run.workers_reported < workers:
            say(f"warning: only {run.workers_reported} of {workers} wrapper workers reported bucket calls "
                f"(see {logs / f'wrapper-{tag}.log'})")


def _serve(kind: str, repo: Repository, args, logs: Path, tag: str, run: ServerRun):
    if kind == "stock":
        return stock_server(repo, args.workers, logs, tag)
    return wrapper_server(repo, args.workers, logs, tag, run)


def measure_size(n: int, args, workdir: Path) -> list[ServerRun]:
    say(f"N={n}: generating {n} files over {min(500, n)} projects")
    repo = generate(workdir / f"n{n}" / "bucket" / "packages", n)
    logs = workdir / f"n{n}"
    runs = []
    for kind in SERVERS:
        run = ServerRun(kind, n, {})
        with _serve(kind, repo, args, logs, f"n{n}", run) as server:
            say(f"N={n}: {kind} up on port {server.port}"
                + (f" (pre-sync {run.presync_seconds:.1f}s)" if run.presync_seconds is not None else ""))
            for label, path in repo.routes.items():
                latency = load.latencies(server, path, args.seconds)
                rps = load.throughput(server, path, args.clients, args.seconds)
                run.routes[label] = RouteResult(latency.p50, latency.p99, latency.requests, rps)
                say(f"N={n}: {kind} {label}: p50 {latency.p50 * 1000:.2f} ms, p99 {latency.p99 * 1000:.2f} ms "
                    f"({latency.requests} requests), {rps:.0f} req/s with {args.clients} clients")
            run.peak_rss_mb = server.peak_rss_mb()
            run.requests = server.requests
        runs.append(run)
    return runs


def measure_hashing(args, workdir: Path) -> list[ServerRun]:
    files, size = args.hash_files, args.hash_mb * 1024 * 1024
    say(f"hashing: one project of {files} files of {args.hash_mb} MB")
    repo = generate_big_project(workdir / "hashing" / "bucket" / "packages", files, size)
    logs = workdir / "hashing"
    label = "/simple/<p>/"
    runs = []
    for kind in SERVERS:
        run = ServerRun(kind, files, {})
        with _serve(kind, repo, args, logs, "hashing", run) as server:
            latency = load.latencies(server, repo.routes[label], args.seconds)
            run.routes[label] = RouteResult(latency.p50, latency.p99, latency.requests, None)
            run.peak_rss_mb = server.peak_rss_mb()
            run.requests = server.requests
            say(f"hashing: {kind} {label}: p50 {latency.p50 * 1000:.2f} ms ({latency.requests} requests)")
        runs.append(run)
    return runs
