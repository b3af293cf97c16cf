"""Log lines: readable text in dev, one Cloud Logging JSON object per line in prod.

    configure_logging      a worker's root handler, in the format of its TIER
    CloudLoggingFormatter  JSON with Cloud Logging's special fields: severity, message,
                           time, httpRequest; plus the ``json_fields`` a line carries

The request log is gcs_sync.web.request_log; the sync and bucket-write lines are
gcs_sync.sync.report.

A line's structured fields travel as ``extra={"json_fields": {...}}`` (the name
google-cloud-logging's own handlers use): the JSON format puts them beside ``message``,
the text format leaves them out (the message already says the same in words).

Never logged: a password, an ``Authorization`` header, a query string. A request line
names the user of its Basic credentials, decoded only as far as the ``:``.
"""

from __future__ import annotations

import json
import logging
import sys
import typing as t

from gcs_sync.clock import rfc3339

if t.TYPE_CHECKING:
    from gcs_sync.config import Settings

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

# Cloud Logging's LogSeverity names, from the most severe down; other levels round down.
_SEVERITIES = ((logging.CRITICAL, "CRITICAL"), (logging.ERROR, "ERROR"), (logging.WARNING, "WARNING"),
               (logging.INFO, "INFO"), (logging.DEBUG, "DEBUG"))
# Fields the formatter writes itself; a line's json_fields never replace them.
_RESERVED = frozenset({"severity", "message", "time", "logger", "process"})


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per record, on one line, with the fields Cloud Logging reads from a
    line written to stdout or stderr (Cloud Run, App Engine, GKE): ``severity``,
    ``message`` (with the traceback, so Error Reporting groups it), ``time`` (RFC 3339)
    and, on request lines, ``httpRequest``. ASCII only: valid JSON whatever the stream's
    encoding (non-ASCII text is escaped as ``\\uXXXX``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        payload: dict[str, object] = {
            "severity": severity(record.levelno),
            "message": message,
            "time": rfc3339(record.created, "microseconds").replace("+00:00", "Z"),
            "logger": record.name,
            "process": record.process,
        }
        fields = getattr(record, "json_fields", None)
        if isinstance(fields, dict):
            payload.update((key, value) for key, value in fields.items() if key not in _RESERVED)
        return json.dumps(payload, default=str)


def severity(level: int) -> str:
    for threshold, name in _SEVERITIES:
        if level >= threshold:
            return name
    return "DEFAULT"


def formatter_for(tier: str) -> logging.Formatter:
    """JSON for prod; text for dev, and for anything else (a TIER not validated yet)."""
    return CloudLoggingFormatter() if tier == "prod" else logging.Formatter(TEXT_FORMAT)


def configure_logging(settings: "Settings") -> None:
    """Send this package's logs to stderr in the tier's format, unless the host (a test,
    say) already configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter_for(settings.tier))
        root.addHandler(handler)
        # Python's warnings through the same handler: one format on the stream.
        logging.captureWarnings(True)
    logging.getLogger("gcs_sync").setLevel(settings.log_level)
    # pypiserver logs a dump of every request object, headers included, at INFO; its
    # warnings still show.
    logging.getLogger("pypiserver").setLevel(logging.WARNING)
