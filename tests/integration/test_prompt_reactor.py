"""The event-driven acceptor of ``service/receive/_pynetdicom/prompt_reactor.py`` over real
associations."""

from __future__ import annotations

import hashlib
import inspect
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from pynetdicom.transport import (
    AssociationServer,
    AssociationSocket,
    RequestHandler,
    ThreadedAssociationServer,
)

from service.config import load_config
from service.receive._pynetdicom.prompt_reactor import PromptAssociation, PromptDUL, PromptSocket
from service.receive._pynetdicom.prompt_server import PromptRequestHandler
from service.receive.listener import start_listener
from service.storage.index import Index
from service.storage.store import InstanceStore
from tests.peers import storescu, wait_for
from tests.reliability import ct_study

UPSTREAM = {
    Association._run_reactor: "f28838c5559e462a",
    DULServiceProvider.run_reactor: "e3a10eb3a0931e48",
    DULServiceProvider.stop_dul: "28a7e0be126e7b30",
    DULServiceProvider._is_transport_event: "8725ed03bb8fbdef",
    DULServiceProvider.send_pdu: "7cbce5da8594124e",
    DULServiceProvider.kill_dul: "5ceccf8dd01c2072",
    RequestHandler._create_association: "05c8d12b79863cdb",
    AssociationSocket.recv: "6bc20a33b1b7cfe7",
    AssociationServer.__init__: "edacb98bdfb7b974",
    AssociationServer.server_bind: "cf69278a05a5c777",
    AssociationServer.server_close: "3fa1b358badbe682",
    AssociationServer.shutdown: "e8e2c3a41009886d",
    DIMSEServiceProvider.receive_primitive: "5f99c86b14a15cef",
    DIMSEServiceProvider.send_msg: "a839cf2fb46976d9",
    AE.start_server: "d3868a2df83d3cc0",
    AE.make_server: "6569298ac5cf837c",
    Event.dataset_path.fget: "7eba7552ff800249",
}
"""pynetdicom 3.0.4 methods that ``service/receive/_pynetdicom`` overrides, re-implements or
relies on (every method its subclasses override, and the upstream code it mimics), by source
hash."""


def test_upstream_methods_are_the_ones_prompt_reactor_was_written_against() -> None:
    changed = [
        method.__qualname__ for method, digest in UPSTREAM.items()
        if hashlib.sha256(inspect.getsource(method).encode()).hexdigest()[:16] != digest
    ]
    assert not changed, (
        f"pynetdicom changed {changed}: review"
        " service/receive/_pynetdicom/prompt_reactor.py against the new "
        "code, then update the hashes here"
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ThreadedAssociationServer, Index]]:
    config = load_config(None, node={
        "host": "127.0.0.1", "port": 0, "data_dir": tmp_path, "network_timeout_s": 2,
    })
    index = Index(tmp_path / "index.sqlite")
    running = start_listener(config, InstanceStore(tmp_path), index)
    yield running, index
    running.shutdown()
    index.close()


def _associate(port: int) -> Association:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="HYPOXNODE")
    assert assoc.is_established
    return assoc


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_node_accepts_with_prompt_associations(
    server: tuple[ThreadedAssociationServer, Index],
) -> None:
    running, _ = server
    assert running.RequestHandlerClass is PromptRequestHandler
    assoc = _associate(int(running.server_address[1]))
    try:
        accepted = running.active_associations
        assert len(accepted) == 1
        assert isinstance(accepted[0], PromptAssociation)
        assert isinstance(accepted[0].dul, PromptDUL)
        assert isinstance(accepted[0].dul.socket, PromptSocket)
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_storescu_instances_are_stored_and_answered(
    server: tuple[ThreadedAssociationServer, Index], tmp_path: Path,
) -> None:
    running, index = server
    files = ct_study(tmp_path / "scanner", 20)
    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    result = storescu(files, int(running.server_address[1]), "HYPOXNODE")
    assert result.returncode == 0, result.stderr
    assert len(index.study_instances(study_uid)) == 20


def test_release_abort_and_idle_peer_end_the_association_and_free_its_sockets(
    server: tuple[ThreadedAssociationServer, Index],
) -> None:
    running, _ = server
    port = int(running.server_address[1])
    _associate(port).release()  # warm-up: lazily opened files and sockets of the first one
    wait_for(lambda: not running.active_associations, 5, "warm-up association to end")
    before = _open_fds()
    for number in range(10):
        assoc = _associate(port)
        if number % 2:
            assoc.abort()
        else:
            assoc.release()
    wait_for(lambda: not running.active_associations, 5, "released/aborted associations to end")

    idle = socket.create_connection(("127.0.0.1", port))  # connects, never sends a request
    try:
        started = time.monotonic()
        wait_for(lambda: idle.recv(1) == b"", 10, "the node to close an idle connection")
        assert time.monotonic() - started < 8  # network_timeout_s = 2, not forever
    finally:
        idle.close()
    wait_for(lambda: not running.active_associations, 5, "idle association to end")
    wait_for(lambda: _open_fds() <= before, 5, f"file descriptors back to {before}")


def test_socket_reads_whole_pdus_and_returns_what_came_when_the_peer_closes() -> None:
    ours, peer = socket.socketpair()
    reader = PromptSocket.__new__(PromptSocket)  # recv() needs only the connected socket
    reader.socket = ours
    try:
        payload = os.urandom(300_000)
        sender = threading.Thread(target=peer.sendall, args=(payload + b"tail",))
        sender.start()
        assert reader.recv(len(payload)) == payload  # many kernel reads, one PDU
        sender.join()
        peer.close()
        assert reader.recv(100) == b"tail"  # closed after 4 of 100 bytes: what came
    finally:
        ours.close()
        peer.close()
