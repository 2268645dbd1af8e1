"""The sender against a real SCP that accepts only some SOP classes (a PACS without SEG)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.events import Event
from pynetdicom.transport import ThreadedAssociationServer

from quant.pipeline import quantify
from service.config import Destination, load_config
from service.export.sender import Sender
from service.pipeline.processing import build_result_objects, encode
from service.storage.index import Index, InstanceRecord
from service.synthetic import make_study

SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture
def pacs_without_seg() -> Iterator[tuple[int, list[Dataset]]]:
    received: list[Dataset] = []

    def on_store(event: Event) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="NOSEG")
    for sop_class in (SR_STORAGE, SC_STORAGE):
        ae.add_supported_context(sop_class)
    server: ThreadedAssociationServer | None = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    yield int(server.server_address[1]), received
    server.shutdown()


def test_refused_sop_class_fails_alone_and_the_rest_is_delivered(
    tmp_path: Path, pacs_without_seg: tuple[int, list[Dataset]]
) -> None:
    port, received = pacs_without_seg
    config = load_config(None, node={"data_dir": tmp_path},
                         destinations=[Destination(ae_title="NOSEG", host="127.0.0.1",
                                                   port=port)])
    study = make_study(field_of_view="pelvis", seed=11)
    quantified = quantify(study.pet, study.ct, [], config.quant.to_settings())
    objects = build_result_objects(quantified, config, generation=1)
    study_uid = str(study.pet[0].StudyInstanceUID)
    outputs = []
    for kind, dataset in (("SEG", objects.seg), ("SR", objects.sr), ("SC", objects.summary)):
        path = tmp_path / f"{kind}.dcm"
        path.write_bytes(encode(dataset))
        outputs.append((kind, str(dataset.SOPInstanceUID), str(path)))
    index = Index(tmp_path / "index.sqlite")
    index.record_instance(InstanceRecord("1.2.3.4", "1.2.3", study_uid, "1.2.3.5", "PT", "/x",
                                         1, "SCANNER", 0.0))
    index.record_results(study_uid, outputs, ["NOSEG"], generation=1)

    assert Sender(config, index).run_once() == 2
    exports = {row["sop_instance_uid"]: row for row in index.study(study_uid)["exports"]}
    seg = exports[str(objects.seg.SOPInstanceUID)]
    assert seg["state"] == "failed"
    assert "does not accept SOP class" in seg["last_error"]
    assert "Segmentation Storage" in seg["last_error"]
    for dataset in (objects.sr, objects.summary):
        assert exports[str(dataset.SOPInstanceUID)]["state"] == "sent"
    assert sorted(str(ds.SOPClassUID) for ds in received) == sorted([SR_STORAGE, SC_STORAGE])


def test_a_fault_while_sending_is_retried_with_backoff_not_every_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error inside a delivery attempt counts as a failed attempt: the export
    waits for its backoff instead of being due again at the next scheduler tick."""
    config = load_config(None, node={"data_dir": tmp_path},
                         destinations=[Destination(ae_title="PACS", host="127.0.0.1", port=9)])
    study_uid = "1.2.3"
    path = tmp_path / "SR.dcm"
    path.write_bytes(b"")  # never read: the delivery fails first
    index = Index(tmp_path / "index.sqlite")
    index.record_instance(InstanceRecord("1.2.3.4", "1.2.3", study_uid, "1.2.3.5", "PT", "/x",
                                         1, "SCANNER", 0.0))
    index.record_results(study_uid, [("SR", "1.2.3.9", str(path))], ["PACS"], generation=1)

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a defect")

    result = Dataset()
    result.SOPClassUID = SR_STORAGE
    monkeypatch.setattr("service.export.sender.dcmread", lambda _path: result)
    monkeypatch.setattr("service.export.sender.deliver", broken)
    now = time.time() + 1.0  # the export was queued due now
    sender = Sender(config, index, clock=lambda: now)
    assert sender.run_once() == 0
    [export] = index.study(study_uid)["exports"]
    assert export["state"] == "pending" and export["attempts"] == 1
    assert "internal error while sending" in export["last_error"]
    assert index.due_exports(now + 1) == []  # not due at the next tick
    assert len(index.due_exports(now + config.export.retry_initial_seconds + 1)) == 1
