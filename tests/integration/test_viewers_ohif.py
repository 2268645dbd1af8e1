"""The node's SEG and SR in the OHIF viewer (3.13, the prebuilt ``@ohif/app``), as a radiologist
opens them: Orthanc with its DICOMweb plugin holds the study, :mod:`tests.viewers.serve` serves
OHIF beside it on one origin, headless Chromium (selenium) drives the viewer.

What OHIF shows is read from the page and from OHIF's own services (``window.services``, what
its panels display). ``HYPOXNODE_SCREENSHOTS=docs/viewers`` keeps the screenshots.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

from dicom_templates import palette
from dicom_templates.seg import hypoxic_levels, in_seg, segment_numbers
from dicom_templates.sr_anchors import lesion_summary
from tests.peers import Orthanc, free_port, start_orthanc, stop_process, wait_for
from tests.sr_reading import measurement_groups, region_groups
from tests.viewers.objects import WrittenStudy, write_quantified_study

pytestmark = pytest.mark.e2e

OHIF = Path(__file__).parents[1] / "viewers" / "ohif"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1600,1000",
)
VOLUME = ("SCT", "118565006")


def _screenshot(driver: webdriver.Chrome, tmp_path: Path, name: str) -> Path:
    keep = os.environ.get("HYPOXNODE_SCREENSHOTS")
    directory = Path(keep) if keep else tmp_path
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    driver.save_screenshot(str(path))
    return path


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WrittenStudy, str]]:
    """The study in Orthanc (DICOMweb) and the URL of OHIF served beside it."""
    if not (OHIF / "index.html").is_file():
        raise AssertionError("OHIF is not installed: run `make viewers`")
    work = tmp_path_factory.mktemp("ohif")
    study = write_quantified_study(work / "study")
    orthanc: Orthanc = start_orthanc(work / "orthanc", dicomweb=True)
    server: subprocess.Popen[bytes] | None = None
    try:
        for path in [*study.pet_ct, *study.results]:
            request = urllib.request.Request(
                orthanc.url + "/instances", data=path.read_bytes(), method="POST")
            urllib.request.urlopen(request, timeout=30).read()
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "tests.viewers.serve", str(port), orthanc.url],
            stdout=subprocess.DEVNULL, stderr=(work / "serve.log").open("wb"),
            cwd=Path(__file__).resolve().parents[2],
        )
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                urllib.request.urlopen(url + "/app-config.js", timeout=2).read()
                return True
            except OSError:
                return False

        wait_for(up, 30, "the OHIF server")
        yield study, url
    finally:
        if server is not None:
            stop_process(server)
        orthanc.stop()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """One headless Chromium (fresh profile) for the module; chromedriver stops it."""
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    chrome = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        yield chrome
    finally:
        chrome.quit()


def _poll(driver: webdriver.Chrome, script: str | Callable[[], Any], done: Callable[[Any], bool],
          timeout_s: float, what: str) -> Any:
    """Run ``script`` (JavaScript, or a callable) until ``done`` holds for its value."""
    deadline = time.monotonic() + timeout_s
    value = None
    while time.monotonic() < deadline:
        value = driver.execute_script(script) if isinstance(script, str) else script()
        if done(value):
            return value
        time.sleep(0.5)
    raise TimeoutError(f"OHIF: {what} (last: {str(value)[:500]})")


def _open_series(driver: webdriver.Chrome, url: str, study: WrittenStudy, description: str,
                 opened: str, timeout_s: float = 90) -> None:
    """Open the study in OHIF's basic viewer and double-click the series ``description``
    until the script ``opened`` is true (the double-click is lost while the viewer starts)."""
    uid = study.quantified.result.study_instance_uid
    driver.get(f"{url}/viewer?StudyInstanceUIDs={uid}")
    _poll(driver, "return document.body.innerText.includes('I:')", bool, 60,
          "the first image in the viewport")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for button in driver.find_elements(By.XPATH, "//*[text()='Skip all']"):  # the tour
            button.click()
        element = driver.find_element(By.XPATH, f"//*[contains(text(), '{description}')]")
        ActionChains(driver).double_click(element).perform()
        try:
            _poll(driver, opened, bool, 10, f"{description!r} opened")
            return
        except TimeoutError:
            continue
    raise TimeoutError(f"OHIF: double-clicking {description!r} did not open it")


def _errors(driver: webdriver.Chrome) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE" or "Error Boundary" in entry["message"]]


def _report_volumes(study: WrittenStudy, seg: Path) -> dict[int, float]:
    """The SR's volume (ml) of each segment of the SEG file ``seg``, by segment number."""
    uid = str(pydicom.dcmread(seg, stop_before_pixels=True).SOPInstanceUID)
    out = {}
    for group in region_groups(pydicom.dcmread(study.sr)):
        if group.seg_uid == uid:
            [volume] = group.find(VOLUME)
            out[group.segment_numbers[0]] = volume.value
    return out


