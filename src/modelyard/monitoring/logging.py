"""JSON logs on stdout, each line carrying the request id and the OpenTelemetry trace id."""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

request_id_var: ContextVar[str | None] = ContextVar("modelyard_request_id", default=None)

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class TraceContextFilter(logging.Filter):
    """Adds ``request_id``, ``trace_id`` and ``span_id`` to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            record.trace_id = None
            record.span_id = None
        return True


def configure_logging(level: str = "INFO", *, json_output: bool = True) -> None:
    """Route the ``modelyard`` and ``uvicorn`` loggers to stdout, as JSON by default."""
    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(TraceContextFilter())
    if json_output:
        handler.setFormatter(
            JsonFormatter(
                _FORMAT,
                rename_fields={"levelname": "level", "asctime": "time"},
                datefmt="%Y-%m-%dT%H:%M:%S%z",
            )
        )
    else:
        handler.setFormatter(logging.Formatter(_FORMAT + " request_id=%(request_id)s"))
    for name in ("modelyard", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    # Our middleware writes the access log, with the request id and the route.
    logging.getLogger("uvicorn.access").disabled = True
