"""Make the pictures and the table of docs/segmentation (issue 14): the project's own summary
rendering of the automatic regions, on the real sts_petct_mirp patients (quantified WITHOUT
their RTSTRUCT; the GTV is the answer) and on the synthetic fields of view (10 % noise, 6 mm
blur).

Run from the repository root: ``PYTHONPATH=. .venv/bin/python docs/segmentation/make_pictures.py``
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk  # noqa: N813 (the conventional name)
from PIL import Image

from dicom_templates.summary_render import render_summary
from quant.pipeline import TUMOUR_ROI_PATTERN, QuantifiedStudy, quantify
from quant.settings import QuantSettings
from quant.image.supplied_contours import supplied_tumour_masks
from tests.data_archives import unpack
from service.synthetic import make_study

OUT = Path(__file__).resolve().parent


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _picture(study: QuantifiedStudy, name: str, title: str) -> None:
    suv = sitk.GetArrayFromImage(study.pet.suv).astype(np.float64)
    ct = sitk.GetArrayFromImage(study.ct_on_pet) if study.ct_on_pet is not None else None
    sx, sy, sz = study.pet.suv.GetSpacing()
    pixels = render_summary(study.result, suv, ct, (sz, sy, sx), title=title)
    Image.fromarray(pixels).save(OUT / f"{name}.png", optimize=True)


def _row(name: str, study: QuantifiedStudy, truth: np.ndarray | None, hottest: tuple | None) -> str:
    result = study.result
    lesions = result.lesions
    if truth is None or not truth.any():
        found, dice, false = "(no tumour)", "-", len(lesions)
    else:
        holding = [les for les in lesions if hottest is not None and les.mask[hottest]]
        found = "yes" if holding else "NO"
        dice = f"{max((_dice(les.mask, truth) for les in lesions), default=0.0):.2f}"
        false = sum(1 for les in lesions if not (les.mask & truth).any())
    excluded = "; ".join(
        f"{c.reason.split(' (')[0]} {c.suv_max:.1f}" for c in result.excluded
    ) or "none"
    muscle = result.muscle
    return (
        f"| {name} | {result.method.get('field_of_view')} | {found} | {dice} | {false} | "
        f"{excluded} | {muscle.suv_mean:.2f} ({muscle.hu_mean:.0f} HU, {muscle.volume_ml:.0f} ml) |"
    )


def main() -> None:
    rows = [
        "| study | field of view | tumour found | Dice | false lesions | excluded (reason SUVmax) "
        "| muscle SUVmean (HU, ml) |",
        "|---|---|---|---|---|---|---|",
    ]
    root = unpack("sts_petct_mirp")
    for patient in ("STS_001", "STS_002", "STS_003"):
        def read(folder: Path) -> list[pydicom.Dataset]:
            return [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]

        base = root / patient
        study = quantify(read(base / "PET/dicom/image"), read(base / "CT/dicom/image"), [],
                         QuantSettings())
        gtv = supplied_tumour_masks(read(base / "PET/dicom/mask"), study.pet.suv,
                                    study.pet.frame_of_reference_uid, TUMOUR_ROI_PATTERN)[0][1]
        suv = sitk.GetArrayFromImage(study.pet.suv)
        hottest = np.unravel_index(int(np.argmax(np.where(gtv, suv, -np.inf))), suv.shape)
        rows.append(_row(f"{patient} (real FDG, no RTSTRUCT)", study, gtv, hottest))
        _picture(study, patient.lower(), f"{patient}: automatic regions (RTSTRUCT withheld)")
    cases = [
        ("pelvis", "18F-FDG", {}), ("abdomen", "18F-FDG", {}), ("thorax", "18F-FDG", {}),
        ("head_neck", "18F-FDG", {}), ("whole_body", "64Cu-ATSM", {}), ("limb", "18F-FDG", {}),
        ("abdomen", "18F-FDG", {"variant": "touching"}),
        ("abdomen", "64Cu-ATSM", {"tumour_site": "liver"}),
        ("pelvis", "18F-FMISO", {"tumour_site": "bladder"}),
        ("pelvis", "18F-FDG", {"tumour_site": "bladder"}),
        ("pelvis", "64Cu-ATSM", {"necrotic": True}),
        ("whole_body", "18F-FDG", {"with_lesion": False}),
    ]
    for fov, tracer, extra in cases:
        synthetic = make_study(field_of_view=fov, tracer=tracer, noise_sd=0.1, blur_fwhm_mm=6.0,
                               seed=2, **extra)  # type: ignore[arg-type]
        study = quantify(synthetic.pet, synthetic.ct, [], QuantSettings())
        truth = synthetic.truth
        hottest = (
            np.unravel_index(int(np.argmax(np.where(truth.tumour_mask, truth.suv, -1))),
                             truth.suv.shape) if truth.tumour_mask.any() else None
        )
        label = "-".join([fov, tracer, *(f"{k}={v}" for k, v in extra.items())])
        rows.append(_row(f"synthetic {label}", study, truth.tumour_mask, hottest))
        if not extra or fov in ("pelvis",) and "tumour_site" in extra:
            name = "synthetic_" + label.replace("=", "_").replace(" ", "")
            _picture(study, name, f"synthetic {label}")
    (OUT / "results.md").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
