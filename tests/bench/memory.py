"""Resident memory of a process and its descendants, sampled from ``/proc`` in a thread.

``VmRSS`` of ``/proc/<pid>/status`` for the main process and for every descendant (the node's
worker processes are children of it). The sum over the tree counts shared pages once per
process, so it is an upper bound of what the tree holds.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in kB (0 when the process is gone or is a zombie)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return 0


def _parent_map() -> dict[int, int]:
    """pid -> ppid of every process visible now."""
    parents: dict[int, int] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            stat = (PROC / entry.name / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``."""
    children: dict[int, list[int]] = {}
    for child, parent in _parent_map().items():
        children.setdefault(parent, []).append(child)
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


RECEIVER_COMM = "hypoxnode-recv"
"""``/proc/<pid>/comm`` of the node's receiver processes (``service/receive/receivers.py``)."""


def _comm(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


@dataclass(frozen=True)
class Sample:
    """One reading: wall-clock time, main process, all descendants, the largest one and the
    receiver processes (kB)."""

    t: float
    main_kb: int
    children_kb: int
    largest_child_kb: int
    receivers_kb: int = 0

    @property
    def receiving_kb(self) -> int:
        """Main process plus receiver processes: everything that receives, no worker."""
        return self.main_kb + self.receivers_kb

    @property
    def tree_kb(self) -> int:
        """Main process plus descendants."""
        return self.main_kb + self.children_kb


@dataclass(frozen=True)
class Peaks:
    """Peaks over a time window, in MB (10^6 bytes)."""

    main_mb: float
    tree_mb: float
    largest_child_mb: float
    samples: int

    def to_json(self) -> dict[str, float]:
        """Plain numbers for the report."""
        return {
            "main_mb": round(self.main_mb, 1),
            "tree_mb": round(self.tree_mb, 1),
            "largest_child_mb": round(self.largest_child_mb, 1),
            "samples": self.samples,
        }


class RssSampler:
    """Samples the RSS of ``pid`` and its descendants every ``interval_s`` until stopped.

    Use as a context manager; :meth:`peaks` summarises any time window of the samples.
    """

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sampling (idempotent)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def sample(self) -> Sample:
        """Take one reading now (also usable without the thread)."""
        children = descendants(self.pid)
        kids = [rss_kb(child) for child in children]
        receivers = sum(kb for child, kb in zip(children, kids, strict=True)
                        if _comm(child) == RECEIVER_COMM)
        return Sample(time.time(), rss_kb(self.pid), sum(kids), max(kids, default=0), receivers)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval_s)

    def peaks(self, start: float | None = None, end: float | None = None) -> Peaks:
        """Peaks of the samples taken between ``start`` and ``end`` (wall-clock seconds)."""
        window = [
            s for s in list(self.samples)
            if (start is None or s.t >= start) and (end is None or s.t <= end)
        ]
        return Peaks(
            main_mb=max((s.main_kb for s in window), default=0) * 1024 / 1e6,
            tree_mb=max((s.tree_kb for s in window), default=0) * 1024 / 1e6,
            largest_child_mb=max((s.largest_child_kb for s in window), default=0) * 1024 / 1e6,
            samples=len(window),
        )
