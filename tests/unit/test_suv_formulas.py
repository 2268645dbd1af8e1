"""quant.suv.factors: parametrized tables of inputs and hand-computed expectations."""

from __future__ import annotations

import numpy as np
import pytest

from quant.suv import factors as suv


@pytest.mark.parametrize(
    ("elapsed_s", "half_life_s", "expected"),
    [
        (0.0, 6586.2, 1.0),
        (6586.2, 6586.2, 0.5),
        (2 * 45721.0, 45721.0, 0.25),
        (3600.0, 6586.2, 0.6846329195720021),  # FDG, 1 h
        (86400.0, 45721.0, 0.26985897096905626),  # Cu-64, 24 h
        (82800.0, 45721.0, 0.2849964765520622),  # Cu-64, 23 h
        (1800.0, 580.0, 0.11635069423999815),  # Cu-62, 30 min
        (-6586.2, 6586.2, 2.0),
    ],
)
def test_decay_factor(elapsed_s: float, half_life_s: float, expected: float) -> None:
    np.testing.assert_allclose(suv.decay_factor(elapsed_s, half_life_s), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("duration_s", "half_life_s", "expected"),
    [
        (0.0, 6586.2, 0.0),
        (1e-6, 6586.2, 0.5e-6),
        (603.0, 6586.2, 299.90559240538033),  # the DRO_3_2 / DRO_3_4 frames
        (600.0, 580.0, 282.1499666743151),  # Cu-62: well before the middle
    ],
)
def test_frame_effective_time(duration_s: float, half_life_s: float, expected: float) -> None:
    np.testing.assert_allclose(
        suv.frame_effective_time_s(duration_s, half_life_s), expected, rtol=1e-9, atol=1e-12
    )


@pytest.mark.parametrize(
    ("weight", "size", "sex", "expected"),
    [
        (70.0, 1.75, "M", 56.52),  # 1.10*70 - 128*(70/175)^2
        (70.0, 1.75, "F", 51.22),  # 1.07*70 - 148*(70/175)^2
        (70.0, 1.75, "O", 53.87),  # mean
        (80.0, 1.80, "m", 62.71604938271605),
        (60.0, 1.65, "F", 44.62975206611571),
    ],
)
def test_lbm_james(weight: float, size: float, sex: str, expected: float) -> None:
    np.testing.assert_allclose(suv.lbm_james_kg(weight, size, sex), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("sex", "expected"),
    [
        ("M", 55.857107722577474),  # 9270*70 / (6680 + 216*22.857)
        ("F", 45.19701492537313),  # 9270*70 / (8780 + 244*22.857)
        ("O", (55.857107722577474 + 45.19701492537313) / 2),
    ],
)
def test_lbm_janmahasatian(sex: str, expected: float) -> None:
    np.testing.assert_allclose(suv.lbm_janmahasatian_kg(70.0, 1.75, sex), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("size", "sex", "expected"),
    [(1.75, "M", 72.38), (1.75, "F", 66.43), (1.75, "O", 69.405), (1.52, "M", 48.0)],
)
def test_ibw(size: float, sex: str, expected: float) -> None:
    np.testing.assert_allclose(suv.ibw_kg(size, sex), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("weight", "size", "expected"),
    [(70.0, 1.75, 1.8481430181213465), (55.0, 1.60, 1.563174472339115)],
)
def test_bsa_du_bois(weight: float, size: float, expected: float) -> None:
    np.testing.assert_allclose(suv.bsa_du_bois_m2(weight, size), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("suv_type", "weight", "size", "sex", "expected"),
    [
        ("BW", 70.0, None, None, 70000.0),
        ("bw", 82.5, None, None, 82500.0),
        ("LBMJAMES128", 70.0, 1.75, "M", 56520.0),
        ("LBM", 70.0, 1.75, "F", 51220.0),
        ("LBMJANMA", 70.0, 1.75, "M", 55857.107722577474),
        ("IBW", None, 1.75, "O", 69405.0),
        ("BSA", 70.0, 1.75, None, 18481.430181213465),  # cm^2
    ],
)
def test_suv_normaliser(
    suv_type: str, weight: float | None, size: float | None, sex: str | None, expected: float
) -> None:
    np.testing.assert_allclose(
        suv.suv_normaliser(suv_type, weight, size, sex), expected, rtol=1e-12
    )


