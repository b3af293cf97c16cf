"""Smoke test of the benchmark: ``python -m bench --quick`` runs end to end and writes a
results table with numbers for both servers on every route, and a PNG chart."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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
    for server in ("stock", "wrapper"):
        for route in ROUTES:
            # | N | route | server | p50 ms | p99 ms | requests | req/s | ratio |
            row = re.compile(rf"^\| 100 \| `{re.escape(route)}` \| {server} \| ({NUMBER}) \| ({NUMBER}) \| "
                             rf"(\d+) \| ({NUMBER}) \|", re.M)
            match = row.search(text)
            assert match, f"no row with numbers for {server} {route} in:\n{text}"
            p50, p99, requests, rps = (float(g) for g in match.groups())
            assert 0 < p50 <= p99 and requests >= 20 and rps > 0
    assert "## Targets" in text
    assert re.search(r"^\| .*bucket calls per request.* \| \d+\.\d+ \|", text, re.M), text

    png = tmp_path / "latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
