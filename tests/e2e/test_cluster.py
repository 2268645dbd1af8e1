"""Three ``hypoxnode serve`` nodes behind a real haproxy, one shared data folder, one real
PostgreSQL (a throwaway cluster) holding the index and the job queue (Procrastinate).

Scanners (DCMTK storescu) push through haproxy, so the instances of one study land on several
nodes; whichever node's "study complete" compare-and-set wins queues the processing job,
any node runs it, and delivery to the PACS (a pynetdicom storage SCP counting every
SOP Instance it receives) runs on one node at a time.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pydicom
import pytest
from pynetdicom import AE, StoragePresentationContexts, evt

from service.storage.index import Index
from service.storage.index_schema import UPSERT_INSTANCE
from service.storage.study_state import StudyState
from service.synthetic import make_study, write_study
from tests.peers import (
    Haproxy,
    NodeProcess,
    Orthanc,
    free_port,
    require_tool,
    result_object_count,
    start_haproxy,
    start_node,
    start_orthanc,
    wait_for,
)
from tests.postgres import PostgresCluster, postgres_cluster
from tests.reliability import destination_toml, http_json, node_toml, store_results

pytestmark = pytest.mark.e2e

NODES = 3


@dataclass
class Cluster:
    """The running cluster."""

    nodes: list[NodeProcess]
    proxy: Haproxy
    database_url: str
    postgres: PostgresCluster
    configs: list[tuple[Path, str, int]]
    """(work folder, configuration, DICOM port) of each node, to start it again."""

    def restart_all(self) -> None:
        """Stop every node, then start them all again."""
        for node in self.nodes:
            assert node.stop() == 0
        self.nodes = [_start(*config) for config in self.configs]


def _start(workdir: Path, toml: str, port: int) -> NodeProcess:
    node = start_node(workdir, toml, port)
    node.http_port = _http_port(toml)
    return node


@contextlib.contextmanager
def running_cluster(tmp_path: Path, pacs_port: int, stable_seconds: float = 5.0,
                    more_destinations: str = "") -> Iterator[Cluster]:
    """Three nodes (node1-3) on a throwaway PostgreSQL and one data folder, haproxy in front,
    results to a PACS on ``pacs_port`` (and ``more_destinations``)."""
    with postgres_cluster() as postgres:
        url = postgres.create_database("hypoxnode")
        shared = tmp_path / "shared"
        ports = [free_port() for _ in range(NODES)]
        proxy = start_haproxy(tmp_path / "haproxy", ports, proxy_protocol=False)
        configs = []
        for number, port in enumerate(ports, 1):
            sections = (f'[cluster]\ndatabase_url = "{url}"\nnode_id = "node{number}"\n'
                        "stalled_after_s = 3\n[quant]\nworkers = 1\n"
                        + destination_toml("PACS", pacs_port) + more_destinations)
            toml = node_toml(shared, port, http_port=free_port(), stable_seconds=stable_seconds,
                             node_extra="receiver_processes = 1", sections=sections)
            configs.append((tmp_path / f"node{number}", toml, port))
        cluster = Cluster([], proxy, url, postgres, configs)
        try:
            cluster.nodes = [_start(*config) for config in configs]
            yield cluster
        finally:
            for node in cluster.nodes:
                node.stop()
            proxy.stop()


@pytest.fixture
def cluster(tmp_path: Path, pacs: tuple[int, list[str]]) -> Iterator[Cluster]:
    with running_cluster(tmp_path, pacs[0]) as running:
        yield running


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    """A real Orthanc as a second PACS."""
    pacs = start_orthanc(tmp_path / "orthanc")
    yield pacs
    pacs.stop()


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return str(response.read().decode())


def _http_port(toml: str) -> int:
    section = toml.split("[http]", 1)[1]
    return int(section.split("port = ", 1)[1].split("\n", 1)[0])


def _push(files: list[Path], port: int, associations: int) -> list[subprocess.Popen[str]]:
    """storescu senders, each with its share of ``files``, all at once."""
    return [
        subprocess.Popen([require_tool("storescu"), "-aet", "SCANNER", "-aec", "HYPOXNODE",
                          "127.0.0.1", str(port), *map(str, files[k::associations])],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for k in range(associations)
    ]


def _delivered(http: int, uids: list[str]) -> Callable[[], bool]:
    def probe() -> bool:
        for uid in uids:
            info = http_json(http, f"/api/studies/{uid}")
            assert info["state"] != "failed", info["error"]
            if info["state"] != "done" or not info["exports"] or any(
                    e["state"] != "sent" for e in info["exports"]):
                return False
        return True
    return probe



def _send_all(senders: list[subprocess.Popen[str]]) -> None:
    """Wait for every storescu; each must succeed."""
    for sender in senders:
        output, _ = sender.communicate(timeout=300)
        assert sender.returncode == 0, output[-2000:]


def _processing_node(cluster: Cluster, uid: str) -> NodeProcess:
    """The node that starts processing study ``uid`` (polled in its log)."""
    found: list[NodeProcess] = []

    def someone() -> bool:
        found[:] = [n for n in cluster.nodes if f"processing study {uid}" in n.log()]
        return bool(found)

    wait_for(someone, 120, "a node to start processing the study", 0.05)
    return found[0]


def test_three_studies_over_three_nodes_are_processed_and_delivered_once(
        tmp_path: Path, orthanc: Orthanc, pacs: tuple[int, list[str]]) -> None:
    """Three studies, four associations each, through haproxy to three nodes; results to a
    real Orthanc and to a pynetdicom PACS that counts every C-STORE it receives."""
    with running_cluster(tmp_path, pacs[0], more_destinations=destination_toml(
            orthanc.ae_title, orthanc.dicom_port)) as cluster:
        _three_studies(tmp_path, cluster, orthanc, pacs[1])


def _three_studies(tmp_path: Path, cluster: Cluster, orthanc: Orthanc,
                   received: list[str]) -> None:
    studies = [make_study(field_of_view="pelvis", seed=seed, patient_id=f"CL{seed}")
               for seed in (1, 2, 3)]
    files = {str(s.pet[0].StudyInstanceUID): write_study(s, tmp_path / f"scanner{n}")
             for n, s in enumerate(studies)}
    _send_all([p for f in files.values() for p in _push(f, cluster.proxy.port, 4)])
    http = cluster.nodes[0].http_port
    assert http is not None
    wait_for(_delivered(http, list(files)), 300, "three studies processed and delivered")
    expected = 0
    for uid in files:
        info = http_json(http, f"/api/studies/{uid}")
        assert info["generation"] == 1, "processed more than once"
        expected += result_object_count(info["result"])
    # in Orthanc: the study's own instances (results only: nobody sent it the images)
    results_in_orthanc = sum(len(orthanc.get(f"/studies/{sid}/instances"))
                             for sid in orthanc.get("/studies"))
    assert results_in_orthanc == expected
    copies = Counter(received)
    assert sorted(copies.values()) == [1] * expected, "a result object delivered twice"
    with psycopg.connect(cluster.database_url) as db:
        jobs = db.execute("SELECT count(*) FROM procrastinate_jobs"
                          " WHERE task_name = 'process_study'").fetchone()
        instances = db.execute("SELECT count(*) FROM instances").fetchone()
    assert jobs is not None and jobs[0] == len(files)
    status = http_json(cluster.nodes[1].http_port or 0, "/api/status")["cluster"]
    assert status["node_id"] == "node2"
    assert status["jobs"]["processing/succeeded"] == len(files)
    assert [n["name"] for n in status["nodes"]] == ["node1", "node2", "node3"]
    assert all(n["silent_s"] < 30 for n in status["nodes"])
    page = _get(cluster.nodes[1].http_port or 0, "/")
    assert "Cluster: this is <b>node2</b>" in page and "processing/succeeded: 3" in page
    metrics = _get(cluster.nodes[0].http_port or 0, "/metrics")
    assert 'hypoxnode_cluster_jobs{queue="processing",status="succeeded"} 3.0' in metrics
    assert instances is not None and instances[0] == sum(len(f) for f in files.values())
    print("\ncluster: associations / studies processed per node:",
          [(n.log().count("association accepted from SCANNER"),
            n.log().count("processing study")) for n in cluster.nodes])
    receiving = [n for n in cluster.nodes if "association accepted from SCANNER" in n.log()]
    assert len(receiving) >= 2, "haproxy sent every association to one node"
    for node in cluster.nodes:
        assert "Traceback" not in node.log(), node.log()[-3000:]


def test_the_job_of_a_node_killed_while_processing_runs_on_another_node(
        tmp_path: Path, cluster: Cluster, pacs: tuple[int, list[str]]) -> None:
    _, received = pacs
    study = make_study(field_of_view="pelvis", seed=4, patient_id="CLKILL")
    uid = str(study.pet[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "scanner")
    _send_all(_push(files, cluster.proxy.port, 4))
    victim = _processing_node(cluster, uid)
    victim.kill()
    survivors = [n for n in cluster.nodes if n is not victim]
    http = survivors[0].http_port
    assert http is not None
    wait_for(_delivered(http, [uid]), 180,
             "the study processed on another node and delivered")
    info = http_json(http, f"/api/studies/{uid}")
    assert info["generation"] == 1
    assert any("taking over generation 1" in n.log() for n in survivors), \
        [n.log()[-2000:] for n in survivors]
    copies = Counter(received)
    assert sorted(copies.values()) == [1] * result_object_count(info["result"])


def test_a_node_stopped_while_processing_hands_its_job_back(
        tmp_path: Path, cluster: Cluster, pacs: tuple[int, list[str]]) -> None:
    """SIGTERM (a systemd stop, an upgrade) while a study is in the node's worker pool: the
    job goes back to the queue, another node takes it over, one generation, one delivery."""
    _, received = pacs
    study = make_study(field_of_view="pelvis", seed=6, patient_id="CLSTOP")
    uid = str(study.pet[0].StudyInstanceUID)
    _send_all(_push(write_study(study, tmp_path / "scanner"), cluster.proxy.port, 2))
    stopped = _processing_node(cluster, uid)
    assert stopped.stop() == 0
    survivors = [n for n in cluster.nodes if n is not stopped]
    http = survivors[0].http_port
    assert http is not None
    wait_for(_delivered(http, [uid]), 180,
             "the study processed on another node and delivered")
    info = http_json(http, f"/api/studies/{uid}")
    assert info["generation"] == 1
    # the job went back to the queue and another node took the study over, unless the
    # stopping node's worker finished it while the node stopped (recorded there)
    handed_back = "node stopping while processing study" in stopped.log() and any(
        "taking over generation 1" in n.log() for n in survivors)
    assert handed_back or f"study {uid} done" in stopped.log()
    assert sorted(Counter(received).values()) == [1] * result_object_count(info["result"])


def test_pacs_down_while_every_node_restarts_gets_each_object_once(tmp_path: Path) -> None:
    """The PACS refuses connections; the study is processed and its deliveries fail and back
    off; all three nodes are stopped and started again; the PACS comes up: every result object
    arrives once (the retries live in the database, not in a node)."""
    reserved = socket.socket()  # bound, not listening: connections refused, port kept
    reserved.bind(("127.0.0.1", 0))
    pacs_port = int(reserved.getsockname()[1])
    received: list[str] = []
    study = make_study(field_of_view="pelvis", seed=7, patient_id="CLDOWN")
    uid = str(study.pet[0].StudyInstanceUID)
    with running_cluster(tmp_path, pacs_port) as cluster:
        _send_all(_push(write_study(study, tmp_path / "scanner"), cluster.proxy.port, 2))
        http = cluster.nodes[0].http_port
        assert http is not None

        def failing() -> bool:
            info = http_json(http, f"/api/studies/{uid}")
            return info["state"] == "done" and bool(info["exports"]) and all(
                e["attempts"] >= 1 and e["state"] == "pending" for e in info["exports"])

        wait_for(failing, 180, "the study processed and its deliveries failing")
        cluster.restart_all()
        reserved.close()
        ae = AE(ae_title="PACS")
        ae.supported_contexts = StoragePresentationContexts

        def on_store(event: Any) -> int:
            received.append(str(event.dataset.SOPInstanceUID))
            return 0

        server = ae.start_server(("127.0.0.1", pacs_port), block=False,
                                 evt_handlers=[(evt.EVT_C_STORE, on_store)])
        try:
            http = cluster.nodes[1].http_port
            assert http is not None
            wait_for(_delivered(http, [uid]), 180, "delivery once the PACS is back")
            info = http_json(http, f"/api/studies/{uid}")
        finally:
            server.shutdown()
    assert info["generation"] == 1
    assert sorted(Counter(received).values()) == [1] * result_object_count(info["result"])


def test_fifty_studies_complete_at_once_make_fifty_processing_jobs(
        tmp_path: Path, cluster: Cluster) -> None:
    """50 studies become due at the same moment while three nodes check every 0.25 s: each
    is queued once (one processing job each), whichever node wins. Their instance files do
    not exist, so each is processed into a failure with its reason; that is the quickest
    processing there is."""
    index = Index.on_postgres(cluster.database_url)
    uids = [f"1.2.826.0.1.3680043.8.498.5{n:02d}" for n in range(50)]
    try:
        with index._transaction() as db:  # one transaction: all due at the same moment
            for uid in uids:
                for k in range(2):
                    db.execute(UPSERT_INSTANCE, (
                        f"{uid}.1.{k}", "1.2.840.10008.5.1.4.1.1.128", uid, f"{uid}.1", "PT",
                        str(tmp_path / "missing" / f"{uid}.{k}.dcm"), 10, "SCANNER", 0.0))
                db.execute("INSERT INTO studies (study_instance_uid, state, first_received_at,"
                           " last_received_at, updated_at) VALUES (?, ?, 0, 0, 0)",
                           (uid, StudyState.RECEIVING.value))

        def all_ended() -> bool:
            return all((index.study(uid) or {}).get("state") == "failed" for uid in uids)

        wait_for(all_ended, 240, "50 studies processed (into failures)")
        generations = {uid: (index.study(uid) or {})["generation"] for uid in uids}
    finally:
        index.close()
    with psycopg.connect(cluster.database_url) as db:
        jobs = db.execute("SELECT args->>'study_instance_uid', count(*) FROM procrastinate_jobs"
                          " WHERE task_name = 'process_study' GROUP BY 1").fetchall()
    assert dict(jobs) == dict.fromkeys(uids, 1)
    assert set(generations.values()) == {1}


def test_postgres_restarted_mid_push_never_acknowledges_without_a_row(
        tmp_path: Path, cluster: Cluster) -> None:
    """PostgreSQL is restarted (immediate: every connection cut) while storescu pushes a
    study: instances the index could not record are refused (0xA700), every acknowledged one
    has its row; the scanner sends the refused ones again, and the study is processed once
    the job worker is back."""
    study = make_study(field_of_view="whole_body", seed=8, patient_id="CLPG")
    uid = str(study.pet[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "scanner")
    lines, finish = _verbose_push(files, cluster.proxy.port)
    wait_for(lambda: "".join(lines).count("Received Store Response") >= 40, 120,
             "40 instances acknowledged", 0.02)
    cluster.postgres.restart()
    answered = store_results(finish())
    acknowledged = {f for f, status in answered.items() if status == "Success"}
    refused = [Path(f) for f in map(str, files) if f not in acknowledged]
    with psycopg.connect(cluster.database_url) as db:
        rows = {r[0] for r in db.execute("SELECT path FROM instances").fetchall()}
    by_sop = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f
              for f in acknowledged}
    stored = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in rows}
    assert set(by_sop) <= stored, "an instance acknowledged without its index row"
    assert refused, "the restart came too late to test anything"
    _send_all(_push(refused, cluster.proxy.port, 1))
    http = cluster.nodes[2].http_port
    assert http is not None
    wait_for(_delivered(http, [uid]), 240, "the study processed after the restart")
    assert http_json(http, f"/api/studies/{uid}")["generation"] >= 1


def _verbose_push(files: list[Path], port: int) -> tuple[list[str], Callable[[], str]]:
    """``storescu -v`` through haproxy: its output lines as they come, and a function that
    waits for the sender and returns its whole output."""
    sender = subprocess.Popen(
        [require_tool("storescu"), "-v", "-aet", "SCANNER", "-aec", "HYPOXNODE", "127.0.0.1",
         str(port), *map(str, files)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert sender.stdout is not None
    stdout = sender.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")),
                              daemon=True)
    reader.start()

    def finish() -> str:
        sender.wait(300)
        reader.join(30)
        return "".join(lines)

    return lines, finish


def test_the_receiving_node_killed_mid_push_loses_nothing_acknowledged(
        tmp_path: Path, pacs: tuple[int, list[str]]) -> None:
    """The node an association landed on is SIGKILLed in the middle of the push; the scanner
    sends what was not acknowledged again (haproxy takes it to a live node): every
    acknowledged instance is on disk and indexed, and the study is processed and delivered
    once."""
    _, received = pacs
    study = make_study(field_of_view="whole_body", seed=9, patient_id="CLRECV")
    uid = str(study.pet[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "scanner")
    with running_cluster(tmp_path, pacs[0], stable_seconds=8.0) as cluster:
        before = [n.log().count("association accepted from SCANNER") for n in cluster.nodes]
        lines, finish = _verbose_push(files, cluster.proxy.port)
        wait_for(lambda: "".join(lines).count("Received Store Response") >= 40, 120,
                 "40 instances acknowledged", 0.02)
        receiving = [n for n, b in zip(cluster.nodes, before, strict=True)
                     if n.log().count("association accepted from SCANNER") > b]
        assert len(receiving) == 1
        receiving[0].kill()
        answered = store_results(finish())
        acknowledged = {f for f, status in answered.items() if status == "Success"}
        pending = [f for f in files if str(f) not in acknowledged]
        assert pending, "the push ended before the kill"

        def resumed() -> bool:  # the scanner retries until a live node takes the rest
            again = subprocess.run(
                [require_tool("storescu"), "-aet", "SCANNER", "-aec", "HYPOXNODE",
                 "127.0.0.1", str(cluster.proxy.port), *map(str, pending)],
                capture_output=True, text=True, timeout=300)
            return again.returncode == 0

        wait_for(resumed, 60, "the rest sent to a live node", 0.5)
        survivor = next(n for n in cluster.nodes if n is not receiving[0])
        assert survivor.http_port is not None
        wait_for(_delivered(survivor.http_port, [uid]), 300, "the study processed, delivered")
        info = http_json(survivor.http_port, f"/api/studies/{uid}")
        with psycopg.connect(cluster.database_url) as db:
            rows = dict(db.execute("SELECT sop_instance_uid, path FROM instances").fetchall())
    sop_of = {str(f): str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
              for f in files}
    for name in acknowledged:
        path = rows.get(sop_of[name])
        assert path is not None and Path(path).is_file(), f"acknowledged {name} lost"
    assert len(rows) == len(files)
    assert info["generation"] == 1
    assert sorted(Counter(received).values()) == [1] * result_object_count(info["result"])
