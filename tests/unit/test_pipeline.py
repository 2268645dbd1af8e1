"""quant.pipeline.quantify on generator studies: tracer profiles, overrides, search limits."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydantic import ValidationError
from pydicom.dataset import Dataset

from quant.errors import QuantificationError
from quant.pipeline import QuantifiedStudy, quantify
from quant.segmentation.regions import detect_lesions
from quant.settings import QuantSettings, TracerOverrides
from quant.suv.tracers import PROFILES
from service.config import Config
from service.config.quant import QuantConfig
from service.pipeline.processing import build_result_objects
from service.synthetic import SyntheticStudy, ct_hu_on_pet, make_study, pet_suv_image
from tests.sr_reading import measurement_groups


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice similarity coefficient of two bool masks."""
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


@cache
def _study(tracer: str = "64Cu-ATSM", field_of_view: str = "pelvis") -> SyntheticStudy:
    return make_study(field_of_view=field_of_view, tracer=tracer)


def _config(toml: str) -> QuantSettings:
    return QuantConfig.model_validate(tomllib.loads(toml).get("quant", {})).to_settings()


def _run(tracer: str, settings: QuantSettings, field_of_view: str = "pelvis") -> QuantifiedStudy:
    study = _study(tracer, field_of_view)
    return quantify(study.pet, study.ct, [], settings)


def _thresholds(quantified: QuantifiedStudy) -> list[float]:
    (lesion,) = quantified.result.lesions
    return [sub.threshold for sub in lesion.hypoxic]


# --- tracer profiles give the defaults -----------------------------------------------------


@pytest.mark.parametrize("tracer", ["64Cu-ATSM", "18F-FMISO", "18F-FDG"])
def test_profile_thresholds_by_default(tracer: str) -> None:
    quantified = _run(tracer, _config(""))
    profile = PROFILES[tracer]
    assert _thresholds(quantified) == list(profile.hypoxic_thresholds)
    method = quantified.result.method
    assert method["tracer_profile"] == tracer
    assert method["hypoxic_thresholds"] == list(profile.hypoxic_thresholds)
    assert method["hypoxic_thresholds_from"] == f"profile {tracer}"
    assert method["lesion_tm_threshold"] == profile.lesion_tm_threshold
    assert method["tumour_source"] == "detected"


def test_global_thresholds_override_every_profile() -> None:
    settings = _config("[quant]\nhypoxic_thresholds = [2.0, 1.5]\n")
    for tracer in ("64Cu-ATSM", "18F-FMISO"):
        quantified = _run(tracer, settings)
        assert _thresholds(quantified) == [1.5, 2.0]
        assert quantified.result.method["hypoxic_thresholds_from"] == "[quant]"


def test_per_tracer_override_beats_the_global_value() -> None:
    settings = _config(
        "[quant]\nhypoxic_thresholds = [1.5, 2.0]\n"
        '[quant.tracers."18F-FMISO"]\nhypoxic_thresholds = [1.3]\nlesion_tm_threshold = 1.25\n'
    )
    fmiso = _run("18F-FMISO", settings)
    assert _thresholds(fmiso) == [1.3]
    assert fmiso.result.method["hypoxic_thresholds_from"] == '[quant.tracers."18F-FMISO"]'
    assert fmiso.result.method["lesion_tm_threshold"] == 1.25
    cu = _run("64Cu-ATSM", settings)
    assert _thresholds(cu) == [1.5, 2.0]
    assert cu.result.method["lesion_tm_threshold"] == PROFILES["64Cu-ATSM"].lesion_tm_threshold


