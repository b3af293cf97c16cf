"""Every server on the same generated files: per repository size, the hashing case, and
uploads.

Servers run one after the other (never together: they would share the cores): stock, then
the baseline (``wrapper@REV``, the design before issue 11, when ``--baseline`` is not
``none``), then the current wrapper. That order matters: the current wrapper's pre-sync
writes its metadata records beside the files in the shared bucket folder, which the others
must not see. Each is measured route by route: sequential latency, then throughput.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import Iterator, Optional

from . import baseline as baseline_mod
from . import load
from .baseline import Baseline
from .errors import BenchError
from .progress import say
from .repository import Repository, generate, generate_big_project, write_sdist, write_wheel
from .servers import REPO, WRAPPER_APP, Server, environment, launched, stock_app, wait_until_ready
from .wrapper import PRODUCT_VARIABLES, presync, worker_calls, wrapper_env

BOOT_SECONDS = 60
CURRENT = "wrapper"
STOCK = "stock"
JSON_ROUTE = "/simple/<p>/ JSON"  # /simple/<p>/ asked for PEP 691 JSON
JSON_ACCEPT = "application/vnd.pypi.simple.v1+json"
# Upload writes need no credentials on any server (stock: password_file=".", authenticate=[]).
WRITABLE = {"PASSWORD_FILE": ".", "AUTHENTICATE": "."}
EXTRACTION_RUNS = 20


@dataclasses.dataclass(frozen=True)
class RouteResult:
    p50: float  # seconds
    p99: float
    samples: int
    rps: Optional[float]  # None where throughput was not measured
    content_type: str = ""  # of the answers

    @property
    def json_served(self) -> bool:
        return self.content_type.split(";")[0].strip() == JSON_ACCEPT


@dataclasses.dataclass
class ServerRun:
    server: str  # "stock", "wrapper@REV" (the baseline) or "wrapper" (this tree)
    n: int
    routes: dict[str, RouteResult]
    peak_rss_mb: Optional[float] = None
    requests: int = 0
    bucket_calls: Optional[collections.Counter] = None  # the wrappers' workers; None for stock
    workers_reported: int = 0
    presync_seconds: Optional[float] = None

    @property
    def calls_per_request(self) -> Optional[float]:
        if self.bucket_calls is None or not self.requests:
            return None
        return sum(self.bucket_calls.values()) / self.requests


@dataclasses.dataclass(frozen=True)
class UploadRun:
    server: str
    count: int
    mb: int
    p50: float  # seconds
    p99: float


@dataclasses.dataclass(frozen=True)
class Extraction:
    kind: str  # "wheel" or "sdist (.tar.gz)"
    mb: int
    p50: float  # seconds of compute_record
    runs: int


def server_names(baseline: Optional[Baseline]) -> list[str]:
    return [STOCK] + ([baseline.name] if baseline else []) + [CURRENT]


def _lists_all(repo: Repository):
    path = repo.routes["/simple/<p>/"]
    return lambda server: load.link_count(load.get_ok(server, path)) == repo.probe_files


@contextlib.contextmanager
def stock_server(repo: Repository, workers: int, logs: Path, tag: str) -> Iterator[Server]:
    env = environment({}, drop=PRODUCT_VARIABLES)
    with launched(STOCK, stock_app(repo.folder), workers=workers, env=env, cwd=logs,
                  log_path=logs / f"stock-{tag}.log") as server:
        wait_until_ready(server, _lists_all(repo), BOOT_SECONDS)
        yield server


@contextlib.contextmanager
def wrapper_server(repo: Repository, workers: int, logs: Path, tag: str, run: ServerRun,
                   baseline: Optional[Baseline] = None, extra: Optional[dict[str, str]] = None) -> Iterator[Server]:
    """A wrapper on the local backend (the repository folder is BUCKET/packages), with its
    local folder pre-synced: this tree's (in-process pre-sync, gunicorn in the repository),
    or the ``baseline``'s (pre-sync in a subprocess, gunicorn in its worktree). Its workers'
    bucket calls land in ``run`` once it stopped."""
    name = baseline.name if baseline else CURRENT
    slug = f"{'baseline' if baseline else 'wrapper'}-{tag}"
    calls_dir = logs / f"{slug}-calls"
    env = wrapper_env(backend="local", bucket=str(repo.bucket), local_folder=logs / f"{slug}-local",
                      calls_dir=calls_dir, extra=extra)
    if baseline is None:
        run.presync_seconds, _ = presync(env)
        tree, process_env = REPO, environment(env, drop=PRODUCT_VARIABLES)
    else:
        run.presync_seconds = baseline_mod.presync(baseline.tree, env)
        tree, process_env = baseline.tree, baseline_mod.environment(baseline.tree, env)
    try:
        with launched(name, WRAPPER_APP, workers=workers, env=process_env, cwd=tree,
                      log_path=logs / f"{slug}.log") as server:
            wait_until_ready(server, _lists_all(repo), BOOT_SECONDS)
            source = server.check_source(tree)
            if tag.startswith("n") or tag == "upload":
                say(f"{name}: workers import {source}")
            yield server
    finally:
        run.bucket_calls, run.workers_reported = worker_calls(calls_dir)
        if run.workers_reported < workers:
            say(f"warning: only {run.workers_reported} of {workers} {name} workers reported bucket calls "
                f"(see {logs / f'{slug}.log'})")


def _serve(name: str, repo: Repository, args, logs: Path, tag: str, run: ServerRun,
           baseline: Optional[Baseline], extra: Optional[dict[str, str]] = None):
    if name == STOCK:
        return stock_server(repo, args.workers, logs, tag)
    return wrapper_server(repo, args.workers, logs, tag, run, baseline if name != CURRENT else None, extra)


def measure_size(n: int, args, workdir: Path, baseline: Optional[Baseline] = None) -> list[ServerRun]:
    say(f"N={n}: generating {n} wheels over {min(500, n)} projects")
    started = time.monotonic()
    repo = generate(workdir / f"n{n}" / "bucket" / "packages", n)
    say(f"N={n}: generated in {time.monotonic() - started:.1f}s")
    logs = workdir / f"n{n}"
    runs = []
    for name in server_names(baseline):
        run = ServerRun(name, n, {})
        with _serve(name, repo, args, logs, f"n{n}", run, baseline) as server:
            say(f"N={n}: {name} up on port {server.port}"
                + (f" (pre-sync {run.presync_seconds:.1f}s)" if run.presync_seconds is not None else ""))
            for label, path in repo.routes.items():
                latency = load.latencies(server, path, args.seconds)
                rps = load.throughput(server, path, args.clients, args.seconds)
                run.routes[label] = RouteResult(latency.p50, latency.p99, latency.requests, rps, latency.content_type)
                say(f"N={n}: {name} {label}: p50 {latency.p50 * 1000:.2f} ms, p99 {latency.p99 * 1000:.2f} ms "
                    f"({latency.requests} requests), {rps:.0f} req/s with {args.clients} clients")
            path = repo.routes["/simple/<p>/"]
            latency = load.latencies(server, path, args.seconds, headers={"Accept": JSON_ACCEPT})
            run.routes[JSON_ROUTE] = RouteResult(latency.p50, latency.p99, latency.requests, None,
                                                 latency.content_type)
            if run.routes[JSON_ROUTE].json_served:
                _check_json(server, path, repo.probe_files)
            say(f"N={n}: {name} {path} with Accept: {JSON_ACCEPT}: p50 {latency.p50 * 1000:.2f} ms, "
                f"p99 {latency.p99 * 1000:.2f} ms ({latency.requests} requests), served {latency.content_type}")
            run.peak_rss_mb = server.peak_rss_mb()
            run.requests = server.requests
        runs.append(run)
    return runs


def _check_json(server: Server, path: str, files: int) -> None:
    """That a PEP 691 answer lists the project's files (each with its sha256)."""
    page = json.loads(load.get_ok(server, path, headers={"Accept": JSON_ACCEPT}))
    listed = page.get("files", [])
    if len(listed) != files or not all(f.get("hashes", {}).get("sha256") for f in listed):
        raise server.failure(f"the JSON of {path} lists {len(listed)} files (with hashes?), not {files}")


