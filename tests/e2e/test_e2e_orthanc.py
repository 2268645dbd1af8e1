"""The whole path with real peers: DCMTK storescu -> hypoxnode serve -> a real Orthanc PACS.

The node runs as a subprocess (``python -m service serve``), Orthanc as the PACS; the SEG,
SR and summary are fetched back from Orthanc's REST API, checked against the synthetic
study's truth, and judged by dciodvfy.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from service.synthetic import make_study, write_study
from tests.dicomcheck import dciodvfy_errors
from tests.peers import Orthanc, start_orthanc, storescu, wait_for
from tests.reliability import destination_toml, start_test_node
from tests.sr_reading import measurement_groups, region_groups

pytestmark = pytest.mark.e2e

SUVBW = ("DCM", "126401")
MAXIMUM = ("SCT", "56851009")
MEAN = ("SCT", "373098007")


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = start_orthanc(tmp_path / "orthanc")
    yield pacs
    pacs.stop()


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_study_in_results_out(tmp_path: Path, orthanc: Orthanc) -> None:
    study = make_study(field_of_view="pelvis", tracer="64Cu-ATSM")
    files = write_study(study, tmp_path / "scanner")
    node = start_test_node(tmp_path / "node", http=False, stable_seconds=2,
                           sections=destination_toml(orthanc.ae_title, orthanc.dicom_port))
    port = node.port
    try:
        sent = storescu(files, port, "HYPOXNODE")
        assert sent.returncode == 0, sent.stderr

        def results_in_pacs() -> bool:
            found = orthanc.instances_by_modality()
            return all(found.get(m) for m in ("SEG", "SR", "OT"))

        wait_for(results_in_pacs, 240, "SEG, SR and summary in Orthanc")
    finally:
        exit_code = node.stop()
    assert exit_code == 0, node.log()[-3000:]

    found = orthanc.instances_by_modality()
    assert len(found["SR"]) == len(found["OT"]) == 1
    objects = {}
    segs = {}
    for modality, ids in found.items():
        for k, orthanc_id in enumerate(ids):
            data = orthanc.get_bytes(f"/instances/{orthanc_id}/file")
            path = tmp_path / f"{modality}{k}.dcm"
            path.write_bytes(data)
            assert dciodvfy_errors(path) == [], f"dciodvfy errors in the {modality}"
            objects[modality] = pydicom.dcmread(BytesIO(data))
            if modality == "SEG":
                segs[str(objects[modality].SOPInstanceUID)] = hd.seg.Segmentation.from_dataset(
                    objects[modality])
    truth = study.truth
    pet_uids = [str(ds.SOPInstanceUID) for ds in study.pet]

    # The SR's figures match the truth: lesion SUVmax and muscle SUVmean within 1 %.
    sr = objects["SR"]
    assert sr.StudyInstanceUID == study.pet[0].StudyInstanceUID
    groups = measurement_groups(sr)
    suv_max = [m.value for g in groups for m in g.find(SUVBW, MAXIMUM)]
    suv_mean = {g.tracking_identifier: g.find(SUVBW, MEAN) for g in groups}
    assert suv_max, "no SUVbw maximum in the SR"
    np.testing.assert_allclose(max(suv_max), truth.suv_max, rtol=0.01)
    muscle = [g for g in groups if "muscle" in g.tracking_identifier.lower()]
    assert len(muscle) == 1, [g.tracking_identifier for g in groups]
    np.testing.assert_allclose(suv_mean[muscle[0].tracking_identifier][0].value,
                               truth.muscle_suv_mean, rtol=0.01)

    # Every SEG the SR references arrived; each group's segment holds the SR's volume.
    order = np.argsort([float(ds.ImagePositionPatient[2]) for ds in study.pet])
    volume_ml = truth.voxel_volume_ml
    masks = {}
    for group in region_groups(sr):
        assert group.seg_uid in segs, group.tracking_identifier
        [segment] = group.segment_numbers
        mask = segs[group.seg_uid].get_pixels_by_source_instance(
            source_sop_instance_uids=pet_uids, segment_numbers=[segment],
            assert_missing_frames_are_empty=True,
        )[..., 0].astype(bool)[order]
        masks[group.tracking_identifier] = mask
        [volume] = group.find(("SCT", "118565006"))
        assert int(mask.sum()) * volume_ml == pytest.approx(volume.value, rel=1e-6)
    assert len({g.seg_uid for g in groups}) == len(segs)  # no SEG sent that the SR ignores
    # The lesion segment is the tumour, on the PET grid; its hypoxic parts lie inside it.
    lesion_group = next(g for g in groups if g.find(SUVBW, MAXIMUM)
                        and g.find(SUVBW, MAXIMUM)[0].value == max(suv_max))
    lesion = masks[lesion_group.tracking_identifier]
    assert _dice(lesion, truth.tumour_mask) >= 0.8
    hypoxic = [m for name, m in masks.items() if "hypoxic" in name]
    assert hypoxic and all(not (m & ~lesion).any() for m in hypoxic)
    assert objects["OT"].StudyInstanceUID == study.pet[0].StudyInstanceUID
