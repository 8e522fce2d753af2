"""Structured logs: one JSON object per line, with any ``extra`` fields kept.

While a request is being served its id (see :mod:`app.metrics`) is in
:data:`request_id`, and every log record created meanwhile, by any logger and in the
request's worker threads too, carries it as ``record.request_id``: so the JSON line of a
warning deep in a store call can be matched to the access line of its request.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

import orjson

#: Record attributes that are not the caller's ``extra`` (uvicorn adds an ANSI-coloured
#: copy of its messages as ``color_message``).
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

#: The id of the request being served in this context, or None outside requests.
request_id: ContextVar[str | None] = ContextVar("dvid_cloud_request_id", default=None)


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class RequestIdFilter(logging.Filter):
    """Stamps records with the current request id (for handlers set up elsewhere)."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = request_id.get()
        if current is not None and not hasattr(record, "request_id"):
            record.request_id = current
        return True


class _StampingFactory:
    """A log record factory that stamps each record with the request id (its type makes
    :func:`install_request_ids` idempotent)."""

    def __init__(self, inner: Callable[..., logging.LogRecord]) -> None:
        self.inner = inner
        self.stamp = RequestIdFilter()

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        self.stamp.filter(record)
        return record


def install_request_ids() -> None:
    """Make every log record created during a request carry its id (idempotent).

    Done in the record factory rather than with a filter on one handler or logger, so that
    records of every logger reach every handler (pytest's ``caplog``, Lambda's) stamped.
    """
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, _StampingFactory):
        logging.setLogRecordFactory(_StampingFactory(factory))


def configure_logging(level: str = "info") -> None:
    install_request_ids()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for chatty in ("botocore", "boto3", "urllib3", "google", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
