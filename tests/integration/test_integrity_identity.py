"""Strict instance identity over real associations on loopback (pynetdicom as the scanner).

Each attack of issue 20: a command naming one SOPInstanceUID while its data set is another
(already acknowledged) instance; an acknowledged SOPInstanceUID re-sent with other pixels, or
in another study or series; a C-STORE on the Verification context. None may replace or move
what was acknowledged; an identical resend still succeeds.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import examples
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from service.config import load_config
from service.receive.listener import start_listener
from service.storage.index import Index
from service.storage.store import InstanceStore
from tests.peers import wait_for

SUCCESS = 0x0000
SOP_INSTANCE_MISMATCH = 0xC211
INSTANCE_CONFLICT = 0xC212
SOP_CLASS_NOT_SUPPORTED = 0x0122


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[int, InstanceStore, Index]]:
    config = load_config(None, node={"host": "127.0.0.1", "port": 0, "data_dir": tmp_path})
    store = InstanceStore(tmp_path)
    index = Index(tmp_path / "index.sqlite")
    server = start_listener(config, store, index)
    yield int(server.server_address[1]), store, index
    server.shutdown()
    index.close()


def _ct(small: bool = False) -> Dataset:
    """A CT instance with fresh UIDs; ``small`` keeps it within one PDU (not spooled)."""
    ds = copy.deepcopy(examples.ct)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    if small:
        ds.Rows = ds.Columns = 8
        ds.PixelData = np.arange(64, dtype=np.int16).tobytes()
    return ds


def _encode(ds: Dataset) -> bytes:
    encoded = encode(ds, False, True)  # explicit VR little endian
    assert encoded is not None
    return encoded


def _raw_store(port: int, ds: Dataset, *, affected_sop_instance: str | None = None,
               affected_sop_class: str = CTImageStorage, context_of: str = CTImageStorage,
               ) -> int:
    """One C-STORE built by hand: the command's UIDs and the context chosen freely."""
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context(Verification, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", port, ae_title="HYPOXNODE")
    assert assoc.is_established
    try:
        context = next(cx for cx in assoc.accepted_contexts if cx.abstract_syntax == context_of)
        request = C_STORE()
        request.MessageID = 7
        request.AffectedSOPClassUID = affected_sop_class
        request.AffectedSOPInstanceUID = affected_sop_instance or ds.SOPInstanceUID
        request.Priority = 2
        request.DataSet = BytesIO(_encode(ds))
        # as pynetdicom's own send_c_store: the association thread pauses while we wait
        assoc._reactor_checkpoint.clear()
        wait_for(lambda: bool(assoc._is_paused), 10, "the association thread to pause",
                 interval_s=0.0001)
        try:
            assoc.dimse.send_msg(request, context.context_id)
            _cx, response = assoc.dimse.get_msg(block=True)
        finally:
            assoc._reactor_checkpoint.set()
        assert response is not None, "no response"
        assert isinstance(response, C_STORE), f"answered with {type(response).__name__}"
        return int(response.Status)
    finally:
        assoc.release()


def _store(port: int, ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> int:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage, [syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="HYPOXNODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def _files(store: InstanceStore) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in store.instances_dir.rglob("*.dcm")}


@pytest.mark.parametrize("small", [False, True], ids=["spooled", "in-memory"])
def test_data_set_of_another_uid_than_the_command_is_refused(
    node: tuple[int, InstanceStore, Index], small: bool, caplog: pytest.LogCaptureFixture
) -> None:
    port, store, index = node
    acknowledged = _ct(small)
    assert _store(port, acknowledged) == SUCCESS
    before = _files(store)
    other_pixels = copy.deepcopy(acknowledged)
    other_pixels.PixelData = bytes(len(acknowledged.PixelData))
    new_uid = generate_uid()
    with caplog.at_level(logging.WARNING, logger="hypoxnode.audit"):
        status = _raw_store(port, other_pixels, affected_sop_instance=new_uid)
    assert status == SOP_INSTANCE_MISMATCH
    assert _files(store) == before  # the acknowledged file untouched, nothing new
    assert index.known_instance(new_uid) is None
    assert any("is not the command's AffectedSOPInstanceUID" in r.getMessage()
               for r in caplog.records if r.name == "hypoxnode.audit")


@pytest.mark.parametrize("small", [False, True], ids=["spooled", "in-memory"])
def test_identical_resend_succeeds_other_content_is_refused(
    node: tuple[int, InstanceStore, Index], small: bool, caplog: pytest.LogCaptureFixture
) -> None:
    port, store, index = node
    ds = _ct(small)
    assert _store(port, ds) == SUCCESS
    before = _files(store)
    assert _store(port, ds) == SUCCESS  # the same bytes
    assert _store(port, ds, ImplicitVRLittleEndian) == SUCCESS  # the same content
    changed = copy.deepcopy(ds)
    changed.PixelData = bytes(len(ds.PixelData))
    with caplog.at_level(logging.WARNING, logger="hypoxnode.audit"):
        assert _store(port, changed) == INSTANCE_CONFLICT
    assert _files(store) == before
    assert any("other content" in r.getMessage() for r in caplog.records
               if r.name == "hypoxnode.audit")
    stored = pydicom.dcmread(next(iter(store.instances_dir.rglob("*.dcm"))))
    assert stored.PixelData == ds.PixelData
    assert len(index.study_instances(ds.StudyInstanceUID)) == 1


@pytest.mark.parametrize("attribute", ["StudyInstanceUID", "SeriesInstanceUID"])
def test_known_uid_in_another_study_or_series_is_refused_and_the_row_stays(
    node: tuple[int, InstanceStore, Index], attribute: str
) -> None:
    port, store, index = node
    ds = _ct()
    assert _store(port, ds) == SUCCESS
    before = _files(store)
    moved = copy.deepcopy(ds)
    setattr(moved, attribute, generate_uid())
    assert _store(port, moved) == INSTANCE_CONFLICT
    known = index.known_instance(ds.SOPInstanceUID)
    assert known is not None
    assert (known.study_instance_uid, known.series_instance_uid) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID)
    assert _files(store) == before
    if attribute == "StudyInstanceUID":
        assert index.study(moved.StudyInstanceUID) is None


@pytest.mark.parametrize("sop_class", [CTImageStorage, Verification])
def test_c_store_on_the_verification_context_is_refused(
    node: tuple[int, InstanceStore, Index], sop_class: str
) -> None:
    port, store, index = node
    ds = _ct()
    status = _raw_store(port, ds, affected_sop_class=sop_class, context_of=Verification)
    assert status == SOP_CLASS_NOT_SUPPORTED
    assert _files(store) == {}
    assert index.studies() == []
    # only the empty files the spool reserve keeps created ahead of need
    assert [p for p in store.tmp_dir.glob("store-*") if p.stat().st_size] == []
