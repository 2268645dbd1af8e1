"""Regenerate docs/summary-example.png from a real run of the pipeline.

A synthetic whole-body 64Cu-ATSM study (10 % noise, 6 mm blur) is quantified by the same code
the service uses; the Secondary Capture it builds is saved as PNG.

    .venv/bin/python docs/make_summary_example.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from quant.pipeline import quantify  # noqa: E402
from service.config import load_config  # noqa: E402
from service.pipeline.processing import build_result_objects  # noqa: E402
from service.storage.study_files import find_files, read_study  # noqa: E402
from service.synthetic import make_study, write_study  # noqa: E402


def main() -> None:
    """Quantify the study and write the summary PNG."""
    config = load_config(None)
    with tempfile.TemporaryDirectory() as folder:
        write_study(make_study(field_of_view="whole_body", noise_sd=0.1, blur_fwhm_mm=6.0,
                               seed=1), folder)
        files = read_study(find_files(Path(folder)))
        quantified = quantify(files.pet, files.ct, files.structures,
                              config.quant.to_settings())
    objects = build_result_objects(quantified, config, generation=1)
    out = REPO / "docs" / "summary-example.png"
    Image.fromarray(objects.summary.pixel_array).save(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
