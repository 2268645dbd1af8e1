"""Pairing of scans: subject identity (ID + issuer + tracer), kinds and windows, prior choice."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from quant.longitudinal.pairing import (
    PairKind,
    StudyFacts,
    cohort_pairs,
    find_prior,
    pair_kind,
    same_subject,
)

T0 = datetime(2024, 3, 5, 9, 0, 0)
HOUR = timedelta(hours=1)


def scan(
    study: str,
    *,
    scan_at: datetime | None,
    injected_at: datetime | None = None,
    patient: str = "P1",
    issuer: str = "HOSP",
    tracer: str = "64Cu-ATSM",
    series: str = "s1",
) -> StudyFacts:
    return StudyFacts(study, series, patient, issuer, tracer, scan_at,
                      injected_at if injected_at is not None else
                      (scan_at - HOUR if scan_at else None))


@pytest.mark.parametrize(
    ("prior", "current", "days", "expected"),
    [
        # one injection, scans at 1 h and 20 h (the delayed scan on the next calendar day)
        (scan("a", scan_at=T0 + HOUR, injected_at=T0),
         scan("b", scan_at=T0 + 20 * HOUR, injected_at=T0), 7, PairKind.EARLY_DELAYED),
        # injection times 59 s apart: still one injection
        (scan("a", scan_at=T0 + HOUR, injected_at=T0),
         scan("b", scan_at=T0 + 20 * HOUR, injected_at=T0 + timedelta(seconds=59)), 7,
         PairKind.EARLY_DELAYED),
        # 61 s apart: two injections a day apart -> test-retest
        (scan("a", scan_at=T0 + HOUR, injected_at=T0),
         scan("b", scan_at=T0 + 20 * HOUR, injected_at=T0 + timedelta(seconds=61)), 7,
         PairKind.TEST_RETEST),
        # two PET series of one study: early/delayed even without injection times
        (scan("a", scan_at=T0, injected_at=None, series="s1"),
         scan("a", scan_at=T0 + 19 * HOUR, injected_at=None, series="s2"), 7,
         PairKind.EARLY_DELAYED),
        # exactly 7 days: test-retest (window inclusive)
        (scan("a", scan_at=T0), scan("b", scan_at=T0 + timedelta(days=7)), 7,
         PairKind.TEST_RETEST),
        # 7 days and one second: follow-up
        (scan("a", scan_at=T0), scan("b", scan_at=T0 + timedelta(days=7, seconds=1)), 7,
         PairKind.FOLLOW_UP),
        # a configured 2-day window makes a 3-day pair a follow-up
        (scan("a", scan_at=T0), scan("b", scan_at=T0 + timedelta(days=3)), 2,
         PairKind.FOLLOW_UP),
        (scan("a", scan_at=T0), scan("b", scan_at=T0 + timedelta(days=60)), 7,
         PairKind.FOLLOW_UP),
    ],
)
def test_pair_kind(prior: StudyFacts, current: StudyFacts, days: float, expected: PairKind
                   ) -> None:
    assert pair_kind(prior, current, test_retest_days=days) == expected


def test_pair_kind_needs_scan_times() -> None:
    with pytest.raises(ValueError, match="scan time"):
        pair_kind(scan("a", scan_at=None), scan("b", scan_at=T0))
    with pytest.raises(ValueError, match="test_retest_days"):
        pair_kind(scan("a", scan_at=T0), scan("b", scan_at=T0), test_retest_days=-1)


@pytest.mark.parametrize(
    ("other", "expected"),
    [
        ({}, True),
        ({"issuer": "OTHERHOSP"}, False),  # same ID from another issuer: another person
        ({"issuer": ""}, False),  # an empty issuer matches only an empty issuer
        ({"patient": "P2"}, False),
        ({"tracer": "18F-FMISO"}, False),
        ({"patient": " P1 "}, True),  # padding is not identity
    ],
)
def test_same_subject(other: dict[str, str], expected: bool) -> None:
    a = scan("a", scan_at=T0)
    b = scan("b", scan_at=T0 + HOUR, **other)  # type: ignore[arg-type]
    assert same_subject(a, b) is expected


def test_no_pairing_without_patient_id() -> None:
    a = scan("a", scan_at=T0, patient="")
    b = scan("b", scan_at=T0 + HOUR, patient="")
    assert not same_subject(a, b)
    assert find_prior(b, [a]) is None


def test_find_prior_is_the_most_recent_earlier_scan_of_the_subject() -> None:
    current = scan("now", scan_at=T0 + timedelta(days=30))
    candidates = [
        scan("old", scan_at=T0),
        scan("recent", scan_at=T0 + timedelta(days=25)),
        scan("later", scan_at=T0 + timedelta(days=40)),  # after the current scan
        scan("other-issuer", scan_at=T0 + timedelta(days=29), issuer="ELSEWHERE"),
        scan("other-tracer", scan_at=T0 + timedelta(days=29), tracer="18F-FDG"),
        scan("no-time", scan_at=None),
        current,  # the current scan itself (a re-processing) is never its own prior
    ]
    pair = find_prior(current, candidates)
    assert pair is not None
    assert pair.prior.study_instance_uid == "recent"
    assert pair.kind == PairKind.TEST_RETEST
    assert pair.interval_days == pytest.approx(5.0)
    assert find_prior(scan("first", scan_at=T0 - HOUR), candidates) is None


def test_cohort_pairs_one_test_retest_pair_per_subject() -> None:
    scans = [
        # P1: baseline, retest 2 days later, follow-up 60 days later -> one pair (first two)
        scan("p1-a", scan_at=T0, patient="P1"),
        scan("p1-b", scan_at=T0 + timedelta(days=2), patient="P1"),
        scan("p1-c", scan_at=T0 + timedelta(days=62), patient="P1"),
        # P2: only a follow-up -> no pair
        scan("p2-a", scan_at=T0, patient="P2"),
        scan("p2-b", scan_at=T0 + timedelta(days=30), patient="P2"),
        # P3: early/delayed of one injection, then a retest 3 days later
        scan("p3-a", scan_at=T0 + HOUR, injected_at=T0, patient="P3"),
        scan("p3-b", scan_at=T0 + 20 * HOUR, injected_at=T0, patient="P3"),
        scan("p3-c", scan_at=T0 + timedelta(days=3, hours=1), patient="P3"),
    ]
    pairs = cohort_pairs(scans)
    assert [(p.prior.study_instance_uid, p.current.study_instance_uid) for p in pairs] == [
        ("p1-a", "p1-b"),
        ("p3-b", "p3-c"),
    ]
    early = cohort_pairs(scans, PairKind.EARLY_DELAYED)
    assert [(p.prior.study_instance_uid, p.current.study_instance_uid) for p in early] == [
        ("p3-a", "p3-b")
    ]


def test_facts_from_result_json_round_trip() -> None:
    document = {
        "study_instance_uid": "1.2",
        "pet_series_instance_uid": "1.2.3",
        "patient_id": "P9",
        "issuer_of_patient_id": "HOSP",
        "tracer": "64Cu-ATSM",
        "scan_datetime": "2024-03-06T05:00:00",
        "injection_datetime": "2024-03-05T09:00:00",
    }
    facts = StudyFacts.from_result_json(document)
    assert facts.scan_time == datetime(2024, 3, 6, 5)
    assert facts.injection_time == T0
    assert facts.subject == ("P9", "HOSP", "64Cu-ATSM")
    assert StudyFacts.from_result_json({"tracer": "x"}).scan_time is None
