"""``[quant]``: the quantification part of the configuration (mapped onto QuantSettings)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quant.settings import QuantSettings


class QuantConfig(BaseModel):
    """``[quant]``: quantification parameters (see README, "Figures")."""

    model_config = ConfigDict(extra="forbid")

    hypoxic_thresholds: list[float] = Field(default_factory=lambda: [1.5, 2.0])
    suv_type: str = "BW"
    lesion_tm_threshold: float = Field(default=1.5, gt=0)
    lesion_min_volume_ml: float = Field(default=1.0, ge=0)
    delineation_fraction_of_max: float = Field(default=0.4, gt=0, lt=1)
    muscle_hu_min: float = -29.0
    muscle_hu_max: float = 150.0
    workers: int = Field(default=1, ge=1, le=16)

    @field_validator("hypoxic_thresholds")
    @classmethod
    def _thresholds(cls, value: list[float]) -> list[float]:
        if not value or any(t <= 0 for t in value):
            raise ValueError("must be a non-empty list of positive tumour-to-muscle ratios")
        return sorted(value)

    @field_validator("suv_type")
    @classmethod
    def _suv_type(cls, value: str) -> str:
        allowed = {"BW", "LBMJAMES128", "LBMJANMA", "BSA", "IBW"}
        if value.upper() not in allowed:
            raise ValueError(f"must be one of {sorted(allowed)}")
        return value.upper()

    def to_settings(self) -> QuantSettings:
        """The plain-value settings the quantification code takes."""
        return QuantSettings(
            hypoxic_thresholds=tuple(self.hypoxic_thresholds),
            suv_type=self.suv_type,
            lesion_tm_threshold=self.lesion_tm_threshold,
            lesion_min_volume_ml=self.lesion_min_volume_ml,
            delineation_fraction_of_max=self.delineation_fraction_of_max,
            muscle_hu_range=(self.muscle_hu_min, self.muscle_hu_max),
        )
