"""Several receiving processes on one DICOM port (``[node] receiver_processes``).

A real ``hypoxnode serve`` with DCMTK ``storescu`` senders; the processes are found through
the status API and ``/proc``, and killed with real signals.
"""

from __future__ import annotations

import os
import re
import signal
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from service.receive._pynetdicom.spool_files import SPOOL_PREFIX
from tests.peers import storescu, wait_for
from tests.reliability import ct_study, http_json, index_rows, start_test_node

SENDERS = 8
FILES_PER_SENDER = 5


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2:].split()[1]) == pid and b"spawn_main" in cmdline:
            found.add(int(entry))
    return found


def _metric(http_port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_connections_are_served_by_several_processes_and_counted_by_the_node(
    tmp_path: Path,
) -> None:
    node = start_test_node(tmp_path, node_extra="receiver_processes = 3\n")
    try:
        assert _status(node.http_port)["configured"] == 3
        wait_for(lambda: _status(node.http_port)["running"] == 3, 30, "3 receiving processes")
        receivers = set(_status(node.http_port)["pids"])
        studies = [ct_study(tmp_path / f"s{n}", FILES_PER_SENDER) for n in range(SENDERS)]
        with ThreadPoolExecutor(SENDERS) as pool:
            results = list(pool.map(lambda files: storescu(files, node.port, "HYPOXNODE"),
                                    studies))
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        rows = index_rows(tmp_path / "data", "SELECT COUNT(*) AS n FROM instances")
        assert rows[0]["n"] == SENDERS * FILES_PER_SENDER

        # Every association was logged by the node process, tagged with the pid that served it
        accepted = re.findall(
            r"\[(\d+)\] hypoxnode\.audit: association accepted from SCANNER@", node.log())
        assert len(accepted) == SENDERS
        assert set(map(int, accepted)) == receivers, f"not handed to every receiver: {accepted}"
        wait_for(lambda: _metric(node.http_port, "hypoxnode_instances_received_total")
                 == SENDERS * FILES_PER_SENDER, 10, "/metrics to count every instance")
        # Every association's end reached the node: it counts no connection as still held
        wait_for(lambda: _status(node.http_port)["connections"] == [0, 0, 0], 10,
                 "the node to count every connection done")
    finally:
        node.stop()


def _status(http_port: int) -> dict[str, Any]:
    return dict(http_json(http_port, "/api/status")["receiver_processes"])


def test_a_receiver_process_that_dies_is_replaced_and_none_outlives_the_node(
    tmp_path: Path,
) -> None:
    node = start_test_node(tmp_path, node_extra="receiver_processes = 2\n")
    try:
        wait_for(lambda: _status(node.http_port)["running"] == 2, 30, "2 receiving processes")
        receivers = set(_status(node.http_port)["pids"])
        assert len(receivers) == 2 and receivers <= _children(node.process.pid)
        assert not any(_listens_on(pid, node.port) for pid in receivers)  # the node accepts
        assert _listens_on(node.process.pid, node.port)
        victim = min(receivers)
        # What a receiver killed mid-transfer leaves: its partial data set in tmp/
        spool_dir = tmp_path / "data" / "tmp"
        planted = {pid: spool_dir / f"{SPOOL_PREFIX}{pid}-planted.part" for pid in receivers}
        for path in planted.values():
            path.write_bytes(b"partial")
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            status = _status(node.http_port)
            return bool(status["restarts"] == 1 and status["running"] == 2
                        and len(status["pids"]) == 2 and victim not in status["pids"])

        wait_for(replaced, 30, "a new receiver process taking connections")
        assert f"receiver process {victim} ended" in node.log()
        assert not planted[victim].exists(), "the dead receiver's partial data set is left"
        assert all(path.exists() for pid, path in planted.items() if pid != victim)
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/", timeout=10) as page:
            assert "receiving processes 2 of 2 (1 restarted)" in page.read().decode()
        files = ct_study(tmp_path / "after", 4)
        for _ in range(4):  # connections handed to both processes still succeed
            assert storescu(files, node.port, "HYPOXNODE").returncode == 0

        survivors = set(_status(node.http_port)["pids"])
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in survivors), 15,
                 "receiver processes to end with the killed node")
    finally:
        node.stop()


def test_a_stopped_node_lets_the_open_association_finish(tmp_path: Path) -> None:
    """SIGTERM (``systemctl stop``) mid-association: no new connection is taken, but the
    sender's association runs to its end and every instance is stored, then the node exits
    cleanly and leaves nothing in tmp/."""
    files = ct_study(tmp_path / "study", 400)
    node = start_test_node(tmp_path, node_extra="receiver_processes = 2\n")
    try:
        with ThreadPoolExecutor(1) as pool:
            sending = pool.submit(storescu, files, node.port, "HYPOXNODE")

            def stored() -> int:
                return int(index_rows(tmp_path / "data",
                                      "SELECT COUNT(*) AS n FROM instances")[0]["n"])

            wait_for(lambda: stored() >= 10, 60, "the first instances stored")
            node.process.send_signal(signal.SIGTERM)
            assert stored() < len(files), "the study was sent before the stop: make it larger"
            result = sending.result(timeout=120)
        assert node.process.wait(60) == 0, node.log()[-3000:]
    finally:
        node.stop()
    assert result.returncode == 0, result.stderr[-2000:]
    assert stored() == len(files)
    assert "association released from SCANNER@127.0.0.1:" in node.log()
    assert f"{len(files)} instances stored" in node.log()
    assert not list((tmp_path / "data" / "tmp").iterdir())


def _listens_on(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (from /proc)."""
    try:
        inodes = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
                  for fd in os.listdir(f"/proc/{pid}/fd")
                  if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:[")}
        table = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in table:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.split(":")[1], 16) == port and inode in inodes:
            return True
    return False


def test_the_node_process_receives_itself_when_configured_so(tmp_path: Path) -> None:
    node = start_test_node(tmp_path, node_extra="receiver_processes = 1\n")
    try:
        status = _status(node.http_port)
        assert status == {"configured": 1, "running": 1, "restarts": 0, "pids": [],
                          "connections": []}
        files = ct_study(tmp_path / "one", 3)
        assert storescu(files, node.port, "HYPOXNODE").returncode == 0
        assert "association accepted from SCANNER@" in node.log()
        assert re.search(rf"\[{node.process.pid}\] hypoxnode\.audit: association accepted "
                         "from SCANNER@", node.log())
    finally:
        node.stop()
