"""Which earlier scan a scan is compared with, and what kind of pair the two make.

Pure logic over plain facts (no index, no files). Two scans are of one subject when the
PatientID and the IssuerOfPatientID are both equal (an empty issuer matches only an empty
issuer: the same PatientID from two issuers is two people) and the tracer profile is the same.

Kinds of pair, decided in this order:

``early_delayed``
    The same injection: injection datetimes equal within :data:`SAME_INJECTION_S` (60 s), or
    two PET series of one study. Two uptake times of one administration, e.g. 64Cu-ATSM at 1 h
    and at 16-24 h; the change says how the tracer redistributes, not how the tumour changed.
``test_retest``
    Separate injections within ``test_retest_days`` (default 7): repeat scans from which the
    site's own repeatability is computed. Therapy between the scans is not recorded in DICOM
    headers, so a site that treats within the window should lower it.
``follow_up``
    Anything longer.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

SAME_INJECTION_S = 60.0
"""Injection datetimes closer than this are one injection."""
DEFAULT_TEST_RETEST_DAYS = 7.0


class PairKind(StrEnum):
    """What two scans of one subject and tracer are to each other."""

    EARLY_DELAYED = "early_delayed"
    TEST_RETEST = "test_retest"
    FOLLOW_UP = "follow_up"


PAIR_KIND_TEXT = {
    PairKind.EARLY_DELAYED: "early and delayed scans of one injection",
    PairKind.TEST_RETEST: "test-retest pair",
    PairKind.FOLLOW_UP: "follow-up",
}


@dataclass(frozen=True)
class StudyFacts:
    """What pairing needs to know of one quantified PET series."""

    study_instance_uid: str
    pet_series_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str
    tracer: str
    scan_time: datetime | None
    injection_time: datetime | None

    @property
    def subject(self) -> tuple[str, str, str]:
        """``(patient_id, issuer, tracer)``: scans with equal subjects can be paired."""
        return (self.patient_id.strip(), self.issuer_of_patient_id.strip(), self.tracer)

    @classmethod
    def from_result_json(cls, result: dict[str, Any]) -> StudyFacts:
        """The facts of a :meth:`quant.results.StudyResult.to_json` document."""
        return cls(
            study_instance_uid=str(result.get("study_instance_uid", "")),
            pet_series_instance_uid=str(result.get("pet_series_instance_uid", "")),
            patient_id=str(result.get("patient_id") or ""),
            issuer_of_patient_id=str(result.get("issuer_of_patient_id") or ""),
            tracer=str(result.get("tracer", "")),
            scan_time=_datetime(result.get("scan_datetime")),
            injection_time=_datetime(result.get("injection_datetime")),
        )


def _datetime(value: object) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


@dataclass(frozen=True)
class Pair:
    """An earlier and a later scan of one subject and tracer."""

    prior: StudyFacts
    current: StudyFacts
    kind: PairKind

    @property
    def interval_s(self) -> float:
        """Scan start to scan start, seconds."""
        assert self.prior.scan_time is not None and self.current.scan_time is not None
        return (self.current.scan_time - self.prior.scan_time).total_seconds()

    @property
    def interval_days(self) -> float:
        """Scan start to scan start, days."""
        return self.interval_s / 86400.0


def same_subject(a: StudyFacts, b: StudyFacts) -> bool:
    """Same PatientID (non-empty), same issuer, same tracer profile."""
    return bool(a.patient_id.strip()) and a.subject == b.subject


def same_scan(a: StudyFacts, b: StudyFacts) -> bool:
    """The same PET series (a re-processing, never a pair)."""
    return (a.study_instance_uid, a.pet_series_instance_uid) == (
        b.study_instance_uid,
        b.pet_series_instance_uid,
    )


def pair_kind(
    prior: StudyFacts, current: StudyFacts, *, test_retest_days: float = DEFAULT_TEST_RETEST_DAYS
) -> PairKind:
    """The kind of pair two scans of one subject make (see the module docstring).

    Parameters
    ----------
    prior, current
        The earlier and the later scan; both need a scan time.
    test_retest_days
        Longest interval (scan start to scan start) of a test-retest pair.

    Raises
    ------
    ValueError
        If a scan time is missing or ``test_retest_days`` is negative.
    """
    if test_retest_days < 0:
        raise ValueError(f"test_retest_days must be >= 0, got {test_retest_days}")
    if prior.scan_time is None or current.scan_time is None:
        raise ValueError("prior/current: a scan time is needed to pair scans")
    if prior.study_instance_uid == current.study_instance_uid:
        return PairKind.EARLY_DELAYED  # two PET series of one study
    if prior.injection_time is not None and current.injection_time is not None:
        gap = abs((current.injection_time - prior.injection_time).total_seconds())
        if gap <= SAME_INJECTION_S:
            return PairKind.EARLY_DELAYED
    interval = abs((current.scan_time - prior.scan_time).total_seconds())
    if interval <= test_retest_days * 86400.0:
        return PairKind.TEST_RETEST
    return PairKind.FOLLOW_UP


def find_prior(
    current: StudyFacts,
    candidates: Iterable[StudyFacts],
    *,
    test_retest_days: float = DEFAULT_TEST_RETEST_DAYS,
) -> Pair | None:
    """The most recent earlier scan of the same subject and tracer, as a pair.

    Parameters
    ----------
    current
        The scan being reported.
    candidates
        Scans known to the node (may include ``current`` itself, other subjects, scans
        without a time: all ignored).
    test_retest_days
        See :func:`pair_kind`.

    Returns
    -------
    Pair or None
        None when there is no earlier scan of the subject (or ``current`` has no scan time).
    """
    if current.scan_time is None:
        return None
    earlier = [
        c
        for c in candidates
        if same_subject(c, current)
        and not same_scan(c, current)
        and c.scan_time is not None
        and c.scan_time < current.scan_time
    ]
    if not earlier:
        return None
    prior = max(earlier, key=lambda c: c.scan_time or datetime.min)
    return Pair(prior, current, pair_kind(prior, current, test_retest_days=test_retest_days))


def cohort_pairs(
    scans: Sequence[StudyFacts],
    kind: PairKind = PairKind.TEST_RETEST,
    *,
    test_retest_days: float = DEFAULT_TEST_RETEST_DAYS,
) -> list[Pair]:
    """One pair of ``kind`` per subject: the first two consecutive scans that make one.

    One pair per subject keeps the subjects independent, as the repeatability ANOVA assumes.

    Parameters
    ----------
    scans
        Every scan known (any subjects and tracers, any order).
    kind
        The kind of pair wanted.
    test_retest_days
        See :func:`pair_kind`.

    Returns
    -------
    list of Pair
        Ordered by subject.
    """
    by_subject: dict[tuple[str, str, str], list[StudyFacts]] = defaultdict(list)
    for scan in scans:
        if scan.patient_id.strip() and scan.scan_time is not None:
            by_subject[scan.subject].append(scan)
    pairs = []
    for subject in sorted(by_subject):
        ordered = sorted(by_subject[subject], key=lambda s: s.scan_time or datetime.min)
        for prior, current in zip(ordered, ordered[1:], strict=False):
            if same_scan(prior, current) or prior.scan_time == current.scan_time:
                continue
            if pair_kind(prior, current, test_retest_days=test_retest_days) == kind:
                pairs.append(Pair(prior, current, kind))
                break
    return pairs
