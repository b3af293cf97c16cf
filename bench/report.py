"""The results as Markdown (targets first, then every measurement) and as a PNG chart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from .compare import CURRENT, JSON_ROUTE, STOCK, Extraction, ServerRun, UploadRun
from .gcs_runs import MODES, ColdStart, Steady

ROUTES = ("/simple/", "/simple/<p>/", "/packages/<file>")
PROBE_ROUTE = "/simple/<p>/"
TABLE_ROUTES = ("/simple/", "/simple/<p>/", JSON_ROUTE, "/packages/<file>")
TARGET_N = 10_000
BASELINE_SIMPLE_GOAL = 1.2  # current / baseline p50 of /simple/<p>/, HTML and JSON, at N=10,000
BASELINE_UPLOAD_GOAL = 2.0  # current / baseline p50 of a 5 MB upload


@dataclasses.dataclass
class Results:
    command: str
    machine: dict[str, str]
    settings: dict[str, object]
    sizes: list[ServerRun]
    hashing: list[ServerRun]
    steady: Optional[Steady]
    cold: list[ColdStart]
    quick: bool
    started_utc: str
    wall_seconds: float = 0.0
    baseline: Optional[str] = None  # "wrapper@REV" when the baseline ran
    baseline_note: str = ""
    uploads: list[UploadRun] = dataclasses.field(default_factory=list)
    extraction: list[Extraction] = dataclasses.field(default_factory=list)

    @property
    def servers(self) -> list[str]:
        return [STOCK] + ([self.baseline] if self.baseline else []) + [CURRENT]

    def upload(self, server: Optional[str]) -> Optional[UploadRun]:
        return next((u for u in self.uploads if u.server == server), None)

    def run(self, server: str, n: int) -> Optional[ServerRun]:
        return next((r for r in self.sizes if r.server == server and r.n == n), None)

    @property
    def ns(self) -> list[int]:
        return sorted({r.n for r in self.sizes})

    @property
    def target_n(self) -> int:
        """The size the targets are defined at, or the largest measured if it was not run."""
        return TARGET_N if TARGET_N in self.ns else max(self.ns)


def ms(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    value = seconds * 1000
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def times(ratio: Optional[float]) -> str:
    if ratio is None:
        return "–"
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


def p50_ratio(stock: Optional[ServerRun], wrapper: Optional[ServerRun], route: str) -> Optional[float]:
    if not stock or not wrapper or route not in stock.routes or route not in wrapper.routes:
        return None
    return stock.routes[route].p50 / wrapper.routes[route].p50


def route_label(run: ServerRun, route: str) -> str:
    """``/simple/<p>/`` JSON, or JSON asked (HTML served) where the server does not speak PEP 691."""
    if route != JSON_ROUTE:
        return f"`{route}`"
    if run.routes[route].json_served:
        return f"`{PROBE_ROUTE}` JSON"
    return f"`{PROBE_ROUTE}` JSON asked (HTML served)"


def versus_baseline(results: "Results", n: int, route: str) -> Optional[float]:
    """Current wrapper p50 / baseline p50 (the issue's 1.2x target)."""
    base = results.run(results.baseline, n) if results.baseline else None
    return p50_ratio(results.run(CURRENT, n), base, route)


def upload_ratio(results: "Results") -> Optional[float]:
    current, base = results.upload(CURRENT), results.upload(results.baseline)
    return current.p50 / base.p50 if current and base else None


# -- targets -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    measured: str
    goal: str
    passed: Optional[bool]  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return "n/a" if self.passed is None else ("pass" if self.passed else "FAIL")


def _check(value: Optional[float], ok) -> Optional[bool]:
    return None if value is None else bool(ok(value))


def targets(results: Results) -> list[Target]:
    n = results.target_n
    stock, wrapper = results.run("stock", n), results.run("wrapper", n)
    found: list[Target] = []

    speedup = p50_ratio(stock, wrapper, PROBE_ROUTE)
    found.append(Target(f"`{PROBE_ROUTE}` p50 at N={n:,}: stock / wrapper", times(speedup), "≥ 30x",
                        _check(speedup, lambda v: v >= 30)))

    small = results.run("wrapper", 100)
    scaling = None
    if small and wrapper and n != 100:
        scaling = wrapper.routes[PROBE_ROUTE].p50 / small.routes[PROBE_ROUTE].p50
    measured = times(scaling) if small and n != 100 else "– (needs N=100 and a larger N)"
    found.append(Target(f"wrapper `{PROBE_ROUTE}` p50 at N={max(n, TARGET_N):,} / at N=100", measured, "≤ 1.5x",
                        _check(scaling, lambda v: v <= 1.5)))

    hashing = {r.server: r for r in results.hashing}
    hash_speedup = p50_ratio(hashing.get("stock"), hashing.get("wrapper"), PROBE_ROUTE)
    case = f"{results.settings['hash_files']} x {results.settings['hash_mb']} MB"
    found.append(Target(f"project of {case}: `{PROBE_ROUTE}` p50 stock / wrapper", times(hash_speedup), "≥ 10x",
                        _check(hash_speedup, lambda v: v >= 10)))

    steady = results.steady
    per_request = steady.calls_per_request if steady else None
    rate = f"{steady.target_rate:g} req/s" if steady else "steady rate"
    size = f"N={steady.n:,}" if steady else "not run"
    found.append(Target(f"bucket calls per request at {rate} (GCS emulator, {size})",
                        "–" if per_request is None else f"{per_request:.4f}", "≤ 0.01",
                        _check(per_request, lambda v: v <= 0.01)))

    for cold in results.cold:
        found.append(Target(f"cold start N={cold.n:,} ({cold.network}): SYNC_CONCURRENCY={MODES[0]} / "
                            f"={MODES[-1]}", times(cold.speedup), "≥ 4x", _check(cold.speedup, lambda v: v >= 4)))

    base = results.baseline or "baseline (not run)"
    for route in (PROBE_ROUTE, JSON_ROUTE):
        ratio = versus_baseline(results, n, route)
        what = "HTML" if route == PROBE_ROUTE else "JSON"
        found.append(Target(f"`{PROBE_ROUTE}` {what} p50 at N={n:,}: wrapper / {base}", times(ratio),
                            f"≤ {BASELINE_SIMPLE_GOAL:g}x", _check(ratio, lambda v: v <= BASELINE_SIMPLE_GOAL)))
    ratio = upload_ratio(results)
    found.append(Target(f"upload p50 of a {results.settings['upload_mb']} MB wheel: wrapper / {base}", times(ratio),
                        f"≤ {BASELINE_UPLOAD_GOAL:g}x", _check(ratio, lambda v: v <= BASELINE_UPLOAD_GOAL)))

    rss = wrapper.peak_rss_mb if wrapper else None
    found.append(Target(f"wrapper peak RSS per worker at N={n:,}", "–" if rss is None else f"{rss:.0f} MB",
                        "≤ 150 MB", _check(rss, lambda v: v <= 150)))
    return found


# -- Markdown ------------------------------------------------------------------------------

def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def markdown(results: Results) -> str:
    s = results.settings
    m = results.machine
    minutes, seconds = divmod(round(results.wall_seconds), 60)
    out = [
        "# Benchmark: stock pypiserver vs. the gcs_sync wrapper (and the previous design)",
        "",
        f"- Command: `{results.command}`",
        f"- Machine: {m['cores']} cores, {m['cpu']}; {m['os']}; {m['python']}",
        f"- Code: {m['code']}; {m['versions']}",
        f"- Run: {results.started_utc}, {minutes}m {seconds:02d}s in all",
        f"- Servers: gunicorn, {s['workers']} sync workers each, the same settings (the repo's gunicorn.conf.py "
        "via bench/gunicorn_hooks.py: 30 s timeout, no gunicorn access log; the wrapper logs a line per "
        "request itself), run one at a time on the same generated files; stock is "
        "`pypiserver:app(roots=[DIR], backend_arg=\"simple-dir\", disable_fallback=True, "
        "password_file=\".\", authenticate=[])`, the wrapper is `main:get_app()` on STORAGE_BACKEND=local "
        "(the same folder as its bucket), its local folder pre-synced, read-only.",
        f"- Latency: one client, sequential, a new connection per request (as pip with sync workers), "
        f"{s['seconds']:g} s per route (at least 20, at most 2000 requests). Throughput: {s['clients']} "
        f"concurrent clients for {s['seconds']:g} s. Every answer was a 200.",
        f"- Baseline: {results.baseline_note or 'not run'}. Same settings, same generated files (real wheels "
        "with METADATA and Requires-Python); servers run in the order stock, baseline, wrapper (the wrapper's "
        "pre-sync writes its records beside the files).",
    ]
    if results.quick:
        out.append("- **--quick**: a smoke run with small sizes and short windows; the targets are defined "
                   "for the full run and are only indicative here.")
    out += ["", "## Targets", ""]
    out += _table(["target", "measured", "goal", "result"],
                  [[t.name, t.measured, t.goal, t.verdict] for t in targets(results)])

    out += ["", "## Latency and throughput", ""]
    rows = []
    for n in results.ns:
        for route in TABLE_ROUTES:
            stock = results.run(STOCK, n)
            for server in results.servers:
                run = results.run(server, n)
                if run is None or route not in run.routes:
                    continue
                r = run.routes[route]
                ratio = times(p50_ratio(stock, run, route)) if run is not stock else ""
                versus = times(versus_baseline(results, n, route)) if server == CURRENT and results.baseline else ""
                rows.append([f"{n:,}", route_label(run, route), run.server, ms(r.p50), ms(r.p99), str(r.samples),
                             "–" if r.rps is None else f"{r.rps:.0f}", ratio, versus])
    out += _table(["N", "route", "server", "p50 ms", "p99 ms", "requests", f"req/s ({s['clients']} clients)",
                   "stock p50 / this p50", "wrapper p50 / baseline p50"], rows)
    smallest, largest = results.run("wrapper", 100), results.run("wrapper", max(results.ns))
    if smallest and largest and largest is not smallest:
        growth = largest.routes[PROBE_ROUTE].p50 / smallest.routes[PROBE_ROUTE].p50
        out += ["", f"Wrapper `{PROBE_ROUTE}` p50 at N={largest.n:,} / at N=100: {times(growth)}."]
    out += ["", "`/simple/<p>/` is `/simple/proj-000/`, a project present at every N (1 file at N=100, "
            "N/500 files above 500); `/packages/<file>` is one of its 1-4 KB files. Files are spread over "
            "min(500, N) projects. `JSON`: the same page asked with `Accept: application/vnd.pypi.simple.v1+json` "
            "(PEP 691; latency only); a server that answers HTML to it is labelled `JSON asked (HTML served)`, "
            "so its figure is its HTML page once more."]

    out += _baseline_section(results)

    out += ["", "## Memory and bucket calls per server", ""]
    rows = []
    for n in results.ns:
        for server in results.servers:
            run = results.run(server, n)
            if run is None:
                continue
            calls = run.bucket_calls
            rows.append([f"{n:,}", server, "–" if run.peak_rss_mb is None else f"{run.peak_rss_mb:.0f}",
                         str(run.requests), "–" if calls is None else _calls(calls),
                         "–" if run.calls_per_request is None else f"{run.calls_per_request:.4f}",
                         "–" if run.presync_seconds is None else f"{run.presync_seconds:.1f}"])
    out += _table(["N", "server", "peak RSS per worker MB", "requests sent", "bucket calls (workers)",
                   "calls/request", "pre-sync s"], rows)
    out += ["", "Peak RSS is the largest VmHWM of the gunicorn workers (/proc/<pid>/status), read just before "
            "stopping: Linux only. Bucket calls are those of the wrappers' workers (local backend here), "
            "written by the worker_exit hook; the pre-sync is not counted. Requests sent include "
            "the readiness probes. Pre-sync: filling the wrapper's empty local folder from the bucket before "
            "gunicorn starts (the cold-start work); the current wrapper's includes computing every file's "
            "metadata record (opening each wheel) and storing it in the bucket, the baseline's (run in a "
            "subprocess with its own code) does not."]

    out += ["", "## Hashing: one project of large files", ""]
    rows = []
    hashing = {r.server: r for r in results.hashing}
    for server in results.servers:
        run = hashing.get(server)
        if run is None:
            continue
        r = run.routes[PROBE_ROUTE]
        ratio = times(p50_ratio(hashing.get(STOCK), run, PROBE_ROUTE)) if server != STOCK else ""
        presync = "–" if run.presync_seconds is None else f"{run.presync_seconds:.2f}"
        rows.append([f"{s['hash_files']} x {s['hash_mb']} MB", server, ms(r.p50), ms(r.p99), str(r.samples), ratio,
                     presync])
    out += _table(["project", "server", "`/simple/<p>/` p50 ms", "p99 ms", "requests", "stock p50 / this p50",
                   "pre-sync s"], rows)
    out += ["", "Stock pypiserver hashes every file of the project (sha256) on every `/simple/<p>/`."]

    steady = results.steady
    if steady is not None:
        out += ["", "## Steady-state bucket calls (wrapper on the GCS emulator)", ""]
        out += _table(["N", "target req/s", "achieved req/s", "seconds", "requests sent", "bucket calls",
                       "calls/request", "late requests"],
                      [[f"{steady.n:,}", f"{steady.target_rate:g}", f"{steady.paced.rate:.1f}",
                        f"{steady.paced.seconds:.1f}", str(steady.requests), _calls(steady.calls),
                        f"{steady.calls_per_request:.4f}", str(steady.paced.late)]])
        out += ["", f"Pre-synced, then one client cycling through the three routes on a fixed schedule; "
                f"calls from {steady.workers_reported} of {s['workers']} workers (worker_exit hook)."]

    if results.cold:
        out += ["", "## Cold start (wrapper on the GCS emulator)", ""]
        rows = []
        for cold in results.cold:
            overflows = "/".join("–" if cold.overflows.get(m) is None else str(cold.overflows[m]) for m in MODES)
            rows.append([cold.network, f"{cold.n:,}"] + [f"{cold.seconds[m]:.2f}" for m in MODES]
                        + [times(cold.speedup), overflows])
        out += _table(["network", "N", f"SYNC_CONCURRENCY={MODES[0]} s", f"SYNC_CONCURRENCY={MODES[-1]} s",
                       "speedup", "listen overflows"], rows)
        out += ["", "From launching gunicorn (empty local folder, no pre-sync) to the first 200 of "
                "`/simple/<p>/` listing all of that project's files (polled every 20 ms). `direct`: loopback "
                "to the emulator, where a download costs ~2.7 ms of client CPU and no network wait, so threads "
                f"have little to overlap; `+{s['rtt_ms']:g} ms/request`: through testkit/fault_proxy.py adding "
                "that much before forwarding each request, standing in for the round trip to a real bucket. "
                "Listen overflows: connections this machine dropped for a full accept queue during each run "
                "(system-wide counter; each costs a 1 s retry, so it should be 0); the emulator is started "
                "with a listen backlog of 128 for that reason."]
    return "\n".join(out) + "\n"


def _baseline_section(results: Results) -> list[str]:
    s = results.settings
    out = ["", f"## Against the previous design ({results.baseline or 'baseline not run'})", ""]
    rows = []
    for n in results.ns:
        for route in (PROBE_ROUTE, JSON_ROUTE):
            current = results.run(CURRENT, n)
            base = results.run(results.baseline, n) if results.baseline else None
            if current is None or route not in current.routes:
                continue
            ratio = versus_baseline(results, n, route)
            verdict = "" if n != results.target_n else (
                "n/a" if ratio is None else ("pass" if ratio <= BASELINE_SIMPLE_GOAL else "FAIL"))
            b = base.routes[route] if base and route in base.routes else None
            c = current.routes[route]
            rows.append([f"{n:,}", route_label(current, route),
                         "–" if b is None else f"{ms(b.p50)} / {ms(b.p99)}" + (
                             "" if route != JSON_ROUTE or b.json_served else " (HTML served)"),
                         f"{ms(c.p50)} / {ms(c.p99)}", times(ratio), verdict])
    out += _table(["N", "route", "baseline p50 / p99 ms", "wrapper p50 / p99 ms", "wrapper / baseline p50",
                   f"≤ {BASELINE_SIMPLE_GOAL:g}x at N={results.target_n:,}"], rows)
    out += ["", f"The issue's target is at N={TARGET_N:,}; smaller sizes are shown for the trend. The baseline "
            "has no JSON: asked for it, it answers its HTML page, so that row compares the wrapper's JSON with "
            "the baseline's HTML."]

    if results.uploads:
        out += ["", "### Uploads", ""]
        rows = []
        base_upload = results.upload(results.baseline)
        for server in results.servers:
            sent = results.upload(server)
            if sent is None:
                continue
            versus = times(sent.p50 / base_upload.p50) if server == CURRENT and base_upload else ""
            rows.append([server, f"{sent.count} x {sent.mb} MB", ms(sent.p50), ms(sent.p99), versus])
        out += _table(["server", "uploads", "p50 ms", "p99 ms", f"wrapper / baseline p50 (≤ {BASELINE_UPLOAD_GOAL:g}x)"],
                      rows)
        out += ["", f"Distinct real wheels (METADATA with Requires-Python, an incompressible {s['upload_mb']} MB "
                "payload), POSTed one after the other as multipart `file_upload` without credentials "
                "(PASSWORD_FILE=. and AUTHENTICATE=. on the wrappers, `password_file=\".\", authenticate=[]` on "
                "stock), each server on a fresh 100-wheel repository, the wrappers on the local backend; from "
                "sending the request to the end of the 200. The wrapper's upload also opens the wheel to compute "
                "its record, and stores the record and the METADATA beside the file."]
    if results.extraction:
        out += ["", "### What the extraction costs", ""]
        out += _table(["file", "`compute_record` p50 ms", "runs"],
                      [[f"{e.mb} MB {e.kind}", ms(e.p50), str(e.runs)] for e in results.extraction])
        out += ["", "`gcs_sync.records.compute.compute_record` in the benchmark's process on a file already on "
                "disk (warm page cache): what an upload adds to open the archive and read its core metadata. "
                "A wheel's METADATA is found from the zip's central directory, so its cost hardly depends on "
                "the wheel's size; an sdist is a gzip stream that is read (and checked) to its end."]
    return out


def _calls(calls) -> str:
    total = sum(calls.values())
    detail = ", ".join(f"{op} {count}" for op, count in sorted(calls.items()))
    return f"{total} ({detail})" if detail else str(total)


# -- chart ---------------------------------------------------------------------------------

def chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    ns = results.ns
    fig, axes = plt.subplots(1, len(ROUTES), figsize=(5 * len(ROUTES), 4.2), sharey=True)
    colors = {STOCK: "tab:red", CURRENT: "tab:blue"}
    if results.baseline:
        colors[results.baseline] = "tab:green"
    for ax, route in zip(axes, ROUTES):
        for server in results.servers:
            runs = [results.run(server, n) for n in ns]
            points = [(n, r.routes[route]) for n, r in zip(ns, runs) if r and route in r.routes]
            xs = [n for n, _ in points]
            ax.plot(xs, [r.p50 * 1000 for _, r in points], "o-", color=colors[server], label=f"{server} p50")
            ax.plot(xs, [r.p99 * 1000 for _, r in points], "x--", color=colors[server], alpha=0.5,
                    label=f"{server} p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(ns, [f"{n:,}" for n in ns])
        ax.minorticks_off()
        ax.set_title(route)
        ax.set_xlabel("files in the repository (N)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("latency, ms (sequential, log scale)")
    axes[0].legend(fontsize="small")
    m = results.machine
    versus = f" and {results.baseline}" if results.baseline else ""
    fig.suptitle(f"stock pypiserver vs. gcs_sync wrapper{versus}, {results.settings['workers']} gunicorn workers "
                 f"({m['cores']} cores, {m['cpu']})", fontsize="medium")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
