"""The load test's report shows the whole traceback of an error an instance logged: on CI
it is all the next person sees of a failure (the working folder is gone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from loadtest.report import notable_log_lines
from testkit.servers import Instance

LOG = """\
2026-12-05 14:04:25,001 INFO [9787] gcs_sync.requests: GET /simple/ 200 100 B 1.0 ms pip
2026-12-05 14:04:25,092 ERROR [9787] gcs_sync.requests: Traceback (most recent call last):
  File "/app/bottle.py", line 2523, in static_file
    body = '' if request.method == 'HEAD' else open(filename, 'rb')
FileNotFoundError: [Errno 2] No such file or directory: 'loade-1.60.tar.gz'
2026-12-05 14:04:25,096 WARNING [9787] gcs_sync.requests: GET /packages/loade-1.60.tar.gz 500 768 B 34.6 ms
2026-12-05 14:04:25,200 ERROR [9788] gcs_sync.client: filling /tmp/b stopped unexpectedly
Traceback (most recent call last):
  File "/app/fill.py", line 1, in _run
ValueError: the second error's own cause
{"severity": "INFO", "message": "a JSON record (TIER=prod)"}
[2026-12-05 14:04:26 +0000] [9786] [INFO] Booting worker with pid: 9790
"""


def test_an_error_is_shown_with_its_traceback_and_nothing_after_it(tmp_path: Path) -> None:
    log_path = tmp_path / "gunicorn.log"
    log_path.write_text(LOG)
    instance = Instance(url="http://127.0.0.1:1", folder=tmp_path, process=cast(Any, None), log_path=log_path)
    lines = notable_log_lines({"B": instance})
    shown = "\n".join(lines)
    assert "4 lines at WARNING or worse" in lines[0]  # the second traceback's first line counts
    assert "FileNotFoundError: [Errno 2] No such file or directory: 'loade-1.60.tar.gz'" in shown
    assert "in static_file" in shown and "GET /packages/loade-1.60.tar.gz 500" in shown
    assert "GET /simple/" not in shown and "Booting worker" not in shown and "JSON record" not in shown
    assert shown.count("in static_file") == 1  # the traceback once, as the ERROR's rest
    assert shown.count("ValueError: the second error's own cause") == 1 and shown.count("in _run") == 1
