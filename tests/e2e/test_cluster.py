"""Three ``hypoxnode serve`` nodes behind a real haproxy, one shared data folder, one real
PostgreSQL (a throwaway cluster) holding the index and the job queue (Procrastinate).

Scanners (DCMTK storescu) push through haproxy, so the instances of one study land on several
nodes; whichever node's "study complete" compare-and-set wins queues the processing job,
any node runs it, and delivery to the PACS (a pynetdicom storage SCP counting every
SOP Instance it receives) runs on one node at a time.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from service.synthetic import make_study, write_study
from tests.peers import (
    Haproxy,
    NodeProcess,
    free_port,
    require_tool,
    result_object_count,
    start_haproxy,
    start_node,
    wait_for,
)
from tests.postgres import postgres_cluster
from tests.reliability import destination_toml, http_json, node_toml

pytestmark = pytest.mark.e2e

NODES = 3


@dataclass
class Cluster:
    """The running cluster."""

    nodes: list[NodeProcess]
    proxy: Haproxy
    database_url: str


@pytest.fixture
def cluster(tmp_path: Path, pacs: tuple[int, list[str]]) -> Iterator[Cluster]:
    with postgres_cluster() as postgres:
        url = postgres.create_database("hypoxnode")
        shared = tmp_path / "shared"
        ports = [free_port() for _ in range(NODES)]
        proxy = start_haproxy(tmp_path / "haproxy", ports, proxy_protocol=False)
        nodes: list[NodeProcess] = []
        try:
            for number, port in enumerate(ports, 1):
                sections = (f'[cluster]\ndatabase_url = "{url}"\nnode_id = "node{number}"\n'
                            "stalled_after_s = 3\n[quant]\nworkers = 1\n"
                            + destination_toml("PACS", pacs[0]))
                toml = node_toml(shared, port, http_port=free_port(), stable_seconds=2.0,
                                 node_extra="receiver_processes = 1", sections=sections)
                node = start_node(tmp_path / f"node{number}", toml, port)
                node.http_port = _http_port(toml)
                nodes.append(node)
            yield Cluster(nodes, proxy, url)
        finally:
            for node in nodes:
                node.stop()
            proxy.stop()


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


def test_three_studies_over_three_nodes_are_processed_and_delivered_once(
        tmp_path: Path, cluster: Cluster, pacs: tuple[int, list[str]]) -> None:
    _, received = pacs
    studies = [make_study(field_of_view="pelvis", seed=seed, patient_id=f"CL{seed}")
               for seed in (1, 2, 3)]
    files = {str(s.pet[0].StudyInstanceUID): write_study(s, tmp_path / f"scanner{n}")
             for n, s in enumerate(studies)}
    senders = [p for f in files.values() for p in _push(f, cluster.proxy.port, 4)]
    for sender in senders:
        output, _ = sender.communicate(timeout=300)
        assert sender.returncode == 0, output[-2000:]
    http = cluster.nodes[0].http_port
    assert http is not None

    def delivered() -> bool:
        for uid in files:
            info = http_json(http, f"/api/studies/{uid}")
            assert info["state"] != "failed", info["error"]
            if info["state"] != "done" or not info["exports"] or any(
                    e["state"] != "sent" for e in info["exports"]):
                return False
        return True

    wait_for(delivered, 300, "three studies processed and delivered")
    expected = 0
    for uid in files:
        info = http_json(http, f"/api/studies/{uid}")
        assert info["generation"] == 1, "processed more than once"
        expected += result_object_count(info["result"])
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
    for sender in _push(files, cluster.proxy.port, 4):
        output, _ = sender.communicate(timeout=300)
        assert sender.returncode == 0, output[-2000:]
    processing: list[NodeProcess] = []

    def someone_processing() -> bool:
        processing[:] = [n for n in cluster.nodes if f"processing study {uid}" in n.log()]
        return bool(processing)

    wait_for(someone_processing, 120, "a node to start processing the study", 0.05)
    victim = processing[0]
    victim.kill()
    survivors = [n for n in cluster.nodes if n is not victim]
    http = survivors[0].http_port
    assert http is not None

    def delivered() -> bool:
        info = http_json(http, f"/api/studies/{uid}")
        assert info["state"] != "failed", info["error"]
        return info["state"] == "done" and bool(info["exports"]) and all(
            e["state"] == "sent" for e in info["exports"])

    wait_for(delivered, 180, "the study processed on another node and delivered")
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
    for sender in _push(write_study(study, tmp_path / "scanner"), cluster.proxy.port, 2):
        output, _ = sender.communicate(timeout=300)
        assert sender.returncode == 0, output[-2000:]
    processing: list[NodeProcess] = []

    def someone_processing() -> bool:
        processing[:] = [n for n in cluster.nodes if f"processing study {uid}" in n.log()]
        return bool(processing)

    wait_for(someone_processing, 120, "a node to start processing the study", 0.05)
    stopped = processing[0]
    assert stopped.stop() == 0
    survivors = [n for n in cluster.nodes if n is not stopped]
    http = survivors[0].http_port
    assert http is not None

    def delivered() -> bool:
        info = http_json(http, f"/api/studies/{uid}")
        assert info["state"] != "failed", info["error"]
        return info["state"] == "done" and bool(info["exports"]) and all(
            e["state"] == "sent" for e in info["exports"])

    wait_for(delivered, 180, "the study processed on another node and delivered")
    info = http_json(http, f"/api/studies/{uid}")
    assert info["generation"] == 1
    assert "node stopping while processing study" in stopped.log()
    assert any("taking over generation 1" in n.log() for n in survivors)
    assert sorted(Counter(received).values()) == [1] * result_object_count(info["result"])
