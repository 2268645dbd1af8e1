"""Pytest plugin: the test run fails if any process it started is still running at its end.

Every process a test starts inherits the environment, so at start-up the run marks its own
environment with a token (``HYPOXNODE_TEST_RUN``); at the end every process whose environment
holds that token, other than pytest itself and its own multiprocessing resource tracker (which
ends with pytest), is a leftover. They get a short grace to finish
stopping, then they are listed, killed and the run's exit status is set to failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

MARKER = "HYPOXNODE_TEST_RUN"
GRACE_S = 10.0


def pytest_configure(config: pytest.Config) -> None:
    """Mark this run's environment (inherited by everything the tests start)."""
    os.environ.setdefault(MARKER, uuid.uuid4().hex)


def _marked_processes(token: str) -> dict[int, str]:
    needle = f"{MARKER}={token}".encode()
    found: dict[int, str] = {}
    own = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == own:
            continue
        try:
            if needle not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        state, parent = fields[0], int(fields[1])
        if state == "Z" or (parent == own and "multiprocessing.resource_tracker" in cmdline):
            continue  # pytest's own resource tracker ends when pytest does
        found[int(entry.name)] = cmdline.strip()
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a process it started outlives it (after :data:`GRACE_S`)."""
    token = os.environ.get(MARKER)
    if not token or hasattr(session.config, "workerinput"):  # xdist workers: the main one checks
        return
    deadline = time.monotonic() + GRACE_S
    left = _marked_processes(token)
    while left and time.monotonic() < deadline:
        time.sleep(0.2)  # polling helper: waits for processes that are still stopping
        left = _marked_processes(token)
    if not left:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"{len(left)} process(es) started by the tests are still running:"]
    lines += [f"  pid {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items())]
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