SEGMENTS_JS = """
const s = window.services.segmentationService;
const vp = window.services.viewportGridService.getActiveViewportId();
return JSON.stringify(s.getSegmentations().map(seg => Object.values(seg.segments).map(x => ({
  number: x.segmentIndex, label: x.label,
  color: s.getSegmentColor(vp, seg.segmentationId, x.segmentIndex)}))));
"""
# The statistics OHIF's segmentation panel shows, from the same cornerstone function.
STATISTICS_JS = """
const done = arguments[arguments.length - 1];
const seg = window.services.segmentationService.getSegmentations()[0];
const indices = Object.values(seg.segments).map(x => x.segmentIndex);
window.cornerstoneTools.utilities.segmentation.getStatistics(
    {segmentationId: seg.segmentationId, segmentIndices: indices, mode: 'individual'})
  .then(st => done(JSON.stringify(Object.entries(st).map(([k, v]) => (
    {number: Number(k), voxels: v?.count?.value, volume_mm3: v?.volume?.value})))))
  .catch(e => done(JSON.stringify({error: String(e)})));
"""


def _load_seg(driver: webdriver.Chrome, url: str, study: WrittenStudy, seg: Path,
              expected: int) -> list[dict[str, Any]]:
    """Open the SEG file ``seg`` on the PET in OHIF; its ``expected`` segments as OHIF
    holds them, with the statistics its segmentation panel shows."""
    description = str(pydicom.dcmread(seg, stop_before_pixels=True).SeriesDescription)
    _open_series(driver, url, study, description,
                 "return [...document.querySelectorAll('button')].some("
                 "b => b.textContent.trim() === 'Yes')")
    driver.find_element(By.XPATH, "//button[normalize-space()='Yes']").click()
    raw = _poll(driver, SEGMENTS_JS,
                lambda v: bool(v) and sum(len(layer) for layer in json.loads(v)) == expected,
                60, "every segment in OHIF's segmentation service")
    segments = {x["number"]: x for layer in json.loads(raw) for x in layer}
    driver.set_script_timeout(60)
    stats = _poll(driver, lambda: json.loads(driver.execute_async_script(STATISTICS_JS)),
                  lambda v: "error" not in v, 60,
                  "the labelmap's voxels (they arrive after the segment list)")
    for entry in stats:
        segments[entry["number"]].update(entry)
    return list(segments.values())


def _segments_of(study: WrittenStudy, level: float | None) -> dict[int, Any]:
    return {info.number: info for info in segment_numbers(study.quantified.result).values()
            if in_seg(info, level)}


@pytest.fixture(scope="module")
def ohif_seg(pacs: tuple[WrittenStudy, str], driver: webdriver.Chrome,
             tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path,
                                                                 list[str]]:
    """The regions SEG opened in OHIF once: its segments as OHIF holds them, a screenshot,
    errors."""
    study, url = pacs
    driver.get_log("browser")  # drain
    segments = _load_seg(driver, url, study, study.seg, len(_segments_of(study, None)))
    shot = _screenshot(driver, tmp_path_factory.mktemp("shots"), "ohif-seg.png")
    return segments, shot, _errors(driver)


