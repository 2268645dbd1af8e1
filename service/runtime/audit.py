"""The audit log: who associated, what they stored, what was exported and purged, with result.

Every audit line goes to the logger ``hypoxnode.audit`` (and so to the node's log); with
``log.audit_file`` set it is also appended to that file, one line per event, so it can be
kept longer than the operational log. Audit lines carry AE titles, addresses and UIDs, never
patient identifiers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from service.runtime.logs import PlainLineFormatter

AUDIT_LOGGER = "hypoxnode.audit"

audit = logging.getLogger(AUDIT_LOGGER)

__all__ = ["AUDIT_LOGGER", "audit", "open_audit_file"]


def open_audit_file(path: Path) -> logging.Handler:
    """Append the audit log to ``path`` (created with its folder); returns the handler.

    The caller removes the handler with ``audit.removeHandler`` and closes it at shut-down.
    """
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=False)
    handler.setLevel(logging.INFO)
    handler.setFormatter(PlainLineFormatter("%(asctime)s %(levelname)s %(message)s"))
    audit.addHandler(handler)
    if audit.getEffectiveLevel() > logging.INFO:
        audit.setLevel(logging.INFO)  # the audit trail is kept whatever the log level
    return handler
