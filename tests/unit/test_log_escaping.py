"""Values a peer chooses (AE titles, SOP Class UIDs) cannot forge log or audit lines."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from service.runtime.audit import audit, open_audit_file
from service.runtime.logs import PlainLineFormatter, escape_control

FORGED = "EVIL\r\n2026-12-04 10:00:00,000 INFO hypoxnode.audit: C-STORE ok\x1b[2K"


def test_control_characters_are_escaped() -> None:
    assert escape_control("A\nB\rC\tD\x00E\x7fF\x85G") == "A\\nB\\rC\\tD\\x00E\\x7fF\\x85G"
    assert escape_control("ÄÖ plain text 1.2.840") == "ÄÖ plain text 1.2.840"


def test_a_forged_line_stays_on_its_own_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PlainLineFormatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("hypoxnode.test-escaping")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("association from %s refused", FORGED)
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    assert "\\r\\n2026-12-04" in lines[0] and "\x1b" not in lines[0]


def test_the_audit_file_escapes_too(tmp_path: Path) -> None:
    handler = open_audit_file(tmp_path / "audit.log")
    try:
        audit.info("C-STORE from %s sop_class=%s", FORGED, "1.2\n3")
    finally:
        audit.removeHandler(handler)
        handler.close()
    lines = (tmp_path / "audit.log").read_text().splitlines()
    assert len(lines) == 1 and lines[0].endswith("sop_class=1.2\\n3")
