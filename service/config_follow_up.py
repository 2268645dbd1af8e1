"""``[follow_up]``: pairing of scans and the repeatability coefficients changes are judged by.

::

    [follow_up]
    enabled = true                 # compare each study with the subject's previous one
    test_retest_days = 7           # a pair this close (separate injections) is test-retest
    match_tolerance_mm = 20        # largest lesion centroid distance of a match
    min_site_pairs = 10            # this many test-retest pairs: use the site's own RC
    register_different_frames = true  # rigid CT registration when frames of reference differ

    [follow_up.reference_relative_rc]   # fractions; used until the site has its own
    suv_max = 0.32

The default reference RCs are derived, not measured here: DOMAIN.md section 4 gives an FDG
multicentre within-subject CV of about 10-15%; with proportional error the relative RC is
``exp(2.77 sqrt(ln(1 + wCV^2))) - 1`` = 32% at wCV 10% (the lower end, the strictest the
literature supports; 48% at 15%). No quantitative Cu-ATSM test-retest figure exists, so the
same FDG-derived value stands in for every SUV figure and T/M until the site's own pairs replace
it. Hypoxic volume and fraction have no reference value (changes are not judged until the site
has its own pairs, or one is configured). Fetching priors from PACS (C-FIND/C-MOVE) is not
implemented: only studies the node has processed are paired.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quant.comparison import ALL_FIGURES, DEFAULT_TOLERANCE_MM, RcInUse
from quant.pairing import DEFAULT_TEST_RETEST_DAYS
from quant.repeatability import RC_FACTOR

REFERENCE_WCV = 0.10
"""FDG multicentre wCV, lower end of 10-15% (DOMAIN.md section 4)."""
FDG_DERIVED_RC = round(math.expm1(RC_FACTOR * math.sqrt(math.log1p(REFERENCE_WCV**2))), 2)
"""``exp(2.77 sqrt(ln(1 + 0.10^2))) - 1`` = 0.32."""
DEFAULT_REFERENCE_SOURCE = (
    "reference value derived from the FDG multicentre wCV of 10% (literature range 10-15%,"
    " DOMAIN.md section 4): relative RC = exp(2.77 sqrt(ln(1 + wCV^2))) - 1; no Cu-ATSM"
    " test-retest data exist"
)


def _default_rc() -> dict[str, float]:
    return {
        "suv_max": FDG_DERIVED_RC,
        "suv_peak": FDG_DERIVED_RC,
        "suv_mean": FDG_DERIVED_RC,
        "muscle_suv_mean": FDG_DERIVED_RC,
        "tm_max": FDG_DERIVED_RC,
    }


class FollowUpConfig(BaseModel):
    """``[follow_up]``: see the module docstring."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    test_retest_days: float = Field(default=DEFAULT_TEST_RETEST_DAYS, ge=0)
    match_tolerance_mm: float = Field(default=DEFAULT_TOLERANCE_MM, gt=0)
    min_site_pairs: int = Field(default=10, ge=2)
    register_different_frames: bool = True
    reference_relative_rc: dict[str, float] = Field(default_factory=_default_rc)
    reference_source: str = DEFAULT_REFERENCE_SOURCE

    @field_validator("reference_relative_rc")
    @classmethod
    def _check_rc(cls, value: dict[str, float]) -> dict[str, float]:
        for figure, rc in value.items():
            if figure not in ALL_FIGURES:
                raise ValueError(f"unknown figure {figure!r}; known: {list(ALL_FIGURES)}")
            if not 0 < rc < 10:
                raise ValueError(f"{figure}: a relative RC is a fraction > 0 (0.25 is 25%)")
        return value

    def reference_rc(self) -> dict[str, RcInUse]:
        """The configured reference RC per figure, with its source."""
        return {
            figure: RcInUse(rc, f"{self.reference_source} (relative RC {rc:.0%})")
            for figure, rc in self.reference_relative_rc.items()
        }
