"""C-STORE data sets written to disk as they arrive (``service/receive/_pynetdicom/spool.py``), over
real
associations on loopback.

A pynetdicom requestor sends the P-DATA of one C-STORE grouped as the test chooses, so each
way a sender may pack command and data-set fragments is covered: DCMTK sends the command in a
P-DATA of its own, other toolkits pack the first data-set fragment, or the whole data set,
with it.
"""

from __future__ import annotations

import errno
import resource
import shutil
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import examples
from pydicom.dataset import Dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from service.config import load_config
from service.receive import dimse_status
from service.receive._pynetdicom.spool_files import SPOOL_PREFIX, SpoolFile, SpoolReserve, file_meta
from service.receive.listener import start_listener
from service.storage.index import Index
from service.storage.store import InstanceStore
from tests.peers import storescu, wait_for

FRAGMENT_PDU = 16384
"""PDU length the test fragments with: a 32 KB CT slice is 3 data-set fragments."""


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[int, InstanceStore, Index]]:
    config = load_config(None, node={"host": "127.0.0.1", "port": 0,
                                     "data_dir": tmp_path / "data"})
    store = InstanceStore(tmp_path / "data")
    index = Index(tmp_path / "data" / "index.sqlite")
    server = start_listener(config, store, index)
    yield int(server.server_address[1]), store, index
    server.shutdown()
    index.close()
    # The reserve's unused files go with the server: nothing is left in tmp/
    assert not list(store.tmp_dir.iterdir())


def _ct(rows: int = 128) -> Dataset:
    ds = examples.ct.copy()
    del ds[0xFFFCFFFC]  # DataSetTrailingPadding: DCMTK drops it when sending
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if rows != ds.Rows:
        ds.Rows = ds.Columns = rows
        ds.PixelData = np.arange(rows * rows, dtype=np.uint16).tobytes()
    return ds


def _associate(port: int) -> Association:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="HYPOXNODE")
    assert assoc.is_established
    return assoc


def _fragments(assoc: Association, ds: Dataset) -> list[tuple[int, bytes]]:
    """The C-STORE-RQ of ``ds`` as presentation data values: command first, then data set."""
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    encoded = encode(ds, False, True)  # explicit VR little endian, as negotiated
    assert encoded is not None
    request.DataSet = BytesIO(encoded)
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context_id = assoc.accepted_contexts[0].context_id
    assert context_id is not None
    return [pdv for p_data in message.encode_msg(context_id, FRAGMENT_PDU)
            for pdv in p_data.presentation_data_value_list]


def _p_data(values: list[tuple[int, bytes]]) -> P_DATA:
    p_data = P_DATA()
    p_data.presentation_data_value_list = [list(v) for v in values]  # type: ignore[misc]
    return p_data


def _send(assoc: Association, groups: list[list[tuple[int, bytes]]]) -> int:
    """Send each group of values as one P-DATA; return the C-STORE response's status.

    The requestor's reactor is paused meanwhile, as ``Association.send_c_store`` does, or it
    may take the response off the queue first.
    """
    assoc._reactor_checkpoint.clear()
    try:
        wait_for(lambda: assoc._is_paused, 10, "the requestor's reactor paused", 0.001)
        for group in groups:
            assoc.dul.send_pdu(_p_data(group))
        _context, response = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert response is not None, "no C-STORE response"
    return int(response.Status)


def _packings(values: list[tuple[int, bytes]]) -> dict[str, list[list[tuple[int, bytes]]]]:
    command, data = values[0], values[1:]
    assert len(data) >= 3, "the data set should span several fragments"
    return {
        "command alone, data set after (DCMTK)": [[command], *[[v] for v in data]],
        "first data fragment with the command": [[command, data[0]], *[[v] for v in data[1:]]],
        "whole data set with the command": [[command, *data]],
    }


@pytest.mark.parametrize("packing", list(_packings([(0, b"")] * 4)))
def test_every_packing_stores_the_data_set_byte_for_byte(
    node: tuple[int, InstanceStore, Index], packing: str,
) -> None:
    port, store, index = node
    ds = _ct()
    assoc = _associate(port)
    try:
        groups = _packings(_fragments(assoc, ds))[packing]
        assert _send(assoc, groups) == dimse_status.SUCCESS
    finally:
        assoc.release()
    rows = index.study_instances(str(ds.StudyInstanceUID))
    assert [r.sop_instance_uid for r in rows] == [ds.SOPInstanceUID]
    stored = pydicom.dcmread(rows[0].path)
    assert stored.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored == ds
    assert stored.PixelData == ds.PixelData
    assert rows[0].size_bytes == Path(rows[0].path).stat().st_size
    # only the reserve's empty files are in tmp/ (the stored file was moved, not copied)
    assert all(p.stat().st_size == 0 for p in store.tmp_dir.iterdir())


def test_a_data_set_cut_off_by_an_abort_leaves_no_file(
    node: tuple[int, InstanceStore, Index],
) -> None:
    port, store, index = node
    ds = _ct()
    assoc = _associate(port)
    values = _fragments(assoc, ds)
    assoc._reactor_checkpoint.clear()  # nothing to take off the queue: no response comes
    for value in values[:2]:  # the command and the first data-set fragment, then silence
        assoc.dul.send_pdu(_p_data([value]))

    def partial() -> list[Path]:
        return [p for p in store.tmp_dir.glob(f"{SPOOL_PREFIX}*") if p.stat().st_size > 0]

    wait_for(lambda: len(partial()) == 1, 10, "the first fragment spooled")
    assoc.abort()
    wait_for(lambda: not partial(), 10, "the partial data set removed")
    assert index.study_instances(str(ds.StudyInstanceUID)) == []
    assert not list(store.instances_dir.rglob("*.dcm"))


