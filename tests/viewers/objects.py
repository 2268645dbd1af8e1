"""The objects the viewer tests read: a synthetic study quantified and written as the node does.

The study goes through the service's own code path
(:func:`service.pipeline.processing.build_result_objects`)
with one hand-made excluded candidate, so the SR shows an exclusion as PACS would receive it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quant.pipeline import QuantifiedStudy, quantify
from quant.results import ExcludedCandidate
from service.config import load_config
from service.pipeline.processing import build_result_objects, encode
from service.synthetic import make_study, write_study


@dataclass
class WrittenStudy:
    """Paths of a written study and its result objects, and the quantification."""

    pet_ct: list[Path]
    seg: Path
    """The regions SEG (muscle reference and lesions)."""
    sr: Path
    sc: Path
    quantified: QuantifiedStudy
    hypoxic_segs: list[Path]
    """The SEG of each hypoxic level, lowest threshold first."""

    @property
    def segs(self) -> list[Path]:
        """Every SEG: the regions, then the hypoxic levels."""
        return [self.seg, *self.hypoxic_segs]

    @property
    def results(self) -> list[Path]:
        """Every result object, as the node sends them."""
        return [*self.segs, self.sr, self.sc]


def write_quantified_study(directory: Path, patient_id: str = "VIEW1") -> WrittenStudy:
    """Write a synthetic PET/CT study and the SEGs, SR and SC the node makes of it."""
    config = load_config()
    study = make_study(patient_id=patient_id, seed=21)
    paths = [Path(p) for p in write_study(study, directory / "images")]
    quantified = quantify(study.pet, study.ct, [], config.quant.to_settings())
    quantified.result.excluded.append(
        ExcludedCandidate(
            reason="bladder (urine in the pelvic midline)",
            suv_max=18.5,
            volume_ml=120.0,
            mask=np.zeros((1, 1, 1), dtype=bool),
            centroid_mm=(0.0, 10.0, -600.0),
            label="Excluded 1",
        )
    )
    objects = build_result_objects(quantified, config, 1)
    out: dict[str, list[Path]] = {}
    for kind, dataset in objects.by_kind():
        path = directory / f"{kind.lower()}{len(out.get(kind, []))}.dcm"
        path.write_bytes(encode(dataset))
        out.setdefault(kind, []).append(path)
    [seg, *hypoxic], [sr], [sc] = out["SEG"], out["SR"], out["SC"]
    return WrittenStudy(paths, seg, sr, sc, quantified, hypoxic)
