"""The instance store and the SQLite index."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from service.storage.index import Index
from service.storage.store import InstanceStore, is_valid_uid
from tests.index_contract import SCENARIOS, record


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("1.2.840.10008.1.2", True),
        ("1.2.3", True),
        ("0.1", True),
        ("1.02.3", False),
        ("../../x", False),
        ("1.2/3", False),
        ("1.2.3.", False),
        ("", False),
        ("1." + "1" * 63, False),
        (None, False),
    ],
)
def test_uid_validation(value: object, valid: bool) -> None:
    assert is_valid_uid(value) is valid


def test_write_instance_is_complete_and_inside_data_dir(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path)
    stored = store.write_instance(b"abc", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert stored.path.read_bytes() == b"abc"
    assert stored.path.is_relative_to(tmp_path)
    assert list(store.tmp_dir.iterdir()) == []
    again = store.write_instance(b"abcd", "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert again.path == stored.path and stored.path.read_bytes() == b"abcd"


def test_traversal_uid_never_becomes_a_path(tmp_path: Path) -> None:
    store = InstanceStore(tmp_path / "data")
    with pytest.raises(ValueError, match="SOPInstanceUID"):
        store.write_instance(b"x", "1.2.3", "1.2.3.4", "../../x")
    assert not (tmp_path / "x").exists()


def test_free_space_floor(tmp_path: Path) -> None:
    assert InstanceStore(tmp_path).has_room(10)
    assert not InstanceStore(tmp_path, min_free_bytes=2**62).has_room(10)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_index_contract_on_sqlite(tmp_path: Path, scenario: Callable[[Index], None]) -> None:
    """The index's behaviour (``tests/index_contract.py``); on PostgreSQL in
    ``tests/integration/test_index_postgres.py``."""
    index = Index(tmp_path / "index.sqlite")
    try:
        scenario(index)
    finally:
        index.close()


def test_instance_rows_skip_the_fsync_that_state_changes_keep(tmp_path: Path) -> None:
    """Instance rows: synchronous=NORMAL (their files are fsynced and re-indexed at start-up);
    study, result and export state: FULL. Both visible to every reader at once."""
    index = Index(tmp_path / "index.sqlite")
    try:
        assert index._instance_db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert index._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        index.record_instance(record("1.2.3.1.1"))
        assert index.all_instance_paths() == {"1.2.3.1.1": record("1.2.3.1.1").path}
    finally:
        index.close()
