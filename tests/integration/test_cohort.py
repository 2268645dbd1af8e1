"""The site's own repeatability from its index: pairs, RC in use, command, API and status page.

A cohort of 12 subjects scanned twice 2 days apart (plus follow-ups, early/delayed pairs and
another tracer that must stay out) is written to a real index as result documents. SUVmax of
the second scan is the first times a known ratio, so the relative RC is computed here from
first principles (for two replicates ``wSD_log^2 = mean(ln(r)^2) / 2``) and compared.
"""

from __future__ import annotations

import json
import math
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.cli.main import main
from service.config import load_config
from service.node import Node
from service.report.cohort import cohort_statistics, rc_in_use
from service.storage.index import Index

T0 = datetime(2024, 3, 5, 10, 0)
RATIOS = [1.10, 0.92, 1.05, 0.97, 1.15, 0.88, 1.02, 1.08, 0.95, 1.01, 0.90, 1.12]
TRACER = "64Cu-ATSM"


def _document(study: str, patient: str, when: datetime, suv_max: float,
              tracer: str = TRACER, injected: datetime | None = None) -> dict[str, Any]:
    return {
        "study_instance_uid": study,
        "pet_series_instance_uid": study + ".1",
        "tracer": tracer,
        "patient_id": patient,
        "issuer_of_patient_id": "HOSP",
        "scan_datetime": when.isoformat(),
        "injection_datetime": (injected or when - timedelta(hours=1)).isoformat(),
        "frame_of_reference_uid": "1.9",
        "muscle": {"suv_mean": 1.0},
        "lesions": [{"suv_max": suv_max, "suv_peak": suv_max * 0.9, "suv_mean": suv_max / 2,
                     "tm_max": suv_max, "tm_mean": suv_max / 2, "hypoxic": []}],
    }


def _fill(index: Index, n_subjects: int = len(RATIOS)) -> None:
    for i, ratio in enumerate(RATIOS[:n_subjects]):
        first = 3.0 + i * 0.5
        day = T0 + timedelta(days=10 * i)
        index.record_study_facts(_document(f"1.{i}.1", f"P{i}", day, first))
        index.record_study_facts(_document(f"1.{i}.2", f"P{i}", day + timedelta(days=2),
                                           first * ratio))
        # a follow-up two months later with a large change: not a test-retest pair
        index.record_study_facts(_document(f"1.{i}.3", f"P{i}", day + timedelta(days=60),
                                           first * 3))
    # early/delayed scans of one injection, another tracer: neither counts
    index.record_study_facts(_document("2.1", "E1", T0 + timedelta(hours=1), 4.0, injected=T0))
    index.record_study_facts(_document("2.2", "E1", T0 + timedelta(hours=20), 8.0, injected=T0))
    index.record_study_facts(_document("3.1", "F1", T0, 5.0, tracer="18F-FDG"))
    index.record_study_facts(_document("3.2", "F1", T0 + timedelta(days=1), 9.0,
                                       tracer="18F-FDG"))


def _expected_relative_rc(ratios: list[float]) -> float:
    logs = np.log(ratios)
    wsd_log = math.sqrt(float(np.mean(logs**2)) / 2.0)
    return math.exp(2.77 * wsd_log) - 1.0  # 2.77 = 1.96 sqrt(2), to 3 figures


def test_site_rc_replaces_the_reference_once_there_are_enough_pairs(tmp_path: Path) -> None:
    index = Index(tmp_path / "index.sqlite")
    settings = load_config().follow_up.model_copy(update={"min_site_pairs": 12})
    _fill(index, n_subjects=11)
    before = rc_in_use(index.all_facts(), TRACER, settings)
    assert before["suv_max"].relative_rc == settings.reference_relative_rc["suv_max"]
    assert "DOMAIN.md" in before["suv_max"].source
    assert "hypoxic_volume_ml" not in before  # no reference value, no site value

    _fill(index)
    after = rc_in_use(index.all_facts(), TRACER, settings)
    expected = _expected_relative_rc(RATIOS)
    assert after["suv_max"].relative_rc == pytest.approx(expected, rel=2e-3)
    assert after["suv_max"].source.startswith(f"this site's own test-retest pairs of {TRACER}")
    assert "n = 12" in after["suv_max"].source
    # muscle SUVmean is identical in every scan: its log-scale RC is 0 (site value, n = 12)
    assert after["muscle_suv_mean"].relative_rc == pytest.approx(0.0)

    stats = {(t, r.figure): r for t, r in cohort_statistics(index.all_facts(), 7.0)}
    assert stats[(TRACER, "suv_max")].n_subjects == 12
    assert (("18F-FDG", "suv_max") not in stats)  # one FDG pair only: not computed
    index.close()


def test_repeatability_command_over_the_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                              ) -> None:
    index = Index(tmp_path / "data" / "index.sqlite")
    _fill(index)
    index.close()
    out = tmp_path / "out"
    assert main(["repeatability", "--index", str(tmp_path / "data"), "--out", str(out),
                 "--tracer", TRACER]) == 0
    printed = capsys.readouterr().out
    assert "12 test-retest pair(s) of 64Cu-ATSM" in printed
    rows = (out / "repeatability.csv").read_text().splitlines()
    header = rows[0].split(",")
    suv_max = next(r.split(",") for r in rows if r.startswith("suv_max,"))
    value = float(suv_max[header.index("relative_rc")])
    assert value == pytest.approx(_expected_relative_rc(RATIOS), rel=2e-3)
    assert (out / "bland-altman-suv_max.png").is_file()
    # two tracers with pairs: the command asks which
    assert main(["repeatability", "--index", str(tmp_path / "data"), "--out", str(out)]) == 1
    assert "choose one with --tracer" in capsys.readouterr().err
    assert main(["repeatability", "--index", str(tmp_path / "nowhere"), "--out",
                 str(out)]) == 1


def test_status_page_and_api_show_the_site_statistics(tmp_path: Path) -> None:
    config = load_config(None, node={"host": "127.0.0.1", "port": 0, "data_dir": tmp_path},
                         http={"port": 0})
    node = Node(config)
    node.start()
    try:
        base = f"http://127.0.0.1:{node.http_port}"
        with urllib.request.urlopen(base + "/", timeout=10) as response:
            assert "id=repeatability" not in response.read().decode()  # no pairs yet
        _fill(node.index)
        with urllib.request.urlopen(base + "/api/repeatability", timeout=10) as response:
            body = json.loads(response.read())
        rows = {(r["tracer"], r["figure"]): r for r in body["statistics"]}
        assert rows[(TRACER, "suv_max")]["n_subjects"] == 12
        assert rows[(TRACER, "suv_max")]["relative_rc"] == pytest.approx(
            _expected_relative_rc(RATIOS), rel=2e-3)
        with urllib.request.urlopen(base + "/", timeout=10) as response:
            page = response.read().decode()
        assert "id=repeatability" in page
        table = page.split("id=repeatability", 1)[1].split("</table>", 1)[0]
        assert "64Cu-ATSM" in table and "SUVmax" in table and ">12<" in table
    finally:
        node.stop()