def measure_hashing(args, workdir: Path, baseline: Optional[Baseline] = None) -> list[ServerRun]:
    files, size = args.hash_files, args.hash_mb * 1024 * 1024
    say(f"hashing: one project of {files} wheels of {args.hash_mb} MB")
    repo = generate_big_project(workdir / "hashing" / "bucket" / "packages", files, size)
    logs = workdir / "hashing"
    label = "/simple/<p>/"
    runs = []
    for name in server_names(baseline):
        run = ServerRun(name, files, {})
        with _serve(name, repo, args, logs, "hashing", run, baseline) as server:
            latency = load.latencies(server, repo.routes[label], args.seconds)
            run.routes[label] = RouteResult(latency.p50, latency.p99, latency.requests, None, latency.content_type)
            run.peak_rss_mb = server.peak_rss_mb()
            run.requests = server.requests
            say(f"hashing: {name} {label}: p50 {latency.p50 * 1000:.2f} ms ({latency.requests} requests)"
                + (f", pre-sync {run.presync_seconds:.1f}s" if run.presync_seconds is not None else ""))
        runs.append(run)
    return runs


def measure_uploads(args, workdir: Path, baseline: Optional[Baseline] = None) -> list[UploadRun]:
    """``--upload-count`` distinct wheels of ``--upload-mb`` MB (incompressible payload, real
    METADATA), POSTed one after the other to each server, each on its own fresh copy of a
    100-file repository; p50 and p99 of the POSTs."""
    count, mb = args.upload_count, args.upload_mb
    folder = workdir / "uploads"
    wheels_dir = folder / "wheels"
    wheels_dir.mkdir(parents=True, exist_ok=True)
    say(f"uploads: writing {count} wheels of {mb} MB")
    wheels = [write_wheel(wheels_dir, "upl", f"2.0.{k}", _payload(mb, seed=k)) for k in range(count)]
    runs = []
    for name in server_names(baseline):
        slug = name.replace("@", "-")
        repo = generate(folder / slug / "bucket" / "packages", 100)
        run = ServerRun(name, 100, {})
        if name == STOCK:
            env = environment({}, drop=PRODUCT_VARIABLES)
            context = launched(STOCK, stock_app(repo.folder), workers=args.workers, env=env, cwd=folder,
                               log_path=folder / "stock-upload.log")
        else:
            context = _serve(name, repo, args, folder, "upload", run, baseline, extra=WRITABLE)
        with context as server:
            wait_until_ready(server, _lists_all(repo), BOOT_SECONDS)
            seconds = [load.upload(server, wheel.name, wheel.read_bytes()) for wheel in wheels]
            listed = load.link_count(load.get_ok(server, "/simple/upl/"))
            if listed != count:
                raise server.failure(f"/simple/upl/ lists {listed} files after {count} uploads")
        missing = [wheel.name for wheel in wheels if not (repo.folder / wheel.name).is_file()]
        if missing:
            raise BenchError(f"{name}: {len(missing)} uploaded wheels are not in its bucket folder "
                                  f"{repo.folder}, e.g. {missing[0]}")
        result = UploadRun(name, count, mb, load.percentile(seconds, 50), load.percentile(seconds, 99))
        say(f"uploads: {name}: {count} x {mb} MB, p50 {result.p50 * 1000:.1f} ms, p99 {result.p99 * 1000:.1f} ms")
        runs.append(result)
    return runs


