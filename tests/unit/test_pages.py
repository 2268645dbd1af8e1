"""The status pages rendered from their templates, without a node: what a person reads."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from service.report.pages import study_detail, study_list


def _study(**changes: Any) -> dict[str, Any]:
    study: dict[str, Any] = {
        "study_instance_uid": "1.2.3", "state": "done", "generation": 1, "error": None,
        "last_received_at": 0.0, "series": [], "results": [], "exports": [],
        "result": {
            "tracer": "64Cu-ATSM", "suv_type": "BW", "warnings": [],
            "muscle": {"suv_mean": 1.0, "suv_sd": 0.1, "volume_ml": 100.0, "location": "psoas"},
            "lesions": [],
            "excluded_candidates": [{"label": "Excluded 1", "reason": "urine <bladder>",
                                     "suv_max": 3.0, "volume_ml": 77.8,
                                     "centroid_mm": [0.0, -44.824691358024694, 50.00370]}],
        },
    }
    study.update(changes)
    return study


def test_excluded_candidate_centre_is_shown_to_the_tenth_of_a_millimetre() -> None:
    page = study_detail(_study())
    assert "<td>0.0, -44.8, 50.0</td>" in page
    assert "44.824691" not in page


def test_every_value_from_the_index_is_escaped() -> None:
    page = study_detail(_study(error="<script>alert(1)</script>"))
    assert "<script>alert" not in page
    assert "Not quantified: <script>alert(1)</script>" in html.unescape(page)
    assert "urine &lt;bladder&gt;" in page


def test_no_lesion_and_none_values_read_as_nothing() -> None:
    page = study_detail(_study())
    assert "No lesion found." in page
    assert "None" not in page
    status = {"ae_title": "HX", "port": 104, "studies": {}, "exports": {}}
    listing = study_list([], status)
    assert "No study received yet." in listing and "none yet" in listing


def test_each_seg_is_named_by_its_series_in_the_exports_table(tmp_path: Path) -> None:
    """The regions SEG and each hypoxic SEG are told apart (kind + series description); a
    result file that cannot be read still shows its kind."""
    results, exports = [], []
    for uid, description in (("1.9.1", "hypoxnode segmentation"),
                             ("1.9.2", "hypoxic T/M>=1.5 (hypoxnode)"), ("1.9.3", None)):
        path = tmp_path / f"{uid}.dcm"
        if description is not None:
            ds = Dataset()
            ds.SeriesDescription = description
            ds.SOPInstanceUID = uid
            ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(path, enforce_file_format=True)
        results.append({"sop_instance_uid": uid, "kind": "SEG", "path": str(path)})
        exports.append({"sop_instance_uid": uid, "destination": "PACS", "state": "sent",
                        "attempts": 1, "last_error": None, "updated_at": 0.0})
    page = html.unescape(study_detail(_study(results=results, exports=exports)))
    assert "<td>SEG hypoxnode segmentation</td>" in page
    assert "<td>SEG hypoxic T/M>=1.5 (hypoxnode)</td>" in page
    assert "<td>SEG</td>" in page
