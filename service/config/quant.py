"""``[quant]``: the quantification part of the configuration (mapped onto QuantSettings).

Tracer-dependent values (hypoxic thresholds, the lesion threshold, the delineation method)
default to the identified tracer's profile (:data:`quant.suv.tracers.PROFILES`). A value set in
``[quant]`` overrides every profile; a value set in ``[quant.tracers."<tracer>"]`` overrides
both for that tracer only::

    [quant]
    hypoxic_thresholds = [1.5, 2.0]        # every tracer (optional)

    [quant.tracers."18F-FMISO"]
    hypoxic_thresholds = [1.2]
    delineation = "tm_threshold"
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from quant.settings import DELINEATION_METHODS, SEARCH_REGIONS, QuantSettings, TracerOverrides
from quant.suv.tracers import PROFILES

TRACER_NAMES = (*PROFILES, "unknown")


def _check_thresholds(value: list[float] | None) -> list[float] | None:
    if value is None:
        return None
    if not value or any(t <= 0 for t in value):
        raise ValueError("must be a non-empty list of positive tumour-to-muscle ratios")
    return sorted(value)


def _check_method(value: str | None) -> str | None:
    if value is not None and value not in DELINEATION_METHODS:
        raise ValueError(f"must be one of {list(DELINEATION_METHODS)}")
    return value


class TracerConfig(BaseModel):
    """``[quant.tracers."<tracer>"]``: overrides for one tracer profile."""

    model_config = ConfigDict(extra="forbid")

    hypoxic_thresholds: list[float] | None = None
    lesion_tm_threshold: float | None = Field(default=None, gt=0)
    delineation: str | None = None
    delineation_fraction_of_max: float | None = Field(default=None, gt=0, lt=1)

    _thresholds = field_validator("hypoxic_thresholds")(_check_thresholds)
    _method = field_validator("delineation")(_check_method)

    def to_overrides(self) -> TracerOverrides:
        """The plain-value overrides the quantification code takes."""
        return TracerOverrides(
            hypoxic_thresholds=(
                tuple(self.hypoxic_thresholds) if self.hypoxic_thresholds is not None else None
            ),
            lesion_tm_threshold=self.lesion_tm_threshold,
            delineation=self.delineation,
            delineation_fraction_of_max=self.delineation_fraction_of_max,
        )


class QuantConfig(BaseModel):
    """``[quant]``: quantification parameters (see README, "Figures" and "Segmentation")."""

    model_config = ConfigDict(extra="forbid")

    hypoxic_thresholds: list[float] | None = None
    suv_type: str = "BW"
    lesion_tm_threshold: float | None = Field(default=None, gt=0)
    lesion_min_volume_ml: float = Field(default=1.0, ge=0)
    lesion_noise_sds: float | None = Field(default=None, ge=0)
    delineation: str | None = None
    delineation_fraction_of_max: float = Field(default=0.4, gt=0, lt=1)
    muscle_hu_min: float = -29.0
    muscle_hu_max: float = 150.0
    tumour_roi_pattern: str | None = None
    search_z_range_mm: list[float] | None = None
    search_region: str | None = None
    tracers: dict[str, TracerConfig] = Field(default_factory=dict)
    workers: int = Field(default=1, ge=1, le=16)
    worker_max_studies: int = Field(default=10, ge=1)
    """A worker process is replaced after this many studies (bounds its memory)."""

    _thresholds = field_validator("hypoxic_thresholds")(_check_thresholds)
    _method = field_validator("delineation")(_check_method)

    @field_validator("suv_type")
    @classmethod
    def _suv_type(cls, value: str) -> str:
        allowed = {"BW", "LBMJAMES128", "LBMJANMA", "BSA", "IBW"}
        if value.upper() not in allowed:
            raise ValueError(f"must be one of {sorted(allowed)}")
        return value.upper()

    @field_validator("tumour_roi_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @field_validator("search_z_range_mm")
    @classmethod
    def _z_range(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or not value[0] < value[1]):
            raise ValueError("must be [zmin, zmax] in mm with zmin < zmax")
        return value

    @field_validator("search_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and value not in SEARCH_REGIONS:
            raise ValueError(f"must be one of {list(SEARCH_REGIONS)}")
        return value

    @field_validator("tracers")
    @classmethod
    def _tracer_names(cls, value: dict[str, TracerConfig]) -> dict[str, TracerConfig]:
        unknown = sorted(set(value) - set(TRACER_NAMES))
        if unknown:
            raise ValueError(f"unknown tracer {unknown[0]!r}: expected one of {list(TRACER_NAMES)}")
        return value

    @model_validator(mode="after")
    def _muscle_window(self) -> QuantConfig:
        if not self.muscle_hu_min < self.muscle_hu_max:
            raise ValueError("muscle_hu_min must be below muscle_hu_max")
        return self

    def to_settings(self) -> QuantSettings:
        """The plain-value settings the quantification code takes."""
        z_range = self.search_z_range_mm
        return QuantSettings(
            hypoxic_thresholds=(
                tuple(self.hypoxic_thresholds) if self.hypoxic_thresholds is not None else None
            ),
            suv_type=self.suv_type,
            lesion_tm_threshold=self.lesion_tm_threshold,
            lesion_min_volume_ml=self.lesion_min_volume_ml,
            lesion_noise_sds=self.lesion_noise_sds,
            delineation=self.delineation,
            delineation_fraction_of_max=self.delineation_fraction_of_max,
            muscle_hu_range=(self.muscle_hu_min, self.muscle_hu_max),
            tumour_roi_pattern=self.tumour_roi_pattern,
            search_z_range_mm=(z_range[0], z_range[1]) if z_range is not None else None,
            search_region=self.search_region,
            tracers={name: tracer.to_overrides() for name, tracer in self.tracers.items()},
        )