def _payload(mb: int, seed: int) -> bytes:
    import random

    return random.Random(1000 + seed).randbytes(mb * 1024 * 1024)


def measure_extraction(args, workdir: Path) -> list[Extraction]:
    """In this process: ``gcs_sync.records.compute.compute_record`` (what an upload adds: open
    the archive, read and check its core metadata) on one ``--upload-mb`` MB wheel and one
    sdist (.tar.gz) of the same payload; p50 of 20 runs each."""
    import sys

    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from gcs_sync.records.compute import compute_record

    mb = args.upload_mb
    folder = workdir / "extraction"
    folder.mkdir(parents=True, exist_ok=True)
    files = [("wheel", write_wheel(folder, "ext", "1.0", _payload(mb, seed=-1))),
             ("sdist (.tar.gz)", write_sdist(folder, "ext", "1.0", _payload(mb, seed=-2)))]
    results = []
    for kind, path in files:
        seconds = []
        for _ in range(EXTRACTION_RUNS):
            started = time.perf_counter()
            record, _ = compute_record(path, path.name, sha256="0" * 64, size=path.stat().st_size,
                                       upload_time="2026-01-01T00:00:00.000000Z", uploader=None)
            seconds.append(time.perf_counter() - started)
        if record.requires_python is None:
            raise RuntimeError(f"compute_record found no Requires-Python in {path.name}")
        results.append(Extraction(kind, mb, load.percentile(seconds, 50), EXTRACTION_RUNS))
        say(f"extraction: compute_record on a {mb} MB {kind}: p50 {results[-1].p50 * 1000:.2f} ms")
    return results