def test_ohif_shows_the_seg_with_its_labels_colours_and_voxels(
    pacs: tuple[WrittenStudy, str],
    ohif_seg: tuple[list[dict[str, Any]], Path, list[str]],
) -> None:
    study, _ = pacs
    segments, shot, errors = ohif_seg
    infos = _segments_of(study, None)
    colours = {"muscle": palette.MUSCLE.rgb, "lesion": palette.LESION.rgb,
               "hypoxic": palette.HYPOXIC.rgb}
    report = _report_volumes(study, study.seg)
    seg = pydicom.dcmread(study.seg, stop_before_pixels=True)
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    voxel_ml = float(np.prod([*map(float, measures.PixelSpacing),
                              float(measures.SpacingBetweenSlices)])) / 1000.0
    assert sorted(s["number"] for s in segments) == sorted(infos) == sorted(report)
    for segment in segments:
        info = infos[segment["number"]]
        assert segment["label"] == info.label
        rgb = segment["color"][:3]
        assert max(abs(a - b) for a, b in zip(rgb, colours[info.kind], strict=True)) <= 60, (
            info.label, rgb)
        # OHIF reads exactly the segment's voxels: their volume is the SR's
        assert segment["voxels"] * voxel_ml == pytest.approx(report[info.number], rel=1e-6)
    # the muscle reference (on the first slice shown) is drawn in its colour
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    r, g, b = (pixels[..., i] for i in range(3))
    assert int(np.count_nonzero((g > 200) & (r < 150) & (b < 150))) > 50
    assert errors == []


def test_ohif_reports_the_seg_volumes_of_the_report(
    pacs: tuple[WrittenStudy, str],
    ohif_seg: tuple[list[dict[str, Any]], Path, list[str]],
) -> None:
    """The volumes OHIF's segmentation panel shows are the SR's (they were a quarter of it
    while the hypoxic sub-volumes overlapped their lesion in one SEG)."""
    study, _ = pacs
    segments, _, _ = ohif_seg
    report = _report_volumes(study, study.seg)
    for segment in segments:
        assert segment["volume_mm3"] / 1000.0 == pytest.approx(report[segment["number"]],
                                                               rel=1e-3)


def test_ohif_shows_each_hypoxic_level_with_the_report_volumes(
    pacs: tuple[WrittenStudy, str], driver: webdriver.Chrome, tmp_path: Path
) -> None:
    study, url = pacs
    levels = hypoxic_levels(study.quantified.result)
    assert len(study.hypoxic_segs) == len(levels) >= 2
    for path, level in zip(study.hypoxic_segs, levels, strict=True):
        driver.get_log("browser")  # drain
        infos = _segments_of(study, level)
        segments = _load_seg(driver, url, study, path, len(infos))
        report = _report_volumes(study, path)
        assert sorted(s["number"] for s in segments) == sorted(infos) == sorted(report)
        for segment in segments:
            info = infos[segment["number"]]
            assert segment["label"] == info.label
            rgb = segment["color"][:3]
            assert max(abs(a - b) for a, b in zip(rgb, palette.HYPOXIC.rgb, strict=True)) <= 60
            assert segment["volume_mm3"] / 1000.0 == pytest.approx(report[info.number],
                                                                   rel=1e-3), info.label
        if level == levels[0]:
            _screenshot(driver, tmp_path, "ohif-seg-hypoxic.png")
        assert _errors(driver) == []


SR_JS = """
return JSON.stringify(window.services.displaySetService.getActiveDisplaySets()
  .filter(d => d.Modality === 'SR').map(d => (d.measurements || []).map(m => ({
    trackingIdentifier: m.TrackingIdentifier, loaded: m.loaded,
    labels: (m.labels || []).map(l => `${l.label}: ${l.value}`)}))));
"""


