"""``hypoxnode repeatability`` (CSV and ``quantify --json`` folders) and the Bland-Altman PNG."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quant.results import HypoxicSubvolume, LesionResult, MuscleResult, StudyResult, SuvFacts
from quant.stats.repeatability import repeatability
from service.cli.repeatability_command import EXIT_NO_PAIRS, EXIT_OK, EXIT_USAGE, run_repeatability
from service.report.plots import (
    BIAS_LINE,
    HEIGHT,
    LOA_LINE,
    PLOT_LEFT,
    PLOT_RIGHT,
    WIDTH,
    bland_altman_plot,
    nice_ticks,
)
from service.report.repeatability_inputs import figures_from_quantify_json

FIGURES = ("suv_max", "tm_max", "hypoxic_volume_ml")


def _cohort(seed: int = 3, n: int = 12) -> np.ndarray:
    """``(n, 2, len(FIGURES))`` test-retest values, 10% multiplicative noise, 6 decimals."""
    rng = np.random.default_rng(seed)
    true = np.exp(rng.normal(np.log([4.0, 2.0, 15.0]), 0.4, size=(n, 1, 3)))
    return np.round(true * np.exp(rng.normal(0.0, 0.1, size=(n, 2, 3))), 6)


def _write_csv(path: Path, values: np.ndarray) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "scan", *FIGURES])
        for i, subject in enumerate(values):
            for scan, row in enumerate(subject, start=1):
                writer.writerow([f"P{i:02d}", scan, *(f"{v:.6f}" for v in row)])


def _line_rows(image: Image.Image, colour: tuple[int, int, int], min_fraction: float) -> list[int]:
    """Rows where ``colour`` covers at least ``min_fraction`` of the plot area's width."""
    pixels = np.asarray(image)[:, PLOT_LEFT:PLOT_RIGHT]
    share = np.all(pixels == colour, axis=-1).mean(axis=1)
    return [int(r) for r in np.flatnonzero(share >= min_fraction)]


def test_plot_draws_bias_between_the_limits_in_proportion() -> None:
    values = _cohort()[:, :, 0]
    result = repeatability(values, "suv_max")
    image = bland_altman_plot(values[:, 0], values[:, 1], result, label="SUVmax", units="g/ml")
    assert image.size == (WIDTH, HEIGHT) and image.mode == "RGB"
    bias_rows = _line_rows(image, BIAS_LINE, 0.8)
    loa_rows = _line_rows(image, LOA_LINE, 0.5)
    assert bias_rows and len(loa_rows) >= 2
    top, bottom, bias = min(loa_rows), max(loa_rows), float(np.mean(bias_rows))
    ba = result.bland_altman
    assert ba is not None
    expected = (ba.loa_high - ba.mean_difference) / (ba.loa_high - ba.loa_low)
    np.testing.assert_allclose((bias - top) / (bottom - top), expected, atol=0.02)


def test_log_ratio_plot_needs_positive_values() -> None:
    values = np.array([[0.0, 1.0], [2.0, 3.0], [3.0, 3.5]])
    result = repeatability(values)
    with pytest.raises(ValueError, match="positive"):
        bland_altman_plot(values[:, 0], values[:, 1], result, log_ratio=True)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [(0.0, 10.0, [0, 2, 4, 6, 8, 10]), (-1.07, 1.06, [-1.0, -0.5, 0.0, 0.5, 1.0])],
)
def test_nice_ticks(low: float, high: float, expected: list[float]) -> None:
    ticks, _ = nice_ticks(low, high)
    np.testing.assert_allclose(ticks, expected)


