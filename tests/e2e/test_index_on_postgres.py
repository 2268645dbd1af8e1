"""One ``hypoxnode serve`` with ``[cluster] database_url``: its index and job queue in a
real PostgreSQL, its two receiving processes writing to it.

DCMTK storescu pushes a study; it is processed and its result objects delivered to a
pynetdicom PACS by jobs, and every row is in PostgreSQL, none in SQLite. (Three nodes:
``tests/e2e/test_cluster.py``.)
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from service.synthetic import make_study, write_study
from tests.peers import result_object_count, storescu, wait_for
from tests.postgres import postgres_cluster
from tests.reliability import destination_toml, http_json, start_test_node

pytestmark = pytest.mark.e2e


def test_a_node_keeps_its_index_in_postgres(tmp_path: Path,
                                            pacs: tuple[int, list[str]]) -> None:
    pacs_port, received = pacs
    study = make_study(field_of_view="pelvis", seed=5)
    study_uid = str(study.pet[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "scanner")
    with postgres_cluster() as cluster:
        url = cluster.create_database("hypoxnode")
        cluster_toml = f'[cluster]\ndatabase_url = "{url}"\nnode_id = "node-a"\n'
        node = start_test_node(tmp_path / "node", node_extra="receiver_processes = 2",
                               sections=cluster_toml + destination_toml("PACS", pacs_port))
        assert node.http_port is not None
        port = node.http_port
        try:
            assert storescu(files, node.port, node.ae_title).returncode == 0

            def delivered() -> bool:
                info = http_json(port, f"/api/studies/{study_uid}")
                assert info["state"] != "failed", info["error"]
                return info["state"] == "done" and all(
                    e["state"] == "sent" for e in info["exports"]) and bool(info["exports"])

            wait_for(delivered, 180, "the study processed and delivered")
            info = http_json(port, f"/api/studies/{study_uid}")

        finally:
            assert node.stop() == 0
        with psycopg.connect(url) as db:
            instances = db.execute("SELECT count(*) FROM instances WHERE study_instance_uid"
                                   " = %s", (study_uid,)).fetchone()
            state = db.execute("SELECT state, generation FROM studies WHERE"
                               " study_instance_uid = %s", (study_uid,)).fetchone()
    assert instances is not None and instances[0] == len(files)
    assert state == ("done", 1)
    assert len(received) == result_object_count(info["result"])
    assert not (tmp_path / "node" / "data" / "index.sqlite").exists()
    assert "Traceback" not in node.log() and "ERROR" not in node.log()
