"""Query/retrieve against a real Orthanc: which earlier studies count, their series, C-MOVE.

Small hand-made PET headers (4 x 4 pixels) in Orthanc; the node side is
:class:`service.routing.priors_pacs.Pacs` alone, answered by Orthanc over loopback.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

from service.config.follow_up import PacsPriorsConfig
from service.routing.priors_pacs import Pacs, PacsError
from tests.peers import Orthanc, start_orthanc, storescu

pytestmark = pytest.mark.e2e


def _instance(folder: Path, study_uid: str, series_uid: str, modality: str, date: str,
              patient_id: str, issuer: str = "") -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    sop_class = PositronEmissionTomographyImageStorage if modality == "PT" else CTImageStorage
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.PatientID, ds.PatientName, ds.IssuerOfPatientID = patient_id, "Prior^Test", issuer
    ds.Modality, ds.StudyDate, ds.StudyTime = modality, date, "090000"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(32)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    orthanc = start_orthanc(tmp_path / "pacs", ae_title="PACS",
                            modalities={"node": ["HYPOXNODE", "127.0.0.1", 1]})
    yield orthanc
    orthanc.stop()


def test_earlier_studies_series_and_move(tmp_path: Path, pacs: Orthanc) -> None:
    studies = {name: generate_uid() for name in
               ("recent", "older", "too_old", "other_issuer", "other_patient", "held")}
    dates = {"recent": "20240201", "older": "20231001", "too_old": "20200101",
             "other_issuer": "20240210", "other_patient": "20240215", "held": "20240220"}
    files = []
    series = {}
    for name, uid in studies.items():
        series[name] = generate_uid()
        patient = "OTHER" if name == "other_patient" else "P1"
        issuer = "HOSP-B" if name == "other_issuer" else "HOSP-A"
        files += [_instance(tmp_path / "files", uid, series[name], "PT", dates[name], patient,
                            issuer) for _ in range(2)]
    files.append(_instance(tmp_path / "files", studies["recent"], generate_uid(), "CT",
                           dates["recent"], "P1", "HOSP-A"))
    sent = storescu(files, pacs.dicom_port, "PACS")
    assert sent.returncode == 0, sent.stderr

    settings = PacsPriorsConfig(enabled=True, ae_title="PACS", port=pacs.dicom_port,
                                max_priors=2, max_age_days=365, timeout_s=5)
    node = Pacs(settings, "HYPOXNODE")
    found = node.earlier_studies("P1", "HOSP-A", datetime(2024, 3, 5, 9),
                                 held=lambda uid: uid == studies["held"])
    assert [s.study_instance_uid for s in found] == [studies["recent"], studies["older"]]

    image_series = {s.series_instance_uid: s for s in node.image_series(studies["recent"])}
    assert image_series[series["recent"]].modality == "PT"
    assert image_series[series["recent"]].instances == 2
    assert sorted(s.modality for s in image_series.values()) == ["CT", "PT"]

    # Moving to an AE title the PACS does not know fails with the reason; a down PACS too.
    with pytest.raises(PacsError, match="C-MOVE from PACS@127.0.0.1"):
        node.move_series(studies["recent"], series["recent"], "NOBODY")
    pacs.stop()
    with pytest.raises(PacsError, match="unreachable"):
        node.earlier_studies("P1", "HOSP-A", datetime(2024, 3, 5, 9), held=lambda uid: False)
