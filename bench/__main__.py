"""``python -m bench``: stock pypiserver and the gcs_sync wrapper, side by side.

Prints the results as Markdown on stdout and writes ``results.md`` and ``latency.png`` to
``--out`` (default ``bench/results/``); progress goes to stderr. ``--quick`` is a smoke run
for CI (well under a minute; default ``--out bench/results/quick/``). Exit status 1 if a step failed (a server did not start, an
answer was not 200, a deadline passed): the error names what failed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from . import machine
from .baseline import DEFAULT_REV, Baseline, baseline_tree
from .compare import measure_extraction, measure_hashing, measure_size, measure_uploads
from .errors import BenchError
from .gcs_runs import measure_gcs
from .progress import say
from .report import Results, chart, markdown
from .servers import REPO

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
# option: (full run, --quick)
PROFILES = {
    "sizes": ([100, 1_000, 10_000], [100]),
    "seconds": (3.0, 0.5),
    "steady_seconds": (60.0, 5.0),
    "gcs_files": (1_000, 50),
    "hash_files": (20, 3),
    "hash_mb": (5, 1),
    "upload_count": (20, 3),
}


def _sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be 1 or more")
    return sizes


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Stock pypiserver and the gcs_sync wrapper, side by side, on the same "
                                     "generated files. See bench/README.md.")
    parser.add_argument("--sizes", type=_sizes, help="repository sizes, e.g. 100,1000,10000 (default); "
                        "100000 works too (slow)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server (default 2)")
    parser.add_argument("--seconds", type=float, help="seconds per latency and per throughput measurement "
                        "(default 3)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput (default 8)")
    parser.add_argument("--steady-seconds", type=float, help="length of the 50 req/s steady run (default 60)")
    parser.add_argument("--steady-rate", type=float, default=50.0, help="requests/s of the steady run (default 50)")
    parser.add_argument("--gcs-files", type=int, help="files in the GCS emulator bucket for the steady run "
                        "and the cold start (default 1000)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="ms the latency proxy adds per bucket request "
                        "in the second cold-start setting (default 20)")
    parser.add_argument("--hash-files", type=int, help="files of the hashing case's project (default 20)")
    parser.add_argument("--hash-mb", type=int, help="MB per file of the hashing case (default 5)")
    parser.add_argument("--baseline", default=DEFAULT_REV, metavar="REV",
                        help=f"git revision run as a third server, wrapper@REV, from a worktree (default "
                        f"{DEFAULT_REV}, the design before issue 11's metadata records); 'none' to skip")
    parser.add_argument("--upload-count", type=int, help="uploads per server (default 20; --quick 3)")
    parser.add_argument("--upload-mb", type=int, default=5, help="MB per uploaded wheel (default 5)")
    parser.add_argument("--out", type=Path, help=f"results folder (default {DEFAULT_OUT}; with --quick, "
                        f"{DEFAULT_OUT / 'quick'}, so a smoke run never overwrites a full run's results)")
    parser.add_argument("--quick", action="store_true", help="smoke run: N=100, 0.5 s windows, 5 s steady run, "
                        "cold start of 50 files (direct only), hashing case of 3 x 1 MB")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (files, server logs)")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = DEFAULT_OUT / "quick" if args.quick else DEFAULT_OUT
    for name, (full, quick) in PROFILES.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.baseline.strip().lower() in ("none", ""):
        args.baseline = None
    for name in ("workers", "clients", "gcs_files", "hash_files", "hash_mb", "upload_count", "upload_mb"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be 1 or more")
    if args.seconds <= 0 or args.steady_seconds <= 0 or args.steady_rate <= 0 or args.rtt_ms < 0:
        parser.error("--seconds, --steady-seconds and --steady-rate must be above 0, --rtt-ms 0 or more")
    return args


def _command(argv: list[str]) -> str:
    python = Path(sys.executable)
    with_repo = python.absolute()
    try:
        python = with_repo.relative_to(REPO)
    except ValueError:
        pass
    return shlex.join([str(python), "-m", "bench", *argv])


def _baseline_note(rev, tree) -> str:
    if rev is None:
        return "not run (--baseline none)"
    if tree is None:
        return f"{rev}: SKIPPED (git or the commit was not available; see the progress log)"
    return f"wrapper@{rev}: `main:get_app()` of a git worktree of {rev}, its own gcs_sync (checked in each worker)"


def _terminate(signum, frame):
    say(f"got signal {signum}: stopping")
    raise SystemExit(128 + signum)  # unwinds through every finally: servers and emulator stop


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["scale"]:  # issue 13's figures: bench/scale.py
        from .scale import main as scale_main

        return scale_main(argv[1:])
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    results = Results(
        command=_command(argv), machine=machine.describe(),
        settings={k: getattr(args, k) for k in ("workers", "seconds", "clients", "steady_seconds", "steady_rate",
                                                   "gcs_files", "rtt_ms", "hash_files", "hash_mb",
                                                   "upload_count", "upload_mb")},
        sizes=[], hashing=[], steady=None, cold=[], quick=args.quick,
        started_utc=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    workdir = Path(tempfile.mkdtemp(prefix="gcs-sync-bench-"))
    say(f"working folder {workdir}; {results.machine['cores']} cores, {results.machine['cpu']}")
    try:
        with baseline_tree(args.baseline, workdir) as tree:
            baseline = Baseline(args.baseline, tree) if tree is not None else None
            results.baseline = baseline.name if baseline else None
            results.baseline_note = _baseline_note(args.baseline, tree)
            for n in args.sizes:
                results.sizes += measure_size(n, args, workdir, baseline)
                if not args.keep:
                    shutil.rmtree(workdir / f"n{n}", ignore_errors=True)
            results.hashing = measure_hashing(args, workdir, baseline)
            results.uploads = measure_uploads(args, workdir, baseline)
            results.extraction = measure_extraction(args, workdir)
        results.steady, results.cold = measure_gcs(args, workdir)
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
    results.wall_seconds = time.monotonic() - started
    text = markdown(results)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.md").write_text(text, encoding="utf-8")
    chart(results, args.out / "latency.png")
    say(f"wrote {args.out / 'results.md'} and {args.out / 'latency.png'} in {results.wall_seconds:.0f}s")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(main())
