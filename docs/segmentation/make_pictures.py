"""Render what hypoxnode finds on each synthetic field of view into docs/segmentation/<fov>.png.

Run from the repository root::

    .venv/bin/python docs/segmentation/make_pictures.py

Each study is the project's generator (64Cu-ATSM, 10 % noise, 6 mm FWHM blur, seed 0), run
through :func:`quant.pipeline.quantify` (the service's code path) and drawn with the summary
renderer the node sends to PACS: coronal and sagittal fused PET/CT MIPs with the lesion (cyan)
and muscle reference (green) contours, and the figures. One FDG abdomen (hot bowel wall
around gas, kidneys with hot urine) shows the exclusions of :mod:`quant.physiology`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813 (the conventional name)
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dicom_templates.summary_render import render_summary  # noqa: E402
from quant.pipeline import quantify  # noqa: E402
from quant.settings import QuantSettings  # noqa: E402
from tests.synthetic import make_study  # noqa: E402

FIELDS_OF_VIEW = ("head_neck", "thorax", "abdomen", "pelvis", "whole_body")
TITLES = {
    "head_neck": "Head and neck",
    "thorax": "Thorax",
    "abdomen": "Abdomen (hot liver, bowel, kidneys)",
    "pelvis": "Pelvis (bladder)",
    "whole_body": "Whole body",
}


def render(field_of_view: str, out_dir: Path, tracer: str = "64Cu-ATSM") -> Path:
    """Quantify one synthetic study and write its summary picture; return the PNG path."""
    study = make_study(field_of_view=field_of_view, tracer=tracer, noise_sd=0.1, blur_fwhm_mm=6.0)
    quantified = quantify(study.pet, study.ct, [], QuantSettings())
    suv = sitk.GetArrayFromImage(quantified.pet.suv).astype(np.float32)
    assert quantified.ct_on_pet is not None
    ct = sitk.GetArrayFromImage(quantified.ct_on_pet).astype(np.float32)
    sx, sy, sz = (float(s) for s in quantified.pet.suv.GetSpacing())
    picture = render_summary(
        quantified.result,
        suv,
        ct,
        (sz, sy, sx),
        title=f"Synthetic {TITLES[field_of_view]}, {tracer}, noise 10 %, blur 6 mm",
    )
    suffix = "" if tracer == "64Cu-ATSM" else "_" + tracer.split("-")[-1].lower()
    path = out_dir / f"{field_of_view}{suffix}.png"
    Image.fromarray(picture).save(path, optimize=True)
    return path


def main() -> None:
    """Render every field of view next to this script."""
    out_dir = Path(__file__).resolve().parent
    for field_of_view in FIELDS_OF_VIEW:
        print(render(field_of_view, out_dir))
    print(render("abdomen", out_dir, tracer="18F-FDG"))  # hot bowel, kidneys: excluded


if __name__ == "__main__":
    main()
