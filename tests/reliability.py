"""Helpers shared by the reliability and security tests: node configuration, storescu output.

The node always runs as ``hypoxnode serve`` (a subprocess, see :mod:`tests.peers`) so that a
test exercises the same start-up, reconciliation and shut-down as production.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

from pydicom import examples
from pydicom.uid import generate_uid

from service.config import load_config
from service.node import Node
from tests.peers import NodeProcess, free_port, start_node

_SENDING = re.compile(r"Sending file: (.+?)\s*$")
_RESPONSE = re.compile(r"Received Store Response(?: \((.+?)\))?\s*$")
_DIMSE_STATUS = re.compile(r"DIMSE Status\s*:\s*(0x[0-9a-fA-F]{4})")


def node_toml(
    data_dir: Path,
    port: int,
    *,
    http_port: int | None = None,
    stable_seconds: float = 1.0,
    node_extra: str = "",
    sections: str = "",
) -> str:
    """A TOML configuration for ``hypoxnode serve`` on loopback.

    Parameters
    ----------
    data_dir
        ``[node] data_dir``.
    port
        DICOM port.
    http_port
        Port of the HTTP API; None disables it.
    stable_seconds
        Quiet time before a study is processed.
    node_extra
        More ``[node]`` lines.
    sections
        More sections appended verbatim (``[tls]``, ``[retention]``, ``[[destinations]]``).
    """
    http = (
        f'[http]\nenabled = true\nhost = "127.0.0.1"\nport = {http_port}\n'
        if http_port is not None
        else "[http]\nenabled = false\n"
    )
    return f"""
[node]
ae_title = "HYPOXNODE"
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
{node_extra}
[study]
stable_seconds = {stable_seconds}
check_interval_seconds = 0.25
[export]
check_interval_seconds = 0.5
retry_initial_seconds = 1
{http}
{sections}
"""


def destination_toml(ae_title: str, port: int) -> str:
    """A ``[[destinations]]`` block for a PACS on loopback (for ``sections``)."""
    return f'[[destinations]]\nae_title = "{ae_title}"\nhost = "127.0.0.1"\nport = {port}\n'


def start_test_node(
    workdir: Path,
    *,
    http: bool = True,
    stable_seconds: float = 1.0,
    node_extra: str = "",
    sections: str = "",
    port: int | None = None,
    http_port: int | None = None,
    echo_extra: list[str] | None = None,
    echo_port: int | None = None,
) -> NodeProcess:
    """Start ``hypoxnode serve`` with :func:`node_toml`; data in ``workdir/data``
    (``echo_port``: see :func:`~tests.peers.start_node`)."""
    port = port or free_port()
    if http and http_port is None:
        http_port = free_port()
    toml = node_toml(workdir / "data", port, http_port=http_port if http else None,
                     stable_seconds=stable_seconds, node_extra=node_extra, sections=sections)
    node = start_node(workdir, toml, port, echo_extra=echo_extra, echo_port=echo_port)
    node.http_port = http_port if http else None
    return node


def no_delay(event: Any) -> None:
    """EVT_CONN_OPEN handler for test SCUs: TCP_NODELAY, like a scanner tuned for speed.

    Without it each C-STORE of a few tens of kB waits ~40 ms for a delayed ACK (Nagle).
    """
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def store_results(output: str) -> dict[str, str]:
    """File -> store response text (``Success``, ``Refused: OutOfResources``, ...).

    Parses ``storescu -v`` output: each ``Sending file:`` line followed by its ``Received Store
    Response`` line. A file sent but not answered (the peer died) is absent.
    """
    results: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        sending = _SENDING.search(line)
        if sending:
            current = sending.group(1)
            continue
        response = _RESPONSE.search(line)
        if response and current is not None:
            results[current] = response.group(1) or "?"
            current = None
    return results


def dimse_statuses(output: str) -> list[int]:
    """Every DIMSE status in ``storescu -d`` output."""
    return [int(code, 16) for code in _DIMSE_STATUS.findall(output)]


def http_json(port: int, path: str) -> Any:
    """GET a JSON document from the node's HTTP API on loopback."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def index_rows(data_dir: Path, sql: str, *args: Any) -> list[sqlite3.Row]:
    """Read-only query of the node's index (safe while the node runs: WAL)."""
    db = sqlite3.connect(f"file:{data_dir / 'index.sqlite'}?mode=ro", uri=True, timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def snapshot(root: Path, exclude: Path) -> dict[str, int]:
    """Every file below ``root`` but outside ``exclude``, with its size."""
    found: dict[str, int] = {}
    exclude = exclude.resolve()
    for dirpath, _dirs, files in os.walk(root):
        here = Path(dirpath).resolve()
        if here == exclude or here.is_relative_to(exclude):
            continue
        for name in files:
            path = here / name
            try:
                found[str(path)] = path.stat().st_size
            except FileNotFoundError:
                continue
    return found


def ct_study(directory: Path, files: int) -> list[Path]:
    """``files`` CT instances of one new study (pydicom's example CT, new UIDs) in
    ``directory``; for tests about receiving, not quantification."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = generate_uid()
    paths = []
    for number in range(files):
        ds = examples.ct.copy()
        ds.StudyInstanceUID = study_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        paths.append(directory / f"{number}.dcm")
        ds.save_as(paths[-1])
    return paths


def process_children(pid: int) -> set[int]:
    """The direct children of ``pid`` now (from /proc)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            text = (task / "children").read_text()
        except OSError:
            continue
        found |= {int(p) for p in text.split()}
    return found


def process_tree(pid: int) -> set[int]:
    """``pid`` and all its descendants now."""
    seen = {pid}
    todo = [pid]
    while todo:
        for child in process_children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def start_in_process_node(tmp_path: Path, **http: object) -> Node:
    """A started :class:`~service.node.Node` in this process on free ports, completion
    held back an hour; ``http`` overrides ``[http]`` settings."""
    config = load_config(
        None,
        node={"host": "127.0.0.1", "port": 0, "data_dir": tmp_path},
        study={"stable_seconds": 3600},
        http={"port": 0, **http},
    )
    node = Node(config)
    node.start()
    return node
