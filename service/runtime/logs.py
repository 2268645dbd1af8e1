"""Logging set-up: plain text or JSON lines, one line per event.

Patient identifiers never go into messages at INFO or above; study UIDs do (they identify the
work, not the person).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from pynetdicom import _config as pynetdicom_config

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"})


def escape_control(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``), so a value
    sent by a peer (an AE title, a SOP Class UID) cannot start a forged log line."""
    return text.translate(_CONTROL)


class PlainLineFormatter(logging.Formatter):
    """The text format, one line per event: the message's control characters escaped (an
    exception's traceback still follows on its own lines)."""

    def format(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)
        safe.msg, safe.args = escape_control(record.getMessage()), None
        return super().format(safe)


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process id, message (and the exception,
    if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "INFO", json_lines: bool = False) -> None:
    """Send the node's logs to standard error in the chosen format."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(
            PlainLineFormatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    set_levels(level)


def set_levels(level: str) -> None:
    """The node's log level, with pynetdicom's and APScheduler's chatter kept to warnings.

    Also used by receiver processes (:mod:`service.receive.receivers`), which send their records to
    the node process to be written.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    # pynetdicom logs every PDU at INFO; keep its chatter to warnings. Its "standard" event
    # handlers would still format those lines for every PDU and DIMSE message, to be dropped:
    # "none" unbinds them (its warnings and errors stay).
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, root.level))
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, root.level))
