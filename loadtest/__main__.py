"""``python -m loadtest [--seconds N] [--clients N] [--backend local|gcs|s3]``

Starts the storage server for gcs (gcp-storage-emulator) or s3 (moto) on 127.0.0.1, a new
bucket, and instances A and B; runs the load; prints the report on stdout (progress on
stderr). Exit status 0 if every invariant held, 1 if one failed, 2 on a usage error.
The working folder (instance logs, local folders) is kept when something failed.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from . import run
from .cluster import BACKENDS, open_bucket


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.split("\n\n")[1])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the load (default 60)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP client threads (default 8), "
                        "plus one for twine and pip")
    parser.add_argument("--backend", choices=BACKENDS, default="local", help="the bucket (default local)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' random choices (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder even if everything passed")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 3600 or not 1 <= args.clients <= 64:
        parser.error("--seconds must be in (0, 3600], --clients in [1, 64]")
    return args


def _say(message: str) -> None:
    print(f"loadtest: {message}", file=sys.stderr, flush=True)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through every finally: instances and servers stop


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="gcs-sync-load-"))
    passed = False
    try:
        with open_bucket(args.backend, workdir) as probe:
            result = run(probe, workdir, seconds=args.seconds, clients=args.clients, seed=args.seed, say=_say)
        sys.stdout.write(result.text)
        passed = result.passed
        return 0 if passed else 1
    finally:
        if passed and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            _say(f"kept {workdir}")


if __name__ == "__main__":
    sys.exit(main())
