"""structlog configuration: JSON lines in production, readable lines in development.

Every line carries ``service``, ``trace_id`` and ``span_id`` (null outside a span) so a log line
joins its trace in Jaeger. Standard-library loggers (uvicorn, aiokafka, asyncpg) go through the same
processors, so there is one format per process.

What never reaches a log line, in either format (decision 36): request bodies and headers (the
request line names method, path, status and duration only), tokens and secrets, and level-1
data. Tracebacks are plain text in both formats, without local variables (the development
renderer's rich tracebacks printed every local: a request's contacts, its Authorization
header). A last guard scrubs every rendered value, traceback included: e-mail addresses, JWTs,
``Bearer``/``Basic`` credentials, ``whsec_``/``mcs_`` secrets and phone numbers become ``***``;
fields whose names look secret are masked whole.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog
from opentelemetry import trace

_SECRET_KEYS = ("password", "secret", "token", "authorization", "api_key")  # key name endings


def _add_trace_context(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    else:
        event.setdefault("trace_id", None)
        event.setdefault("span_id", None)
    return event


def _redact_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # A last guard: a secret passed as a log field by mistake never reaches the output.
    for key in event:
        if key.lower().endswith(_SECRET_KEYS):
            event[key] = "***"
    return event


_SCRUBBED = re.compile(
    r"""
      [A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+     # an e-mail address
    | \beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*\.?[A-Za-z0-9_-]*  # a JWT (its header is {"...)
    | (?<=\b[Bb]earer\ )[^\s"',]+ | (?<=\b[Bb]asic\ )[^\s"',]+  # header credentials
    | \b(?:whsec|mcs)_[A-Za-z0-9+/=_-]+                         # webhook and client secrets
    | (?<![\w+.-])(?:\+33[\ .-]?|0)[1-9](?:[\ .-]?\d\d){4}(?![\w.-])  # a French phone
    """,
    re.VERBOSE,
)


def scrub(text: str) -> str:
    """``text`` with e-mail addresses, tokens, credentials, secrets and phone numbers masked."""
    return _SCRUBBED.sub("***", text)


def _scrub_values(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # After format_exc_info: the traceback is text by now, and is scrubbed like the rest.
    for key, value in event.items():
        if value is None or isinstance(value, bool | int | float) or key == "timestamp":
            continue
        if isinstance(value, dict | list | tuple):
            event[key] = json.loads(scrub(json.dumps(value, default=str)))
        else:
            event[key] = scrub(value if isinstance(value, str) else str(value))
    return event


# C0 controls, DEL and C1 controls: a URL's ``%1b[31m`` or ``%00`` must not reach a terminal raw.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_controls(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every control character written as Python does (``\\x1b``, ``\\n``); a
    traceback keeps its line breaks (``keep_newlines``)."""

    def escaped(match: re.Match[str]) -> str:
        char = match[0]
        if keep_newlines and char == "\n":
            return char
        return _NAMED.get(char) or f"\\x{ord(char):02x}"

    return _CONTROLS.sub(escaped, text)


def _escape_values(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    # The readable renderer writes strings as they are (other values by repr, which escapes).
    for key, value in event.items():
        if isinstance(value, str):
            event[key] = escape_controls(value, keep_newlines=key == "exception")
    return event


def _json_line(value: Any, **kwargs: Any) -> str:
    # json.dumps escapes C0 and (ensure_ascii) C1 controls, but writes DEL raw; inside a JSON
    # text DEL occurs only in strings, where \u007f is the same character.
    return json.dumps(value, **kwargs).replace("\x7f", "\\u007f")


def configure_logging(
    service: str, *, fmt: Literal["json", "console"] = "json", level: str = "INFO"
) -> None:
    """Configure structlog and the standard library for one service process."""

    def add_service(
        _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        event.setdefault("service", service)
        return event

    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_context,
        _redact_secrets,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json_line)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    # JSON lines always carry trace_id/span_id (null outside a span); a console line shows them
    # only when there is a trace to follow.
    console_only = [] if fmt == "json" else [_drop_empty_trace_ids, _escape_values]
    structlog.configure(
        # A line below the level is dropped first, before the other processors work on it
        # (33 µs of CPU for each, a request's "request" line at WARNING: docs/performance.md).
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Here rather than in the logger chain, which structlog caches on first use.
            add_service,
            # Plain text, no local variables, in both formats; then scrubbed with the rest.
            structlog.processors.format_exc_info,
            _scrub_values,
            *console_only,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    handler.addFilter(_compact_partitions)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn installs its own handlers; route them through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # The access log duplicates the request span and the request-id line of our middleware.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # httpx writes every URL it calls at INFO: a partner's webhook URL may hold a token in its
    # query. The webhook worker logs its attempts itself, by endpoint id.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _drop_empty_trace_ids(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in ("trace_id", "span_id"):
        if event.get(key) is None:
            event.pop(key, None)
    return event


_TOPIC_PARTITION = re.compile(r"TopicPartition\(topic='([^']*)', partition=(\d+)\)")
_PARTITION_SET = re.compile(
    r"(?:frozenset\(|set\()?[{(\[]?"
    rf"{_TOPIC_PARTITION.pattern}(?:, {_TOPIC_PARTITION.pattern})*"
    r"[})\]]?\)?"
)


def _compact_partitions(record: logging.LogRecord) -> bool:
    """aiokafka and FastStream log each group assignment as a set of ``TopicPartition(...)``:
    thousands of characters for a group reading nine topics. Write it per topic instead,
    ``registry.partners[0-4], cordees.offers[0,2]``. Other records pass unchanged."""
    if isinstance(record.msg, dict):  # from a structlog logger (FastStream's): its event dict
        event = record.msg.get("event")
        if isinstance(event, str) and "TopicPartition(" in event:
            record.msg = {**record.msg, "event": _PARTITION_SET.sub(_per_topic, event)}
        return True
    message = record.getMessage()
    if "TopicPartition(" in message:
        record.msg, record.args = _PARTITION_SET.sub(_per_topic, message), None
    return True


def _per_topic(match: re.Match[str]) -> str:
    partitions: dict[str, list[int]] = {}
    for topic, partition in _TOPIC_PARTITION.findall(match.group(0)):
        partitions.setdefault(topic, []).append(int(partition))
    return ", ".join(
        f"{topic}[{_ranges(sorted(numbers))}]" for topic, numbers in sorted(partitions.items())
    )


def _ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 4]`` → ``0-2,4``."""
    runs: list[list[int]] = []
    for number in numbers:
        if runs and number == runs[-1][-1] + 1:
            runs[-1].append(number)
        else:
            runs.append([number])
    return ",".join(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]) for run in runs)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; bind request-scoped values with ``structlog.contextvars``."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
