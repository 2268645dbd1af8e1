"""Worker processes end when the node process that started them is gone, however it ended.

The worker pool's processes are spawned by :class:`concurrent.futures.ProcessPoolExecutor`.
When the node is stopped cleanly the pool is shut down; when it is killed (SIGKILL, the OOM
killer) nothing tells the workers, and they used to live on with PPID 1, each holding a few
hundred MB, together with multiprocessing's resource tracker (which ends by itself once no
process holds its pipe).

``PR_SET_PDEATHSIG`` is not used here: it fires when the *thread* that forked the child ends,
and the executor may start workers from short-lived threads. Instead each worker watches its
parent through a pidfd (Linux 5.3+), which becomes readable when the parent exits, and falls
back to checking ``os.getppid()`` once a second where pidfds are not available.
"""

from __future__ import annotations

import os
import select
import threading

POLL_FALLBACK_S = 1.0
"""Interval of the ``getppid`` check where pidfds are unavailable."""


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this process at once when ``parent_pid`` exits.

    Parameters
    ----------
    parent_pid
        The node process's pid, taken by the node when it creates the pool.
    """
    if os.getppid() != parent_pid:
        os._exit(1)  # the node died before this worker started
    thread = threading.Thread(
        target=_watch, args=(parent_pid,), name="hypoxnode-lifeline", daemon=True
    )
    thread.start()


def _watch(parent_pid: int) -> None:
    try:
        pidfd = os.pidfd_open(parent_pid)
    except ProcessLookupError:
        os._exit(1)
    except (AttributeError, OSError):
        _poll_parent(parent_pid)
        return
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    while not poller.poll():
        pass
    os._exit(1)


def _poll_parent(parent_pid: int) -> None:
    stop = threading.Event()
    while not stop.wait(POLL_FALLBACK_S):
        if os.getppid() != parent_pid:
            os._exit(1)
