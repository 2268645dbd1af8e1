"""Bounded memory: a study is refused, before any pixel is decoded, when its quantification
would need more than the node may use (``node.max_memory_mb``, default 1.5 GB for all the
node's processes).

Issue 20: a 512 x 512 PET of 300 slices with its CT took the worker to 4.9 GB. Here that study
(full-size pixel data, made by copying a synthetic slice: cheap) goes through the worker's own
function in a fresh process whose peak resident memory (``VmHWM``) is measured.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from service.pipeline.memory_budget import (
    NODE_SHARE_MB,
    SeriesSize,
    estimated_peak_mb,
    study_allowance_mb,
)
from service.synthetic import make_study
from tests.peers import REPO

DEFAULT_CEILING_MB = 1536.0

_WORKER = """
import json, sys
from pathlib import Path
from service.config import load_config
from service.pipeline.processing import process_study

def hwm_mb():
    with open("/proc/self/status") as status:
        line = next(l for l in status if l.startswith("VmHWM"))
    return int(line.split()[1]) / 1024

data, study_uid, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
config = load_config(None, node={"data_dir": data})
outcome = process_study(config, study_uid, paths, 1)
print(json.dumps({"ok": outcome.ok, "error": outcome.error, "peak_mb": hwm_mb()}))
"""


def _series(template: Dataset, matrix: int, slices: int, directory: Path) -> list[Path]:
    """``slices`` images of ``matrix`` x ``matrix`` on ``template``'s headers, 2 mm apart."""
    directory.mkdir(parents=True)
    series_uid = generate_uid()
    pixels = np.zeros((matrix, matrix), dtype=np.uint16).tobytes()
    spacing = 600.0 / matrix
    paths = []
    base = copy.deepcopy(template)
    del base.PixelData
    for index in range(slices):
        ds = copy.copy(base)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta = copy.copy(template.file_meta)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Rows = ds.Columns = matrix
        ds.PixelSpacing = [spacing, spacing]
        ds.ImagePositionPatient = [-300.0, -300.0, 2.0 * index]
        ds.InstanceNumber = index + 1
        ds.PixelData = pixels
        path = directory / f"{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _run_worker(tmp_path: Path, study_uid: str, paths: list[Path]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _WORKER, str(tmp_path / "data"), study_uid, *map(str, paths)],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_a_512_pet_of_300_slices_with_its_ct_is_refused_within_the_ceiling(
    tmp_path: Path,
) -> None:
    study = make_study(field_of_view="pelvis", seed=61)
    pet = _series(study.pet[0], 512, 300, tmp_path / "pet")
    ct = _series(study.ct[0], 512, 300, tmp_path / "ct")
    outcome = _run_worker(tmp_path, str(study.pet[0].StudyInstanceUID), pet + ct)
    assert outcome["ok"] is False
    reason = str(outcome["error"])
    assert "too large for this node's memory" in reason
    assert "512x512x300" in reason and "node.max_memory_mb" in reason
    assert float(outcome["peak_mb"]) < study_allowance_mb(DEFAULT_CEILING_MB)  # type: ignore[arg-type]
    assert not (tmp_path / "data" / "results").exists() or not any(
        (tmp_path / "data" / "results").rglob("*.dcm"))


def test_the_estimate_covers_a_measured_study_and_admits_the_benchmark_studies(
    tmp_path: Path,
) -> None:
    """A study the worker can quantify (PET 256 x 256 x 100 with a 512 x 512 CT of 100
    slices): measured peak under the estimate, and the estimate not far above it. The
    benchmark's whole-body study (600 CT 512 x 512, 300 PET 200 x 200; worker peak 1,024 MB
    measured, README "Integrity") stays admitted under the default ceiling."""
    from tests.bench.studies import BenchStudySpec, render, study_files, write_copy

    spec = BenchStudySpec("budget", ct_slices=100, pet_slices=100, pet_matrix=256,
                          z_range_mm=(0.0, 300.0))
    write_copy(spec, render(spec), tmp_path / "study", 0)
    outcome = _run_worker(tmp_path, "1.2.3", study_files(tmp_path / "study"))
    assert outcome["ok"] is True, outcome["error"]
    estimate = estimated_peak_mb(SeriesSize(256, 256, 100), SeriesSize(512, 512, 100))
    measured = float(outcome["peak_mb"])  # type: ignore[arg-type]
    assert measured <= estimate <= 1.5 * measured, (measured, estimate)

    whole_body = estimated_peak_mb(SeriesSize(200, 200, 300), SeriesSize(512, 512, 600))
    assert whole_body <= study_allowance_mb(DEFAULT_CEILING_MB)
    assert whole_body + NODE_SHARE_MB <= DEFAULT_CEILING_MB
