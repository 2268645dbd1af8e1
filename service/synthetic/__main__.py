"""``python -m service.synthetic OUTDIR``: write one synthetic study (used by the demo)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from service.synthetic.anatomy import FIELDS_OF_VIEW, TRACERS
from service.synthetic.study import make_study, write_study


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the arguments, build the study, write it and print where."""
    parser = argparse.ArgumentParser(prog="python -m service.synthetic", description=__doc__)
    parser.add_argument("outdir", help="directory to write pet/ and ct/ into")
    parser.add_argument("--field-of-view", choices=sorted(FIELDS_OF_VIEW), default="pelvis")
    parser.add_argument("--tracer", choices=sorted(TRACERS), default="64Cu-ATSM")
    parser.add_argument("--noise-sd", type=float, default=0.0)
    parser.add_argument("--blur-fwhm-mm", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patient-id", default="SYNTH001")
    parser.add_argument("--injection-to-scan-s", type=float, default=3600.0)
    parser.add_argument("--no-lesion", action="store_true")
    args = parser.parse_args(argv)
    study = make_study(
        field_of_view=args.field_of_view,
        tracer=args.tracer,
        noise_sd=args.noise_sd,
        blur_fwhm_mm=args.blur_fwhm_mm,
        seed=args.seed,
        patient_id=args.patient_id,
        injection_to_scan_s=args.injection_to_scan_s,
        with_lesion=not args.no_lesion,
    )
    paths = write_study(study, args.outdir)
    print(f"wrote {len(paths)} files of study {study.truth.field_of_view} to {args.outdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
