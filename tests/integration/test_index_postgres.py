"""The index on a real PostgreSQL (a throwaway cluster, ``tests/postgres.py``): the same
scenarios as on SQLite, "study complete" decided once when several nodes race, the schema
created once when nodes start together, and a database outage answered by an error, never a
silent success.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from service.storage.index import Index, IndexUnavailableError
from service.storage.study_state import StudyState
from tests.index_contract import SCENARIOS, record
from tests.postgres import PostgresCluster, postgres_cluster

_names = itertools.count()


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    with postgres_cluster() as running:
        yield running


@pytest.fixture
def database(cluster: PostgresCluster) -> str:
    """A fresh database of its own for each test: its URL."""
    return cluster.create_database(f"hypoxnode_{next(_names)}")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_index_contract_on_postgres(database: str, scenario: Callable[[Index], None]) -> None:
    index = Index.on_postgres(database)
    try:
        scenario(index)
    finally:
        index.close()


def test_study_complete_is_decided_once_across_nodes(database: str) -> None:
    """Six "nodes" (each its own connection) sweep 30 due studies at once: each study moves
    to queued exactly once, and to processing exactly once."""
    nodes = [Index.on_postgres(database) for _ in range(6)]
    try:
        for n in range(30):
            nodes[0].record_instance(record(f"1.2.{n}.1", study=f"1.2.{n}", when=100.0))
        queued: list[str] = []
        started: list[tuple[str, int]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(nodes))

        def sweep(index: Index) -> None:
            barrier.wait()
            for study in index.due_studies(quiet_before=time.time()):
                if index.set_study_state(study, StudyState.QUEUED,
                                         expected=StudyState.RECEIVING):
                    with lock:
                        queued.append(study)
                generation = index.start_processing(study)
                if generation is not None:
                    with lock:
                        started.append((study, generation))

        threads = [threading.Thread(target=sweep, args=(index,)) for index in nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(queued) == sorted(f"1.2.{n}" for n in range(30))
        assert sorted(started) == sorted((f"1.2.{n}", 1) for n in range(30))
    finally:
        for index in nodes:
            index.close()


def test_nodes_starting_together_create_one_schema(database: str) -> None:
    errors: list[BaseException] = []
    opened: list[Index] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            opened.append(Index.on_postgres(database))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert errors == []
        rows = opened[0]._db.execute("SELECT version FROM hypoxnode_schema").fetchall()
        assert [row[0] for row in rows] == [1]
    finally:
        for index in opened:
            index.close()


def test_timestamps_come_from_the_database_server(database: str) -> None:
    index = Index.on_postgres(database)
    try:
        server = index._now()
        row = index._db.execute("SELECT extract(epoch FROM now())").fetchone()
        assert abs(server - float(row[0])) < 5
        index.record_instance(record("1"))
        index.set_study_state("1.2.3", StudyState.QUEUED)
        updated = index.study("1.2.3")["updated_at"]  # type: ignore[index]
        assert server <= updated <= index._now()
    finally:
        index.close()


def test_an_unreachable_database_is_an_error_and_the_next_call_reconnects(
        cluster: PostgresCluster, database: str) -> None:
    """Every connection cut (as a PostgreSQL restart does): the call in flight fails with
    IndexUnavailableError (the C-STORE handler answers 0xA700), nothing is recorded in part,
    and the index works again afterwards without a restart of the node."""
    index = Index.on_postgres(database)
    other = Index.on_postgres(database)
    try:
        index.record_instance(record("1"))
        other._db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(IndexUnavailableError):
            index.record_instance(record("2"))
        assert index.record_instance(record("3"))
        assert [r.sop_instance_uid for r in index.study_instances("1.2.3")] == ["1", "3"]
    finally:
        index.close()
        other.close()


def test_receivers_creating_one_study_at_once_all_succeed(database: str) -> None:
    """Twelve receiving processes (connections) store the first instances of one new study at
    the same moment: every instance is recorded, none refused (before: the losers of the race
    to create the study row got a unique violation, answered 0xA700; the cluster benchmark
    found 7 of 80)."""
    indexes = [Index.on_postgres(database) for _ in range(12)]
    barrier = threading.Barrier(len(indexes))
    errors: list[BaseException] = []

    def store(n: int, index: Index) -> None:
        barrier.wait()
        try:
            index.record_instance(record(f"1.9.{n}", study="1.2.99", when=100.0))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=store, args=(n, index))
               for n, index in enumerate(indexes)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert len(indexes[0].study_instances("1.2.99")) == len(indexes)
    finally:
        for index in indexes:
            index.close()
