"""The status pages rendered from their templates, without a node: what a person reads."""

from __future__ import annotations

import html
from typing import Any

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