def test_ohif_draws_every_report_group_with_its_figures(
    pacs: tuple[WrittenStudy, str], driver: webdriver.Chrome, tmp_path: Path
) -> None:
    """OHIF's SR viewport draws each group's point on its PET slice with the group's figures
    (its tracked-measurements panel lists only measurements of its own tools)."""
    study, url = pacs
    driver.get_log("browser")  # drain
    _open_series(driver, url, study, "hypoxnode measurement report",
                 "return window.services.displaySetService.getActiveDisplaySets()"
                 ".some(d => d.Modality === 'SR')")
    ours = measurement_groups(pydicom.dcmread(study.sr))
    volumetric = region_groups(pydicom.dcmread(study.sr))
    raw = _poll(driver, SR_JS,
                lambda v: bool(v) and sum(len(d) for d in json.loads(v)) == len(ours)
                and all(m["loaded"] for d in json.loads(v) for m in d),
                90, "every measurement group of the SR loaded on the PET")
    first = volumetric[0].find(VOLUME)[0].value  # the viewport opens on the first group
    _poll(driver, "return document.body.innerText",
          lambda text: f"Volume: {first:.2f} ml" in text, 30,
          "the first group's figures drawn in the viewport")
    _screenshot(driver, tmp_path, "ohif-sr.png")
    [shown] = json.loads(raw)
    by_id = {m["trackingIdentifier"]: m for m in shown}
    assert sorted(by_id) == sorted(g.tracking_identifier for g in ours)
    for group in volumetric:
        [volume] = group.find(VOLUME)
        assert f"Volume: {volume.value:.2f} ml" in by_id[group.tracking_identifier]["labels"]
    assert _errors(driver) == []


MEASUREMENTS_JS = """
return JSON.stringify(window.services.measurementService.getMeasurements().map(m => ({
  label: m.label, toolName: m.toolName, uid: m.uid, primary: m.displayText?.primary})));
"""
TRACKED_PANEL = "@ohif/extension-measurement-tracking.panelModule.trackedMeasurements"


def test_ohif_lists_each_lesion_in_its_measurements_panel(
    pacs: tuple[WrittenStudy, str], driver: webdriver.Chrome, tmp_path: Path
) -> None:
    """Accepting OHIF's offer to track the report's measurements puts each lesion's SUVmax
    point in the measurements panel, labelled with the lesion's figures, drawn on its PET
    slice (the volumetric groups are not tools OHIF has: it skips them)."""
    study, url = pacs
    driver.get_log("browser")  # drain
    _open_series(driver, url, study, "hypoxnode measurement report",
                 "return [...document.querySelectorAll('button')].some("
                 "b => b.textContent.trim() === 'Yes')")
    driver.find_element(By.XPATH, "//button[normalize-space()='Yes']").click()
    result = study.quantified.result
    lesions = sorted(result.lesions, key=lambda x: -x.suv_max)
    expected = [lesion_summary(i, lesion, result) for i, lesion in enumerate(lesions, start=1)]
    raw = _poll(driver, MEASUREMENTS_JS, lambda v: len(json.loads(v)) == len(expected), 60,
                "the report's points in OHIF's measurement service")
    measurements = json.loads(raw)
    assert sorted(m["label"] for m in measurements) == sorted(expected)
    assert {m["toolName"] for m in measurements} == {"Probe"}
    suv_max = {label: lesion.suv_max for label, lesion in zip(expected, lesions, strict=True)}
    for m in measurements:  # the value OHIF shows beside the label: SUVmax at the point
        assert float(m["primary"][0]) == pytest.approx(suv_max[m["label"]], abs=0.005)
    driver.execute_script(f"window.services.panelService.activatePanel('{TRACKED_PANEL}', true)")
    driver.execute_script(
        "window.services.measurementService.jumpToMeasurement("
        "window.services.viewportGridService.getActiveViewportId(), arguments[0])",
        measurements[0]["uid"])
    _poll(driver, "return document.body.innerText", lambda text: expected[0] in text, 30,
          "the lesion's figures in the measurements panel")
    _screenshot(driver, tmp_path, "ohif-measurements.png")
    assert _errors(driver) == []

