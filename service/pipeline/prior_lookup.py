"""The node's side of follow-up: find a study's subject, its earlier results and the RC in use.

Runs in the node process before a study is handed to a worker. It reads one PET header of the
study (PatientID, IssuerOfPatientID, tracer), looks the subject up in ``study_facts`` and
collects the paths the worker needs; the worker decides which candidate is the prior.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydicom import dcmread

from quant.errors import QuantificationError
from quant.suv.tracers import identify_tracer
from service.config.follow_up import FollowUpConfig
from service.pipeline.follow_up import FollowUpInput, PriorCandidate
from service.report.cohort import rc_in_use
from service.storage.index import Index

log = logging.getLogger("hypoxnode.follow_up")


def _subject(index: Index, study_uid: str) -> tuple[str, str, str] | None:
    """``(patient_id, issuer, tracer)`` from one PET instance of the study, or None."""
    for record in index.study_instances(study_uid):
        if record.modality != "PT":
            continue
        try:
            dataset = dcmread(record.path, stop_before_pixels=True)
            tracer = identify_tracer(dataset).name
        except (OSError, ValueError, QuantificationError) as exc:
            log.debug("study %s: PET header not usable for pairing: %s", study_uid, exc)
            continue
        patient_id = str(dataset.get("PatientID", "") or "").strip()
        if not patient_id:
            return None
        return patient_id, str(dataset.get("IssuerOfPatientID", "") or "").strip(), tracer
    return None


def follow_up_input(index: Index, study_uid: str, settings: FollowUpConfig,
                    origin: Callable[[str], str | None] | None = None
                    ) -> FollowUpInput | None:
    """What the worker needs to compare ``study_uid`` with an earlier study, or None.

    None when follow-up is disabled, the study has no usable PET header, or the index holds no
    other quantified study of the subject and tracer. ``origin``: says where a prior came from
    when the node fetched it (:meth:`service.routing.priors_from_pacs.PriorsFromPacs.origin`); the
    comparison's notes (and so the SR) carry it.
    """
    if not settings.enabled:
        return None
    subject = _subject(index, study_uid)
    if subject is None:
        return None
    patient_id, issuer, tracer = subject
    rows = index.subject_facts(patient_id, issuer, tracer)  # find_prior skips this series
    if not rows:
        return None
    candidates = []
    for row in rows:
        prior_uid = row.facts.study_instance_uid
        latest = index.latest_results(prior_uid)
        segs = [path for kind, _uid, path in latest if kind == "SEG"]
        paths = [r.path for r in index.study_instances(prior_uid)]
        candidates.append(PriorCandidate(row.result, paths, segs,
                                         origin(prior_uid) if origin else None))
    return FollowUpInput(candidates, rc_in_use(index.all_facts(tracer), tracer, settings))
