"""The DICOM listener over real associations on loopback (DCMTK echoscu/storescu as the scanner)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom import examples
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from service.config import load_config
from service.receive.listener import start_listener
from service.storage.index import Index
from service.storage.store import InstanceStore
from tests.peers import echoscu, storescu


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[int, InstanceStore, Index]]:
    config = load_config(None, node={"host": "127.0.0.1", "port": 0, "data_dir": tmp_path,
                                     "allowed_calling_ae_titles": ["SCANNER", "ECHOSCU"]})
    store = InstanceStore(tmp_path)
    index = Index(tmp_path / "index.sqlite")
    server = start_listener(config, store, index)
    yield int(server.server_address[1]), store, index
    server.shutdown()
    index.close()


def _ct(tmp_path: Path, sop_uid: str | None = None, name: str = "ct.dcm") -> Path:
    ds = examples.ct.copy()
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / name
    ds.save_as(path)
    return path


def test_echo(listener: tuple[int, InstanceStore, Index]) -> None:
    port, _, _ = listener
    assert echoscu(port, "HYPOXNODE")


def test_store_writes_file_and_index_before_success(
    listener: tuple[int, InstanceStore, Index], tmp_path: Path
) -> None:
    port, store, index = listener
    files = [_ct(tmp_path, name=f"{i}.dcm") for i in range(3)]
    result = storescu(files, port, "HYPOXNODE")
    assert result.returncode == 0, result.stderr
    study_uid = str(pydicom.dcmread(files[0]).StudyInstanceUID)
    rows = index.study_instances(study_uid)
    assert len(rows) == 3
    for row in rows:
        stored = pydicom.dcmread(row.path)
        assert stored.SOPInstanceUID == row.sop_instance_uid
        assert Path(row.path).is_relative_to(store.root)
        assert row.calling_ae_title == "SCANNER"


def test_unknown_calling_ae_is_rejected(
    listener: tuple[int, InstanceStore, Index], tmp_path: Path
) -> None:
    port, _, index = listener
    assert not echoscu(port, "HYPOXNODE", calling_ae="INTRUDER")
    result = storescu([_ct(tmp_path)], port, "HYPOXNODE", calling_ae="INTRUDER")
    assert result.returncode != 0
    assert index.studies() == []


def _send(port: int, dataset: pydicom.Dataset) -> int:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="HYPOXNODE")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dataset)
        return int(status.Status)
    finally:
        assoc.release()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"SOPInstanceUID": "../../x"}, 0xC210),
        ({"StudyInstanceUID": "1.2.abc"}, 0xC210),
    ],
)
@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_bad_identifiers_get_a_failure_status_and_nothing_stored(
    listener: tuple[int, InstanceStore, Index], change: dict[str, str], expected: int
) -> None:
    port, store, index = listener
    ds = examples.ct.copy()
    for key, value in change.items():
        setattr(ds, key, value)
    assert _send(port, ds) == expected
    assert index.studies() == []
    assert not any(p.is_file() for p in store.instances_dir.rglob("*"))
    assert not (store.root.parent / "x").exists()


def test_disk_floor_answers_out_of_resources(tmp_path: Path) -> None:
    config = load_config(None, node={"host": "127.0.0.1", "port": 0, "data_dir": tmp_path})
    store = InstanceStore(tmp_path, min_free_bytes=2**62)
    index = Index(tmp_path / "index.sqlite")
    server = start_listener(config, store, index)
    try:
        status = _send(int(server.server_address[1]), examples.ct.copy())
    finally:
        server.shutdown()
    assert status == 0xA700
    assert not any(p.is_file() for p in store.instances_dir.rglob("*"))
    assert list(store.tmp_dir.iterdir()) == []


def test_duplicate_instance_is_idempotent(
    listener: tuple[int, InstanceStore, Index], tmp_path: Path
) -> None:
    port, _, index = listener
    path = _ct(tmp_path, sop_uid="1.2.3.4.5.6")
    assert storescu([path, path], port, "HYPOXNODE").returncode == 0
    # nothing asynchronous: the index is written before each success
    study_uid = str(pydicom.dcmread(path).StudyInstanceUID)
    assert len(index.study_instances(study_uid)) == 1
