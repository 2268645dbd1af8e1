"""Parameters of the quantification, as plain values (the service maps its config onto them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class QuantSettings:
    """What the pipeline needs to know besides the images.

    Parameters
    ----------
    hypoxic_thresholds
        Tumour-to-muscle ratios; each defines a hypoxic sub-volume (SUV >= t x muscle SUVmean).
    suv_type
        SUV normalisation: ``"BW"`` (default), ``"LBMJAMES128"``, ``"LBMJANMA"``, ``"BSA"``,
        ``"IBW"``.
    lesion_tm_threshold
        Tumour-to-muscle ratio above which voxels are lesion candidates (automatic detection).
    lesion_min_volume_ml
        Connected candidate regions smaller than this are not reported.
    delineation_fraction_of_max
        Lesion delineation: isocontour at this fraction of the lesion's SUVmax (0.4 = 40%).
    muscle_hu_range
        CT window of skeletal muscle, HU.
    """

    hypoxic_thresholds: tuple[float, ...] = (1.5, 2.0)
    suv_type: str = "BW"
    lesion_tm_threshold: float = 1.5
    lesion_min_volume_ml: float = 1.0
    delineation_fraction_of_max: float = 0.4
    muscle_hu_range: tuple[float, float] = (-29.0, 150.0)
    extra: dict[str, object] = field(default_factory=dict)