@pytest.mark.parametrize(
    ("dose", "normaliser", "decay", "expected"),
    [
        (368.08e6, 70000.0, 0.6846329195720021, 2.7777812496068244e-4),  # DRO_0_0
        (368.08e6, 70000.0, 1.0, 1.9017604868506847e-4),  # ADMIN
        (200e6, 80000.0, 0.5, 8e-4),
    ],
)
def test_bqml_to_suv_factor(dose: float, normaliser: float, decay: float, expected: float) -> None:
    np.testing.assert_allclose(
        suv.bqml_to_suv_factor(dose, normaliser, decay), expected, rtol=1e-12
    )


@pytest.mark.parametrize(
    ("from_normaliser", "to_normaliser", "expected"),
    [
        (18481.430181213465, 70000.0, 3.787585663752127),  # SUVbsa -> SUVbw
        (56520.0, 70000.0, 1.2384996461429582),  # SUVlbm -> SUVbw
        (70000.0, 70000.0, 1.0),
    ],
)
def test_convert_suv_factor(from_normaliser: float, to_normaliser: float, expected: float) -> None:
    np.testing.assert_allclose(
        suv.convert_suv_factor(from_normaliser, to_normaliser), expected, rtol=1e-12
    )


@pytest.mark.parametrize(
    ("stored", "expected_bq", "was_mbq"),
    [(368.08, 368.08e6, True), (3.6808e8, 3.6808e8, False), (99999.0, 99999e6, True)],
)
def test_dose_to_bq(stored: float, expected_bq: float, was_mbq: bool) -> None:
    value, flagged = suv.dose_to_bq(stored)
    np.testing.assert_allclose(value, expected_bq, rtol=1e-12)
    assert flagged is was_mbq


@pytest.mark.parametrize(
    ("stored", "expected_kg", "was_grams"),
    [(70.0, 70.0, False), (70000.0, 70.0, True), (1000.0, 1000.0, False)],
)
def test_weight_to_kg(stored: float, expected_kg: float, was_grams: bool) -> None:
    value, flagged = suv.weight_to_kg(stored)
    np.testing.assert_allclose(value, expected_kg, rtol=1e-12)
    assert flagged is was_grams


@pytest.mark.parametrize(
    ("stored", "expected_m", "was_cm"), [(1.75, 1.75, False), (175.0, 1.75, True)]
)
def test_size_to_m(stored: float, expected_m: float, was_cm: bool) -> None:
    value, flagged = suv.size_to_m(stored)
    np.testing.assert_allclose(value, expected_m, rtol=1e-12)
    assert flagged is was_cm


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: suv.decay_factor(10.0, 0.0), "half_life_s"),
        (lambda: suv.frame_effective_time_s(-1.0, 6586.2), "frame_duration_s"),
        (lambda: suv.lbm_james_kg(70.0, 1.75, "X"), "patient_sex"),
        (lambda: suv.suv_normaliser("SUL", 70.0), "suv_type"),
        (lambda: suv.suv_normaliser("BW", None), "patient_weight_kg"),
        (lambda: suv.suv_normaliser("BSA", 70.0, None), "patient_size_m"),
        (lambda: suv.suv_normaliser("LBMJANMA", 70.0, 1.75, None), "patient_sex"),
        (lambda: suv.bqml_to_suv_factor(0.0, 70000.0), "injected_dose_bq"),
        (lambda: suv.dose_to_bq(-1.0), "radionuclide_total_dose"),
    ],
)
def test_bad_arguments_are_named(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