def test_resolution_is_idempotent_and_complete() -> None:
    settings = QuantSettings(tracers={"18F-FMISO": TracerOverrides(delineation="tm_threshold")})
    resolved = settings.for_tracer(PROFILES["18F-FMISO"])
    assert resolved.hypoxic_thresholds == (1.2,)
    assert resolved.lesion_tm_threshold == 1.5
    assert resolved.delineation == "tm_threshold"
    assert resolved.for_tracer(PROFILES["64Cu-ATSM"]) == resolved
    unknown = QuantSettings().for_tracer(None)
    assert (unknown.hypoxic_thresholds, unknown.delineation) == ((1.5, 2.0), "percent_of_max")


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[quant.tracers."18F-FMSIO"]\nhypoxic_thresholds = [1.2]\n', "tracers"),
        ('[quant.tracers."18F-FMISO"]\nhypoxic_thresholds = []\n', "hypoxic_thresholds"),
        ('[quant.tracers."18F-FMISO"]\ndelineation = "50%"\n', "delineation"),
        ('[quant.tracers."18F-FMISO"]\nthreshold = 1.2\n', "threshold"),
        ('[quant]\ndelineation = "otsu"\n', "delineation"),
        ("[quant]\nsearch_z_range_mm = [10.0, -10.0]\n", "search_z_range_mm"),
        ('[quant]\nsearch_region = "legs"\n', "search_region"),
        ('[quant]\ntumour_roi_pattern = "gtv("\n', "tumour_roi_pattern"),
    ],
)
def test_bad_quant_config_names_the_key(toml: str, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        _config(toml)


# --- delineation method ----------------------------------------------------------------------


def test_tm_threshold_delineation_takes_the_lowest_hypoxic_threshold() -> None:
    # Cu-ATSM pelvis: muscle SUV 1.0, tumour rim 1.8, core 3.6. Delineating at 2.0 x muscle
    # keeps exactly the core; 40% of SUVmax (1.44) keeps the whole candidate region (> 1.5).
    study = _study()
    settings = _config(
        '[quant.tracers."64Cu-ATSM"]\nhypoxic_thresholds = [2.0, 3.0]\n'
        'delineation = "tm_threshold"\n'
    )
    quantified = quantify(study.pet, study.ct, [], settings)
    (lesion,) = quantified.result.lesions
    assert np.array_equal(lesion.mask, study.truth.tumour_core_mask)
    assert "2 x muscle SUVmean" in quantified.result.method["lesions"]
    default = _run("64Cu-ATSM", _config(""))
    assert np.array_equal(default.result.lesions[0].mask, study.truth.tumour_mask)
    assert default.result.method["delineation_fraction_of_max"] == 0.4


# --- search restricted to a z-range or a body region ---------------------------------------


@cache
def _whole_body() -> tuple[SyntheticStudy, object, object]:
    study = make_study(field_of_view="whole_body")
    return study, pet_suv_image(study), ct_hu_on_pet(study)


@pytest.mark.parametrize(
    ("limits", "found"),
    [
        ({"search_z_range_mm": (40.0, 110.0)}, True),  # the pelvic tumour, z 56..88
        ({"search_z_range_mm": (300.0, 576.0)}, False),
        ({"search_region": "abdomen_pelvis"}, True),
        ({"search_region": "thorax"}, False),
        ({"search_region": "head_neck"}, False),
    ],
)
def test_search_limits(limits: dict[str, object], found: bool) -> None:
    study, suv, ct = _whole_body()
    settings = QuantSettings(**limits)  # type: ignore[arg-type]
    lesions = detect_lesions(suv, 1.0, settings, ct_hu_on_pet=ct)  # type: ignore[arg-type]
    if found:
        assert len(lesions) == 1
        assert dice(lesions[0], study.truth.tumour_mask) >= 0.99
    else:
        assert lesions == []


def test_a_z_range_cutting_the_liver_does_not_make_it_a_lesion() -> None:
    # The liver (z 200..300) cut at z 250 is still recognised as liver on the whole image.
    study, suv, ct = _whole_body()
    settings = QuantSettings(search_z_range_mm=(150.0, 250.0))
    lesions = detect_lesions(suv, 1.0, settings, ct_hu_on_pet=ct)  # type: ignore[arg-type]
    assert study.truth.liver_mask.any()
    assert lesions == []


def test_search_region_without_lungs_is_refused() -> None:
    study = _study()
    with pytest.raises(QuantificationError, match="no lung"):
        quantify(study.pet, study.ct, [], QuantSettings(search_region="thorax"))
    with pytest.raises(QuantificationError, match="needs the CT"):
        detect_lesions(pet_suv_image(study), 1.0, QuantSettings(search_region="thorax"))


def test_search_limits_are_recorded() -> None:
    study = _study()
    quantified = quantify(study.pet, study.ct, [], QuantSettings(search_z_range_mm=(0.0, 144.0)))
    assert quantified.result.method["search"] == "z 0, 144 mm"
    assert "search z 0, 144 mm" in quantified.result.method["lesions"]


# --- a study without a lesion -----------------------------------------------------------------


def _content_items(items: object) -> list[Dataset]:
    out: list[Dataset] = []
    for item in items or []:  # type: ignore[attr-defined]
        out.append(item)
        out.extend(_content_items(item.get("ContentSequence")))
    return out


@pytest.mark.parametrize("tracer", ["64Cu-ATSM", "18F-FDG"])
def test_no_lesion_gives_an_sr_that_says_so_and_no_tumour_segment(
    tracer: str, tmp_path: Path
) -> None:
    study = make_study(field_of_view="pelvis", tracer=tracer, with_lesion=False)
    quantified = quantify(study.pet, study.ct, [], QuantSettings())
    assert quantified.result.lesions == []
    assert quantified.result.to_json()["lesions"] == []

    objects = build_result_objects(quantified, Config(), generation=1)
    objects.seg.save_as(tmp_path / "seg.dcm")
    objects.sr.save_as(tmp_path / "sr.dcm")

    seg = hd.seg.segread(tmp_path / "seg.dcm")
    types = [str(s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in seg.SegmentSequence]
    assert types == ["127954009"]  # the skeletal-muscle reference only, no Neoplasm

    sr = pydicom.dcmread(tmp_path / "sr.dcm")
    items = _content_items(sr.ContentSequence)
    texts = [str(item.get("TextValue", "")) for item in items]
    assert "No lesion found" in texts
    findings = [
        str(item.ConceptCodeSequence[0].CodeMeaning)
        for item in items
        if item.get("ValueType") == "CODE"
    ]
    assert "No lesion found" in findings
    groups = measurement_groups(sr)
    assert groups, "the SR should still hold the muscle reference group"
    assert all(group.segment_numbers in ([], [1]) for group in groups)  # muscle is segment 1
    assert not any("lesion" in group.tracking_identifier.lower() for group in groups)