def test_a_write_that_fails_mid_data_set_is_refused_and_the_node_goes_on(
    node: tuple[int, InstanceStore, Index],
) -> None:
    """A file-size limit makes the spool write fail half-way (EFBIG, as a full disk gives
    ENOSPC): the instance is refused with 0xA700, nothing of it stays, the association and
    later instances carry on."""
    port, store, index = node
    large, small = _ct(rows=512), _ct()  # 512 KB and 32 KB of pixel data
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    assoc = _associate(port)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, hard))
        try:
            refused = _send(assoc, [[v] for v in _fragments(assoc, large)])
            stored = _send(assoc, [[v] for v in _fragments(assoc, small)])
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    finally:
        assoc.release()
    assert refused == dimse_status.OUT_OF_RESOURCES
    assert stored == dimse_status.SUCCESS
    assert index.study_instances(str(large.StudyInstanceUID))[0].sop_instance_uid \
        == small.SOPInstanceUID  # examples.ct: both share the study
    assert len(index.study_instances(str(large.StudyInstanceUID))) == 1
    assert all(p.stat().st_size == 0 for p in store.tmp_dir.iterdir())


def test_dcmtk_storescu_instances_are_spooled_and_identical(
    node: tuple[int, InstanceStore, Index], tmp_path: Path,
) -> None:
    port, store, index = node
    sent = []
    for n in range(3):
        ds = _ct(rows=512)
        path = tmp_path / f"{n}.dcm"
        ds.save_as(path, enforce_file_format=True)
        sent.append(path)
    result = storescu(sent, port, "HYPOXNODE")
    assert result.returncode == 0, result.stderr
    for path in sent:
        original = pydicom.dcmread(path)
        row = next(r for r in index.study_instances(str(original.StudyInstanceUID))
                   if r.sop_instance_uid == original.SOPInstanceUID)
        assert pydicom.dcmread(row.path) == original


def test_the_reserve_hands_out_new_empty_files_and_removes_the_rest(tmp_path: Path) -> None:
    reserve = SpoolReserve(tmp_path, size=3)
    taken = [reserve.take() for _ in range(5)]
    assert len({name for _fd, name in taken}) == 5
    wait_for(lambda: len(list(tmp_path.iterdir())) == 5 + 3, 10, "the reserve refilled")
    reserve.close()
    assert sorted(tmp_path.iterdir()) == sorted(Path(name) for _fd, name in taken)


@pytest.mark.parametrize("sop_instance_uid", [
    "1.2.3", "1.2.34", "2.25.329800735698586629295641978511506172918",
    "1.2.840.113619.2.55.3.604688119.969.1268071029.320",
    "9" * 64, "1." + "9" * 61,
])
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, "1.2.840.10008.1.2"])
def test_the_file_meta_is_what_pydicom_writes(sop_instance_uid: str,
                                               transfer_syntax: str) -> None:
    expected = BytesIO()
    expected.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(expected, create_file_meta(
        sop_class_uid=CTImageStorage, sop_instance_uid=UID(sop_instance_uid),
        transfer_syntax=UID(transfer_syntax)))
    assert file_meta(CTImageStorage, sop_instance_uid, transfer_syntax) == expected.getvalue()


def test_a_deflated_data_set_is_routed_and_stored_as_sent(
    node: tuple[int, InstanceStore, Index], tmp_path: Path,
) -> None:
    """Deflated explicit VR little endian: the routing attributes are read through pydicom's
    inflation, and the file keeps the deflated data set the sender chose."""
    port, _store, index = node
    ds = _ct(rows=256)
    path = tmp_path / "deflate.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = storescu([path], port, "HYPOXNODE", extra=["-xd"])
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = index.study_instances(str(ds.StudyInstanceUID))
    stored = pydicom.dcmread(row.path)
    assert stored.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert stored == pydicom.dcmread(path)


def test_a_handler_that_raises_leaves_no_file_once_the_association_ends(
    node: tuple[int, InstanceStore, Index], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault injected where the handler makes the file its own: pynetdicom answers
    0xC211 and skips closing and removing the spool file; the association's end does it."""
    port, store, index = node

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(InstanceStore, "adopt_instance", broken)
    ds = _ct()
    assoc = _associate(port)
    try:
        assert _send(assoc, [[v] for v in _fragments(assoc, ds)]) == 0xC211
        assert [p for p in store.tmp_dir.iterdir() if p.stat().st_size > 0], \
            "the spool file should still be there while the association lasts"
    finally:
        assoc.release()
    wait_for(lambda: all(p.stat().st_size == 0 for p in store.tmp_dir.iterdir()), 10,
             "the spool file removed when the association ended")
    assert index.study_instances(str(ds.StudyInstanceUID)) == []


def test_a_spool_file_below_the_floor_writes_nothing_and_says_why(tmp_path: Path) -> None:
    """The floor is asked before the first byte (no tmpfs needed: a floor above any disk)."""
    free = shutil.disk_usage(tmp_path).free
    roomy = SpoolReserve(tmp_path, size=1, min_free_bytes=max(1, free // 4))
    full = SpoolReserve(tmp_path, size=1, min_free_bytes=2**62)
    try:
        ok = SpoolFile(roomy, ExplicitVRLittleEndian)
        ok.write(b"x" * 1000)
        refused = SpoolFile(full, ExplicitVRLittleEndian)
        refused.write(b"x" * 1000)
        assert ok.error is None and ok.size == 1000
        assert refused.error is not None and refused.error.errno == errno.ENOSPC
        assert "node.min_free_mb" in str(refused.error)
        assert refused.size == 0 and Path(refused.name).stat().st_size == 0
        assert refused.make_durable() is refused.error
        ok.discard()
        refused.discard()
    finally:
        roomy.close()
        full.close()
