"""Smoke test of the benchmark: ``python -m bench --quick`` runs end to end and writes a
results table with numbers for every server on every route (stock, the current wrapper and,
where git has the commit, the baseline wrapper@41c5ef9), the JSON-asked rows, the uploads and
the extraction cost, and a PNG chart. No wall-clock figure is asserted."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cgroup import MemoryCgroup
from testkit.servers import REPO

pytestmark = pytest.mark.slow

TIMEOUT = 180
ROUTES = ("/simple/", "/simple/<p>/", "/packages/<file>")
NUMBER = r"\d+(?:\.\d+)?"


def _run_quick(out: Path) -> subprocess.CompletedProcess:
    process = subprocess.Popen([sys.executable, "-m", "bench", "--quick", "--out", str(out)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the benchmark stops its servers and emulator on the way out.
        process.send_signal(signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        raise AssertionError(f"python -m bench --quick took over {TIMEOUT}s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_quick_benchmark_writes_table_and_chart(tmp_path: Path) -> None:
    result = _run_quick(tmp_path)
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stderr[-3000:]}"

    text = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert result.stdout == text  # the table on stdout is the file
    baseline_ran = "Baseline: wrapper@41c5ef9: " in text
    if not baseline_ran:  # a clone without that commit, or no git: said, and the rest still runs
        assert "SKIPPED" in text, text
    servers = ("stock", "wrapper@41c5ef9", "wrapper") if baseline_ran else ("stock", "wrapper")
    for server in servers:
        for route in ROUTES:
            # | N | route | server | p50 ms | p99 ms | requests | req/s | ratios |
            row = re.compile(rf"^\| 100 \| `{re.escape(route)}` \| {re.escape(server)} \| ({NUMBER}) \| "
                             rf"({NUMBER}) \| (\d+) \| ({NUMBER}) \|", re.M)
            match = row.search(text)
            assert match, f"no row with numbers for {server} {route} in:\n{text}"
            p50, p99, requests, rps = (float(g) for g in match.groups())
            assert 0 < p50 <= p99 and requests >= 20 and rps > 0
        # /simple/<p>/ asked for PEP 691 JSON: latency only (no throughput)
        json_row = re.compile(rf"^\| 100 \| `/simple/<p>/` JSON(?: asked \(HTML served\))? \| {re.escape(server)} \| "
                              rf"({NUMBER}) \| ({NUMBER}) \| (\d+) \| – \|", re.M)
        match = json_row.search(text)
        assert match, f"no JSON row for {server} in:\n{text}"
        assert 0 < float(match[1]) <= float(match[2]) and int(match[3]) >= 20
        # | server | uploads | p50 ms | p99 ms | ratio |
        upload = re.compile(rf"^\| {re.escape(server)} \| 3 x 5 MB \| ({NUMBER}) \| ({NUMBER}) \|", re.M)
        match = upload.search(text)
        assert match, f"no upload row for {server} in:\n{text}"
        assert 0 < float(match[1]) <= float(match[2])
    assert "## Targets" in text
    assert re.search(r"^\| .*bucket calls per request.* \| \d+\.\d+ \|", text, re.M), text
    for kind in ("wheel", r"sdist \(\.tar\.gz\)"):
        assert re.search(rf"^\| 5 MB {kind} \| {NUMBER} \| 20 \|", text, re.M), text
    if baseline_ran:
        for what in ("HTML", "JSON"):
            assert re.search(rf"^\| `/simple/<p>/` {what} p50 at N=100: wrapper / wrapper@41c5ef9 \| {NUMBER}x \| "
                             r"≤ 1\.2x \| (pass|FAIL) \|", text, re.M), text
        assert re.search(rf"^\| upload p50 of a 5 MB wheel: wrapper / wrapper@41c5ef9 \| {NUMBER}x \| ≤ 2x \| "
                         r"(pass|FAIL) \|", text, re.M), text
        assert "wrapper@41c5ef9 | 3 x 5 MB" in text

    # the baseline's worktree is gone again
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True)
    assert "baseline-41c5ef9" not in worktrees.stdout

    png = tmp_path / "latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SCALE_FIGURES = ("one upload elsewhere: work per instance", "cold start to full index, cache/redirect",
                 "cold start, mirror, local-folder bucket", "memory of one instance (every process), PSS",
                 "`/simple/<p>/` over the scale window: p99.9", "local disk in cache mode (max)",
                 "uploads/s with the one-write-per-second limit modelled", "`/simple/<p>/` p50")


def test_quick_scale_reports_every_figure_for_now_and_today(tmp_path: Path) -> None:
    """``python -m bench scale --quick``: every issue-13 figure, for this checkout and for the
    baseline worktree (5b48c80) where git has it, in the table and as JSON rows."""
    done = subprocess.run([sys.executable, "-m", "bench", "scale", "--quick", "--out", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, f"exit {done.returncode}:\n{done.stderr[-3000:]}"
    text = (tmp_path / "results.md").read_text(encoding="utf-8")
    assert done.stdout == text
    rows = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["rows"]
    baseline_ran = any(row["subject"] == "today (5b48c80)" for row in rows)
    if not baseline_ran:  # a clone without that commit: said, and "now" still runs
        assert "SKIPPED" in done.stderr, done.stderr[-3000:]
    for title in SCALE_FIGURES:
        # | figure | files | today | now | now / today | goal | met | peers |
        line = next((line for line in text.splitlines() if line.startswith(f"| {title} |")), None)
        assert line, f"no row for {title!r} in:\n{text}"
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        assert re.search(NUMBER, cells[3]), line  # now: measured
        if baseline_ran:
            assert re.search(NUMBER, cells[2]) and re.fullmatch(rf"{NUMBER}x", cells[4]), line
        assert cells[6] in ("yes", "NO"), line
    subjects = {"now", "today (5b48c80)"} if baseline_ran else {"now"}
    for figure in ("elsewhere", "cold_catalog", "cold_mirror", "rss", "latency", "cache_disk", "throttle", "p50"):
        measured = {row["subject"] for row in rows if row["figure"] == figure and row["value"] is not None}
        assert measured == subjects, (figure, measured)
    elsewhere = next(row for row in rows if row["figure"] == "elsewhere" and row["subject"] == "now")
    assert all(r["listed"] and sum(r["calls"].values()) >= 1 for r in elsewhere["detail"]["rounds"])
    rss = next(row for row in rows if row["figure"] == "rss" and row["subject"] == "now")
    # The master, two workers and the listing process (gunicorn.conf.py's when_ready).
    assert rss["detail"]["processes"] == 4 and 0 < rss["detail"]["pss_mb"] <= rss["value"]
    # Where this machine lets it make one, the instance ran in a memory cgroup of its own.
    cgroup, _ = MemoryCgroup.made("probe")
    if cgroup is None:
        assert "cgroup_mb" not in rss["detail"] and "memory without a cgroup's figure (" in done.stderr
    else:
        cgroup.remove()
        assert 0 < rss["detail"]["cgroup_anon_mb"] <= rss["detail"]["cgroup_mb"], rss
        assert "its cgroup" in rss["text"], rss


def test_a_memory_cgroup_is_charged_what_its_processes_hold_and_goes_with_them() -> None:
    """bench/cgroup.py: a process started through ``wrapped`` that fills 64 MB is charged
    at least that, as anonymous memory; once it has ended the cgroup is removed."""
    cgroup, why_not = MemoryCgroup.made("test")
    if cgroup is None:
        pytest.skip(f"this machine gives no memory cgroup to make: {why_not}")
    filler = "import sys, time; held = bytearray(64_000_000); print('full', flush=True); time.sleep(60)"
    process = subprocess.Popen(cgroup.wrapped([sys.executable, "-c", filler]), stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline() == "full\n"
        charged = cgroup.charged_mb()
        assert charged is not None and charged[1] >= 64 and charged[0] >= charged[1], charged
    finally:
        try:
            process.kill()
            process.wait(10)
        finally:
            cgroup.remove()
    assert not cgroup.path.exists()
