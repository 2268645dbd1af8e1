"""No process of a killed node lives on: worker pool, receiving processes, resource tracker.

``hypoxnode serve`` is started with two workers and two receiving processes, its whole process
tree is read from /proc, the node is SIGKILLed, and every process of that tree must be gone
within 5 s (before the lifeline, the worker pool and multiprocessing's resource tracker stayed
behind with PPID 1, about 200 MB each).
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.peers import wait_for
from tests.reliability import process_tree, start_test_node

GONE_WITHIN_S = 5.0


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def test_sigkill_of_the_node_leaves_no_process_behind(tmp_path: Path) -> None:
    node = start_test_node(
        tmp_path, node_extra="receiver_processes = 2\n", sections="[quant]\nworkers = 2\n"
    )
    root = node.process.pid
    try:
        # the pool's workers (warmed up at start) and the resource tracker join the tree
        wait_for(
            lambda: sum("multiprocessing" in _cmdline(p) for p in process_tree(root)) >= 3,
            60,
            "the worker pool and the receiving processes to start",
        )
        tree = process_tree(root) - {root}
        assert any("resource_tracker" in _cmdline(p) for p in tree), [
            _cmdline(p) for p in tree
        ]
    finally:
        node.kill()

    def all_gone() -> bool:
        return not any(_alive(p) for p in tree)

    try:
        wait_for(all_gone, GONE_WITHIN_S, "every process of the killed node to end")
    finally:
        left = [(p, _cmdline(p)) for p in tree if _alive(p)]
        for pid, _ in left:
            os.kill(pid, 9)
    assert not left
