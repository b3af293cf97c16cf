"""Benchmark: stock pypiserver and the gcs_sync wrapper, side by side, on the same files.

Run ``python -m bench`` from the repository root (``--help`` for the options, ``--quick``
for a smoke run). The table goes to stdout and to ``bench/results/results.md``, the chart
to ``bench/results/latency.png``; progress goes to stderr.

    repository.py       generate the package files (real minimal wheels, once per size)
    servers.py          start and stop gunicorn, find its workers, read their peak RSS
    gunicorn_hooks.py   gunicorn config for both servers: the repo's settings plus hooks
    wrapper.py          the wrapper's environment, in-process pre-sync, bucket-call counts
    baseline.py         the previous design (--baseline REV): git worktree, its pre-sync, its env
    emulator.py         the GCS emulator as a subprocess, and filling a bucket in it
    load.py             latency, throughput and paced clients (http.client)
    compare.py          per-size, hashing and upload measurements of every server; extraction
    gcs_runs.py         steady-state bucket calls and cold start against the emulator
    report.py           Markdown tables, targets and the PNG chart
"""
