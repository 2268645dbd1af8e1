"""``hypoxnode suv DIR``: convert the PET series under a directory to SUV and report it.

Reads every DICOM file under DIR (headers first), picks the PET series, converts it with
:func:`quant.image.volume.load_pet_suv`, and prints the header facts, the warnings, whole-volume
statistics and, for RTSTRUCT / SEG objects on the same frame of reference, per-ROI statistics.
A refusal (:class:`~quant.errors.QuantificationError`) exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from quant.errors import QuantificationError
from quant.image.contours import rasterise_rtstruct, seg_masks
from quant.image.volume import PetVolume, load_pet_suv
from quant.suv.factors import SUV_TYPES
from quant.suv.tracers import identify_tracer

EXIT_OK = 0
EXIT_REFUSED = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypoxnode suv",
        description="Convert the PET series under DIR to SUV and print the facts used.",
    )
    parser.add_argument("directory", metavar="DIR", type=Path, help="folder searched recursively")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", type=Path, help="write the SUV volume (.nii.gz, .nrrd, ...)")
    parser.add_argument(
        "--suv-type", default="BW", type=str.upper, choices=SUV_TYPES, help="default BW"
    )
    parser.add_argument("--series", help="SeriesInstanceUID, when DIR holds several PET series")
    return parser


def _headers(directory: Path) -> list[tuple[Path, Dataset]]:
    found: list[tuple[Path, Dataset]] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if "SOPClassUID" in ds:
            found.append((path, ds))
    return found


def _pick_pet(headers: list[tuple[Path, Dataset]], series_uid: str | None) -> list[Path]:
    series: dict[str, list[Path]] = defaultdict(list)
    for path, ds in headers:
        if str(ds.get("Modality", "")) == "PT":
            series[str(ds.get("SeriesInstanceUID", ""))].append(path)
    if series_uid is not None:
        if series_uid not in series:
            raise QuantificationError(f"no PET series with SeriesInstanceUID {series_uid}")
        return series[series_uid]
    if not series:
        raise QuantificationError("no PET images (Modality PT) found")
    if len(series) > 1:
        raise QuantificationError(
            f"{len(series)} PET series found ({', '.join(sorted(series))}): choose one with "
            "--series"
        )
    return next(iter(series.values()))


def _referenced_series(rtstruct: Dataset) -> set[str]:
    out = set()
    for frame in rtstruct.get("ReferencedFrameOfReferenceSequence") or []:
        for study in frame.get("RTReferencedStudySequence") or []:
            for series in study.get("RTReferencedSeriesSequence") or []:
                out.add(str(series.get("SeriesInstanceUID", "")))
    return out


def _structure_frame_of_reference(ds: Dataset) -> set[str]:
    uids = {str(ds.get("FrameOfReferenceUID", ""))}
    for frame in ds.get("ReferencedFrameOfReferenceSequence") or []:
        uids.add(str(frame.get("FrameOfReferenceUID", "")))
    return uids - {""}


def _structures(headers: list[tuple[Path, Dataset]], pet: PetVolume) -> dict[str, np.ndarray]:
    """ROI masks on the PET grid from RTSTRUCTs (and SEGs) that belong to the PET series."""
    candidates = [
        path
        for path, ds in headers
        if str(ds.get("Modality", "")) in ("RTSTRUCT", "SEG")
        and pet.frame_of_reference_uid in _structure_frame_of_reference(ds)
    ]
    full = [pydicom.dcmread(path) for path in candidates]
    direct = [
        ds
        for ds in full
        if str(ds.Modality) == "RTSTRUCT" and pet.series_instance_uid in _referenced_series(ds)
    ]
    chosen = direct or full
    masks: dict[str, np.ndarray] = {}
    for ds in chosen:
        found = (
            rasterise_rtstruct(ds, pet.suv)
            if str(ds.Modality) == "RTSTRUCT"
            else seg_masks(ds, pet.suv)
        )
        for name, mask in found.items():
            key, n = name, 2
            while key in masks:
                key, n = f"{name} ({n})", n + 1
            masks[key] = mask
    return masks


def _stats(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"max": None, "mean": None, "median": None, "min": None}
    return {
        "max": float(np.max(values)),
        "mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "min": float(np.min(values)),
    }


def summarise(
    pet: PetVolume, masks: dict[str, np.ndarray], *, tracer: str = "unknown"
) -> dict[str, Any]:
    """The ``suv --json`` document for a converted volume and its ROI masks."""
    array = sitk.GetArrayViewFromImage(pet.suv)
    voxel_ml = float(np.prod(pet.suv.GetSpacing())) / 1000.0
    rois = {}
    for name, mask in masks.items():
        roi = _stats(array[mask])
        roi["volume_ml"] = float(np.count_nonzero(mask)) * voxel_ml
        rois[name] = roi
    return {
        "series_instance_uid": pet.series_instance_uid,
        "study_instance_uid": pet.study_instance_uid,
        "tracer": tracer,
        "size": list(pet.suv.GetSize()),
        "spacing_mm": list(pet.suv.GetSpacing()),
        "facts": pet.facts.to_json(),
        "warnings": list(pet.facts.warnings),
        "stats": _stats(np.asarray(array).ravel()),
        "rois": rois,
    }


def _fmt(value: object) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _print_text(doc: dict[str, Any]) -> None:
    print(f"PET series {doc['series_instance_uid']} ({doc['tracer']})")
    for key, value in doc["facts"].items():
        if key != "warnings":
            print(f"  {key}: {_fmt(value)}")
    for warning in doc["warnings"]:
        print(f"warning: {warning}")
    stats = ", ".join(f"{k} {_fmt(v)}" for k, v in doc["stats"].items())
    print(f"SUV{doc['facts']['suv_type'].lower()} whole volume: {stats}")
    for name, roi in doc["rois"].items():
        print(f"  ROI {name}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in roi.items()))
    if "out" in doc:
        print(f"written: {doc['out']}")


def run_suv(argv: list[str]) -> int:
    """Entry point of ``hypoxnode suv DIR [--json] [--out FILE]``.

    Parameters
    ----------
    argv
        Arguments after the subcommand name.

    Returns
    -------
    int
        0 on success, 2 when the study cannot be converted (reason printed, as
        ``{"error": ...}`` with ``--json``).
    """
    args = _parser().parse_args(argv)
    try:
        if not args.directory.is_dir():
            raise QuantificationError(f"{args.directory} is not a directory")
        headers = _headers(args.directory)
        pet_paths = _pick_pet(headers, args.series)
        pet = load_pet_suv([pydicom.dcmread(p) for p in pet_paths], suv_type=args.suv_type)
        masks = _structures(headers, pet)
        doc = summarise(pet, masks, tracer=identify_tracer(pet.datasets[0]).name)
        if args.out is not None:
            try:
                sitk.WriteImage(pet.suv, str(args.out), True)
            except RuntimeError as exc:
                raise QuantificationError(f"cannot write {args.out}: {exc}") from exc
            doc["out"] = str(args.out)
    except QuantificationError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        else:
            print(f"hypoxnode suv: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_text(doc)
    return EXIT_OK
