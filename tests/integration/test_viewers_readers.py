"""The node's SEG, SR and SC read by the readers other sites use, not only dciodvfy.

* PixelMed (Debian ``libpixelmed-java``): ``DicomSRValidator`` checks the SR against TID 1500
  and its sub-templates, ``DicomInstanceValidator`` the SEG against its IOD;
* dcmjs (npm, the DICOM library of OHIF): SEG labels, colours, PET series; SR groups;
* dcmqi (PyPI ``dcmqi``, the converters of 3D Slicer's QuantitativeReporting):
  ``segimage2itkimage`` writes every segment as an image, ``tid1500reader`` the report as JSON.

The objects come from a synthetic study through the service's own code path
(:mod:`tests.viewers.objects`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from dicom_templates import palette
from dicom_templates.seg import hypoxic_levels, in_seg, segment_numbers
from tests.dicomcheck import dciodvfy_errors, pixelmed_errors, pixelmed_lines
from tests.sr_reading import measurement_groups, region_groups
from tests.viewers.objects import WrittenStudy, write_quantified_study

VOLUME = ("SCT", "118565006")
# General Series Laterality is Type 2C, "required if the body part examined is a paired
# structure" (PS3.3 C.7.3.1). PixelMed cannot tell and asks for it whenever Image/Frame
# Laterality are absent; for whole-body PET it must be absent (dciodvfy: an empty one is an
# error). The only PixelMed line tolerated, named here so any other error fails.
PIXELMED_LATERALITY = "Error: GeneralSeriesModule/Laterality/: : Missing conditional attribute"


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(path).exists():
        raise AssertionError(f"{name} is not installed (make venv installs dcmqi)")
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> WrittenStudy:
    return write_quantified_study(tmp_path_factory.mktemp("viewers"))


def test_pixelmed_sr_validator_finds_no_error(study: WrittenStudy) -> None:
    lines = pixelmed_lines(study.sr, "DicomSRValidator")
    assert "Found Root Template TID_1500 (MeasurementReport)" in lines
    assert [line for line in lines if line.startswith("Error")] == []
    assert dciodvfy_errors(study.sr) == []


def test_pixelmed_instance_validator_on_every_seg(study: WrittenStudy) -> None:
    assert len(study.segs) == 1 + len(hypoxic_levels(study.quantified.result)) >= 2
    for seg in study.segs:
        lines = pixelmed_lines(seg, "DicomInstanceValidator")
        assert "Found Segmentation IOD" in lines
        assert pixelmed_errors(seg, "DicomInstanceValidator") in ([], [PIXELMED_LATERALITY])
        assert dciodvfy_errors(seg) == []
        assert "Laterality" not in pydicom.dcmread(seg, stop_before_pixels=True)


def test_dciodvfy_on_the_summary(study: WrittenStudy) -> None:
    # PixelMed 20220618's DicomInstanceValidator has no Secondary Capture IOD ("IOD (SOP
    # Class) unrecognized"); dciodvfy checks it.
    assert dciodvfy_errors(study.sc) == []


def _levels(study: WrittenStudy) -> dict[Path, float | None]:
    """The level of each SEG file (None: the regions SEG)."""
    return dict(zip(study.segs, [None, *hypoxic_levels(study.quantified.result)], strict=True))


def test_dcmqi_reads_every_segment_with_the_report_volume(
    study: WrittenStudy, tmp_path: Path
) -> None:
    report_volumes = {}
    for group in region_groups(pydicom.dcmread(study.sr)):
        if group.segment_numbers:
            [volume] = group.find(VOLUME)
            report_volumes[(group.seg_uid, group.segment_numbers[0])] = volume.value
    read = []
    for k, (path, level) in enumerate(_levels(study).items()):
        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        subprocess.run(
            [_tool("segimage2itkimage"), "--inputDICOM", str(path), "--outputDirectory",
             str(tmp_path), "--prefix", f"seg{k}", "--outputType", "nrrd"],
            check=True, capture_output=True, timeout=60,
        )
        meta = json.loads((tmp_path / f"seg{k}-meta.json").read_text())
        attributes = [a for layer in meta["segmentAttributes"] for a in layer]
        numbers = {info.number: info for info in segment_numbers(study.quantified.result).values()
                   if in_seg(info, level)}
        assert sorted(a["labelID"] for a in attributes) == sorted(numbers)
        for a in attributes:
            number = int(a["labelID"])
            assert a["SegmentLabel"] == numbers[number].label
            assert max(a["recommendedDisplayRGBValue"]) >= 200  # a colour, not near-black
            image = sitk.ReadImage(str(tmp_path / f"seg{k}-{number}.nrrd"))
            voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(image)))
            ml = voxels * float(np.prod(image.GetSpacing())) / 1000.0
            assert ml == pytest.approx(report_volumes[(uid, number)], rel=1e-6), a["SegmentLabel"]
            read.append((uid, number))
    assert sorted(read) == sorted(report_volumes)  # every group's segment, and only those


def test_dcmqi_tid1500reader_keeps_every_group_and_measurement(
    study: WrittenStudy, tmp_path: Path
) -> None:
    out = tmp_path / "sr.json"
    subprocess.run(
        [_tool("tid1500reader"), "--inputDICOM", str(study.sr), "--outputMetadata", str(out)],
        check=True, capture_output=True, timeout=60,
    )
    read = json.loads(out.read_text())
    ours = measurement_groups(pydicom.dcmread(study.sr))
    theirs = {m["TrackingIdentifier"]: m for m in read["Measurements"]}
    assert sorted(theirs) == sorted(g.tracking_identifier for g in ours)
    for group in ours:
        items = theirs[group.tracking_identifier]["measurementItems"]
        assert sorted(float(i["value"]) for i in items) == pytest.approx(
            sorted(m.value for m in group.measurements), rel=1e-9
        )
        assert theirs[group.tracking_identifier]["ReferencedSegment"] == group.segment_numbers[0]
    # dcmqi lists the referenced instances as its "imageLibrary": the PET the figures are from
    assert set(study.quantified.result.pet_sop_instance_uids) <= set(read["imageLibrary"])


VIEWERS = Path(__file__).parents[1] / "viewers"
PALETTE = {"muscle": palette.MUSCLE.rgb, "lesion": palette.LESION.rgb,
           "hypoxic": palette.HYPOXIC.rgb}


def _dcmjs(study: WrittenStudy, seg: Path | None = None) -> dict[str, Any]:
    if not (VIEWERS / "node_modules" / "dcmjs").is_dir():
        raise AssertionError("dcmjs is not installed (make viewers runs npm ci in tests/viewers)")
    proc = subprocess.run(
        ["node", str(VIEWERS / "read_dcmjs.mjs"), str(seg or study.seg), str(study.sr)],
        check=True, capture_output=True, text=True, timeout=60,
    )
    read: dict[str, Any] = json.loads(proc.stdout)
    return read


def test_dcmjs_reads_the_seg_labels_colours_and_pet_series(study: WrittenStudy) -> None:
    result = study.quantified.result
    for path, level in _levels(study).items():
        seg = _dcmjs(study, path)["seg"]
        assert seg["referencedSeries"] == [result.pet_series_instance_uid]
        infos = {info.number: info for info in segment_numbers(result).values()
                 if in_seg(info, level)}
        assert [s["number"] for s in seg["segments"]] == sorted(infos)
        for segment in seg["segments"]:
            info = infos[segment["number"]]
            assert segment["label"] == info.label
            rgb = segment["rgb"]
            assert max(rgb) >= 200, rgb  # not the near-black of 0..1 input to from_rgb
            # dcmjs's CIELab->RGB differs from highdicom's by a few tens: nearest palette colour
            nearest = min(PALETTE, key=lambda k: sum((a - b) ** 2 for a, b in
                                                     zip(rgb, PALETTE[k], strict=True)))
            assert nearest == info.kind, (segment, rgb)


def test_dcmjs_reads_the_report_groups_and_points(study: WrittenStudy) -> None:
    sr = _dcmjs(study)["sr"]
    assert sr["title"] == "DCM:126000"
    ours = measurement_groups(pydicom.dcmread(study.sr))
    theirs = {g["trackingIdentifier"]: g for g in sr["groups"]}
    assert sorted(theirs) == sorted(g.tracking_identifier for g in ours)
    for group in ours:
        values = sorted(m["value"] for m in theirs[group.tracking_identifier]["measurements"])
        assert values == pytest.approx(sorted(m.value for m in group.measurements), rel=1e-9)
    result = study.quantified.result
    for i, lesion in enumerate(sorted(result.lesions, key=lambda x: -x.suv_max), start=1):
        [point] = theirs[f"Lesion {i}"]["scoords"]
        assert point["graphicType"] == "POINT"
        assert point["referencedSOP"] == result.pet_sop_instance_uids[lesion.max_index[0]]