def test_csv_cohort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = _cohort()
    _write_csv(tmp_path / "cohort.csv", values)
    out = tmp_path / "out"
    assert run_repeatability([str(tmp_path / "cohort.csv"), "--out", str(out)]) == EXIT_OK
    with (out / "repeatability.csv").open(newline="") as handle:
        rows = {row["figure"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(FIGURES)
    for index, figure in enumerate(FIGURES):
        expected = repeatability(values[:, :, index], figure)
        assert expected.log is not None
        assert int(rows[figure]["n_subjects"]) == 12
        np.testing.assert_allclose(float(rows[figure]["rc"]), expected.rc)
        np.testing.assert_allclose(float(rows[figure]["wcv"]), expected.log.wcv)
        np.testing.assert_allclose(float(rows[figure]["icc_ci_low"]), expected.icc_ci.low)
        with Image.open(out / f"bland-altman-{figure}.png") as image:
            assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
    assert rows["suv_max"]["units"] == "g/ml" and rows["hypoxic_volume_ml"]["units"] == "ml"
    printed = capsys.readouterr().out
    assert "suv_max" in printed and "ICC" in printed


def test_csv_missing_value_leaves_the_subject_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cohort.csv"
    path.write_text(
        "subject,scan,suv_max,tm_max\nA,1,4.0,2.0\nA,2,4.4,\nB,1,6.0,3.0\nB,2,5.5,2.9\n"
        "C,1,3.0,1.5\nC,2,3.3,1.6\nD,1,5.0,2.5\n"
    )
    out = tmp_path / "out"
    assert run_repeatability([str(path), "--out", str(out), "--figures", "tm_max"]) == EXIT_OK
    with (out / "repeatability.csv").open(newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["figure"] == "tm_max" and row["n_subjects"] == "2"
    printed = capsys.readouterr().out
    assert "subject A left out: a value is missing" in printed
    assert "subject D left out: 1 scan(s)" in printed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("subject,suv_max\nA,1\n", "no 'scan' column"),
        ("subject,scan,suv_max\nA,1,x\n", "not a number"),
        ("subject,scan,suv_max\nA,1,1\nA,1,2\n", "appears twice"),
    ],
)
def test_bad_csv_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert run_repeatability([str(path), "--out", str(tmp_path / "out")]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_no_pairs_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "single.csv"
    path.write_text("subject,scan,suv_max\nA,1,1.0\nA,2,1.1\nB,1,2.0\n")
    assert run_repeatability([str(path), "--out", str(tmp_path / "out")]) == EXIT_NO_PAIRS
    assert not (tmp_path / "out").exists()


def _study_json(suv_max: float, tm_max: float, hypoxic_ml: float, time: str) -> dict[str, object]:
    """A real ``StudyResult.to_json()`` (two lesions, two thresholds)."""
    mask = np.zeros((2, 2, 2), dtype=bool)

    def lesion(scale: float) -> LesionResult:
        return LesionResult(
            suv_max=suv_max * scale,
            suv_mean=0.6 * suv_max * scale,
            suv_peak=0.8 * suv_max * scale,
            volume_ml=20.0,
            tm_max=tm_max * scale,
            tm_mean=0.6 * tm_max * scale,
            hypoxic=[
                HypoxicSubvolume(1.3, hypoxic_ml, hypoxic_ml / 20.0, mask),
                HypoxicSubvolume(1.5, hypoxic_ml / 2.0, hypoxic_ml / 40.0, mask),
            ],
            mask=mask,
            source="detected",
        )

    facts = SuvFacts(
        "BQML", "START", "BW", None, None, None, None, None, None, None, None, None, 1.0
    )
    result = StudyResult(
        study_instance_uid="1.2.3",
        pet_series_instance_uid="1.2.3.4",
        pet_sop_instance_uids=[],
        tracer="64Cu-ATSM",
        suv_type="BW",
        suv=facts,
        muscle=MuscleResult(suv_max / tm_max, 0.1, 50.0, mask, "thigh"),
        lesions=[lesion(0.5), lesion(1.0)],
        voxel_volume_ml=0.064,
    )
    doc = result.to_json()
    doc["suv"]["scan_reference_time"] = time
    return doc


def test_figures_from_quantify_json_take_the_hottest_lesion() -> None:
    doc = _study_json(8.0, 4.0, 6.0, "2024-01-01T10:00:00")
    figures = figures_from_quantify_json(doc)
    assert figures["suv_max"] == 8.0 and figures["tm_max"] == 4.0
    np.testing.assert_allclose(figures["muscle_suv_mean"], 2.0)
    assert figures["hypoxic_volume_ml"] == 6.0 and figures["hypoxic_fraction"] == 0.3
    assert figures_from_quantify_json(doc, hypoxic_threshold=1.5)["hypoxic_volume_ml"] == 3.0
    doc["lesions"] = []
    assert math.isnan(figures_from_quantify_json(doc)["suv_max"])


def test_json_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = _cohort(seed=5, n=6)
    folder = tmp_path / "json"
    folder.mkdir()
    for i, subject in enumerate(values):
        # Written in reverse order: pairing must follow the scan time, not the file name.
        for scan, (suv_max, tm_max, hypoxic_ml) in reversed(list(enumerate(subject))):
            doc = _study_json(suv_max, tm_max, hypoxic_ml, f"2024-01-0{scan + 1}T10:00:00")
            doc["patient_id"] = f"P{i}"
            (folder / f"{i}-{1 - scan}.json").write_text(json.dumps(doc))
    (folder / "refused.json").write_text(json.dumps({"error": "PatientWeight missing"}))
    out = tmp_path / "out"
    argv = [str(folder), "--out", str(out), "--figures", "suv_max,tm_max", "--log-ratio-plots"]
    assert run_repeatability(argv) == EXIT_OK
    with (out / "repeatability.csv").open(newline="") as handle:
        rows = {row["figure"]: row for row in csv.DictReader(handle)}
    expected = repeatability(values[:, :, 0], "suv_max")
    assert expected.bland_altman is not None
    np.testing.assert_allclose(
        float(rows["suv_max"]["ba_mean_difference"]), expected.bland_altman.mean_difference
    )
    assert (out / "bland-altman-log-tm_max.png").is_file()
    assert "PatientWeight missing" in capsys.readouterr().out


def test_json_without_subject(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for subject in ("A", "B"):
        for scan in (1, 2):
            (tmp_path / "in" / subject).mkdir(parents=True, exist_ok=True)
            doc = _study_json(4.0 + scan, 2.0, 5.0, f"2024-01-0{scan}T10:00:00")
            (tmp_path / "in" / subject / f"scan{scan}.json").write_text(json.dumps(doc))
    argv = [str(tmp_path / "in"), "--out", str(tmp_path / "out")]
    assert run_repeatability(argv) == EXIT_USAGE
    assert "--subject-from-folder" in capsys.readouterr().err
    assert run_repeatability([*argv, "--subject-from-folder"]) == EXIT_OK
