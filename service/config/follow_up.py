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
has its own pairs, or one is configured).

``[follow_up.pacs]`` (off by default) also looks for priors in a PACS when a processed study has
none at the node (see :mod:`service.routing.priors_from_pacs`)::

    [follow_up.pacs]
    enabled = true
    ae_title = "PACS"              # the PACS queried (C-FIND) and asked to move (C-MOVE)
    host = "10.0.0.5"
    port = 104
    max_priors = 1                 # most recent earlier studies fetched per study
    max_age_days = 730             # StudyDate window before the current scan
    max_instances = 2000           # a prior with more PET+CT instances is not fetched
    max_mb = 2048                  # a prior received larger than this is dropped
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

from quant.longitudinal.comparison import ALL_FIGURES, DEFAULT_TOLERANCE_MM, RcInUse
from quant.longitudinal.pairing import DEFAULT_TEST_RETEST_DAYS
from quant.stats.repeatability import RC_FACTOR

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


class PacsPriorsConfig(BaseModel):
    """``[follow_up.pacs]``: priors from a PACS (C-FIND, then C-MOVE to this node)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    ae_title: str = Field(default="PACS", min_length=1, max_length=16)
    host: str = "127.0.0.1"
    port: int = Field(default=104, ge=1, le=65535)
    move_destination: str | None = Field(default=None, max_length=16)
    """AE title the PACS moves the prior to (it must know it); None: ``[node] ae_title``."""
    max_priors: int = Field(default=1, ge=1, le=10)
    max_age_days: float = Field(default=730.0, gt=0)
    max_instances: int = Field(default=2000, ge=1)
    max_mb: float = Field(default=2048.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    """Network, association and DIMSE timeout of the queries (a move may take longer)."""
    retry_initial_seconds: float = Field(default=30.0, gt=0)
    retry_max_seconds: float = Field(default=600.0, gt=0)
    give_up_after_seconds: float = Field(default=86400.0, gt=0)
    """A PACS unreachable this long after the study was done: no comparison, said so."""
    check_interval_seconds: float = Field(default=5.0, gt=0)


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
    pacs: PacsPriorsConfig = Field(default_factory=PacsPriorsConfig)

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
