"""Parameters of the quantification, as plain values (the service maps its config onto them).

Where a value comes from, most specific first:

1. a per-tracer override (``QuantSettings.tracers["18F-FMISO"]``, from
   ``[quant.tracers."18F-FMISO"]`` in the configuration);
2. the global value (``QuantSettings.hypoxic_thresholds`` etc., from ``[quant]``), when set;
3. the identified tracer's profile (:data:`quant.suv.tracers.PROFILES`).

:meth:`QuantSettings.for_tracer` applies that rule once per study and returns settings with
every value filled in; :meth:`QuantSettings.sources` says which of the three each came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from quant.suv.tracers import TracerProfile, unknown_profile

DELINEATION_METHODS = ("percent_of_max", "tm_threshold")
"""``percent_of_max``: isocontour at ``delineation_fraction_of_max`` x the lesion's SUVmax.
``tm_threshold``: voxels at or above the lowest hypoxic threshold x muscle SUVmean."""

T = TypeVar("T")

SEARCH_REGIONS = ("head_neck", "thorax", "abdomen_pelvis")
"""Body regions the automatic search can be restricted to (see
:mod:`quant.segmentation.search_region`)."""


def _check_method(value: str | None, name: str) -> None:
    if value is not None and value not in DELINEATION_METHODS:
        raise ValueError(f"{name} must be one of {', '.join(DELINEATION_METHODS)}, got {value!r}")


def _check_fraction(value: float | None, name: str) -> None:
    if value is not None and not 0 < value < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")


@dataclass(frozen=True)
class TracerOverrides:
    """Values that replace the profile's (and the global) ones for one tracer.

    Parameters
    ----------
    hypoxic_thresholds
        Tumour-to-muscle ratios of the hypoxic sub-volumes.
    lesion_tm_threshold
        Tumour-to-muscle ratio above which voxels are lesion candidates.
    delineation
        One of :data:`DELINEATION_METHODS`.
    delineation_fraction_of_max
        Fraction of SUVmax of the ``percent_of_max`` isocontour.
    """

    hypoxic_thresholds: tuple[float, ...] | None = None
    lesion_tm_threshold: float | None = None
    delineation: str | None = None
    delineation_fraction_of_max: float | None = None

    def __post_init__(self) -> None:
        _check_method(self.delineation, "delineation")
        _check_fraction(self.delineation_fraction_of_max, "delineation_fraction_of_max")


@dataclass(frozen=True)
class QuantSettings:
    """What the pipeline needs to know besides the images.

    ``None`` means "from the tracer profile" (see the module docstring).

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
    delineation
        Lesion delineation method, one of :data:`DELINEATION_METHODS`.
    delineation_fraction_of_max
        ``percent_of_max`` delineation: isocontour at this fraction of the lesion's SUVmax.
    muscle_hu_range
        CT window of skeletal muscle, HU.
    tumour_roi_pattern
        Regular expression (Python ``re``, searched) that a supplied RTSTRUCT ROI name or SEG
        segment label must match to be taken as the tumour; None: the pipeline's default.
    search_z_range_mm
        (zmin, zmax) in patient z (mm, DICOM LPS: towards the head): automatic detection only
        looks at voxels whose centre lies in this range. None: the whole field of view.
    search_region
        One of :data:`SEARCH_REGIONS`: automatic detection only looks inside that body region,
        found from the lungs on CT. None: the whole field of view.
    excluded_organs
        Physiological uptake excluded from detection (names of
        :data:`quant.segmentation.physiology.ORGANS`); None: the tracer profile's list.
    lesion_noise_sds
        Noise floor ``k``: a candidate's SUVmax must exceed muscle SUVmean + k x muscle SD;
        None: the tracer profile's value (:attr:`quant.suv.tracers.TracerProfile.lesion_noise_sds`).
    tracers
        Per-tracer overrides, by profile name (``"64Cu-ATSM"``, ``"18F-FMISO"``, ...,
        ``"unknown"``).
    """

    hypoxic_thresholds: tuple[float, ...] | None = None
    suv_type: str = "BW"
    lesion_tm_threshold: float | None = None
    lesion_min_volume_ml: float = 1.0
    delineation: str | None = None
    delineation_fraction_of_max: float = 0.4
    muscle_hu_range: tuple[float, float] = (-29.0, 150.0)
    tumour_roi_pattern: str | None = None
    search_z_range_mm: tuple[float, float] | None = None
    search_region: str | None = None
    excluded_organs: tuple[str, ...] | None = None
    lesion_noise_sds: float | None = None
    tracers: Mapping[str, TracerOverrides] = field(default_factory=dict)
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hypoxic_thresholds is not None and (
            not self.hypoxic_thresholds or any(t <= 0 for t in self.hypoxic_thresholds)
        ):
            raise ValueError("hypoxic_thresholds must be positive tumour-to-muscle ratios")
        _check_method(self.delineation, "delineation")
        _check_fraction(self.delineation_fraction_of_max, "delineation_fraction_of_max")
        if self.search_z_range_mm is not None:
            low, high = self.search_z_range_mm
            if not low < high:
                raise ValueError("search_z_range_mm must be (zmin, zmax) with zmin < zmax")
        if self.search_region is not None and self.search_region not in SEARCH_REGIONS:
            raise ValueError(
                f"search_region must be one of {', '.join(SEARCH_REGIONS)}, "
                f"got {self.search_region!r}"
            )

    def for_tracer(self, profile: TracerProfile | None) -> QuantSettings:
        """Settings with every value filled in for one tracer (``None``: the unknown profile).

        The result has no per-tracer overrides left, so calling it again changes nothing.
        """
        profile = profile or unknown_profile(None)
        over = self.tracers.get(profile.name, TracerOverrides())
        thresholds = (
            over.hypoxic_thresholds or self.hypoxic_thresholds or profile.hypoxic_thresholds
        )
        return replace(
            self,
            hypoxic_thresholds=tuple(sorted(thresholds)),
            lesion_tm_threshold=_first(
                over.lesion_tm_threshold, self.lesion_tm_threshold, profile.lesion_tm_threshold
            ),
            delineation=_first(over.delineation, self.delineation, profile.delineation),
            excluded_organs=_first(self.excluded_organs, profile.excluded_organs),
            lesion_noise_sds=_first(self.lesion_noise_sds, profile.lesion_noise_sds),
            delineation_fraction_of_max=_first(
                over.delineation_fraction_of_max, self.delineation_fraction_of_max
            ),
            tracers={},
        )

    def sources(self, profile: TracerProfile | None) -> dict[str, str]:
        """Where each tracer-dependent value comes from: ``"tracer override"``, ``"config"``
        or ``"profile <name>"`` (for the provenance recorded with the result)."""
        profile = profile or unknown_profile(None)
        over = self.tracers.get(profile.name, TracerOverrides())
        out = {}
        for name in ("hypoxic_thresholds", "lesion_tm_threshold", "delineation"):
            if getattr(over, name) is not None:
                out[name] = f'[quant.tracers."{profile.name}"]'
            elif getattr(self, name) is not None:
                out[name] = "[quant]"
            else:
                out[name] = f"profile {profile.name}"
        return out

    @property
    def lowest_hypoxic_threshold(self) -> float:
        """The smallest hypoxic threshold (``tm_threshold`` delineation).

        Raises
        ------
        ValueError
            The settings are not resolved (call :meth:`for_tracer` first).
        """
        if not self.hypoxic_thresholds:
            raise ValueError("hypoxic_thresholds unset: resolve the settings with for_tracer()")
        return min(self.hypoxic_thresholds)


def _first(*values: T | None) -> T:
    for value in values:
        if value is not None:
            return value
    raise ValueError("no value set")  # unreachable: the last value is always set
