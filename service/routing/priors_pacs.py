"""Query/retrieve against a PACS: the earlier studies of a patient, their series, C-MOVE.

Study Root Query/Retrieve (PS3.4 C.6.2). One association per call; every failure is a
:class:`PacsError` whose message says what to check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
)

from service.config.follow_up import PacsPriorsConfig

log = logging.getLogger("hypoxnode.priors")

PENDING_STATUSES = (0xFF00, 0xFF01)
IMAGE_MODALITIES = ("PT", "CT")
"""The series of a prior that are retrieved: its PET and the CT it is read with."""


class PacsError(Exception):
    """The PACS could not be queried or did not move what was asked."""


@dataclass(frozen=True)
class PriorStudy:
    """One earlier study the PACS holds."""

    study_instance_uid: str
    study_date: str
    study_time: str
    issuer_of_patient_id: str


@dataclass(frozen=True)
class PriorSeries:
    """One PET or CT series of a prior study."""

    series_instance_uid: str
    modality: str
    instances: int | None


class Pacs:
    """The configured PACS, seen from this node (calling AE title ``node_ae_title``)."""

    def __init__(self, settings: PacsPriorsConfig, node_ae_title: str) -> None:
        self.settings = settings
        self.node_ae_title = node_ae_title

    @property
    def where(self) -> str:
        """``AE@host:port`` of the PACS."""
        s = self.settings
        return f"{s.ae_title}@{s.host}:{s.port}"

    @contextmanager
    def _association(self, context: str) -> Iterator[Association]:
        ae = AE(ae_title=self.node_ae_title)
        for timeout in ("network_timeout", "acse_timeout", "dimse_timeout"):
            setattr(ae, timeout, self.settings.timeout_s)
        ae.add_requested_context(context)
        assoc = ae.associate(self.settings.host, self.settings.port,
                             ae_title=self.settings.ae_title)
        if not assoc.is_established:
            raise PacsError(f"PACS {self.where} unreachable (connection refused, rejected or"
                            " timed out)")
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _find(self, query: Dataset) -> list[Dataset]:
        found = []
        with self._association(StudyRootQueryRetrieveInformationModelFind) as assoc:
            for status, identifier in assoc.send_c_find(
                    query, StudyRootQueryRetrieveInformationModelFind):
                code = int(status.Status) if status and "Status" in status else None
                if code is None:
                    raise PacsError(f"no C-FIND response from {self.where}")
                if code in PENDING_STATUSES and identifier is not None:
                    found.append(identifier)
                elif code != 0:
                    raise PacsError(f"C-FIND refused by {self.where}: status 0x{code:04X}")
        return found

    def earlier_studies(self, patient_id: str, issuer: str, scan_time: datetime,
                        held: Callable[[str], bool]) -> list[PriorStudy]:
        """PET studies of the patient within ``max_age_days`` before ``scan_time``, newest
        first, at most ``max_priors``; studies ``held`` says the node holds and those of
        another issuer are left out."""
        start = scan_time - timedelta(days=self.settings.max_age_days)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = patient_id
        query.IssuerOfPatientID = ""
        query.ModalitiesInStudy = "PT"
        query.StudyDate = f"{start:%Y%m%d}-{scan_time:%Y%m%d}"
        query.StudyTime = ""
        query.StudyInstanceUID = ""
        studies = []
        for answer in self._find(query):
            uid = str(answer.get("StudyInstanceUID", "") or "")
            their_issuer = str(answer.get("IssuerOfPatientID", "") or "").strip()
            if not uid or held(uid) or (issuer and their_issuer and their_issuer != issuer):
                continue
            if str(answer.get("PatientID", patient_id) or "") != patient_id:
                continue  # a PACS that matched loosely
            studies.append(PriorStudy(uid, str(answer.get("StudyDate", "") or ""),
                                      str(answer.get("StudyTime", "") or ""), their_issuer))
        studies.sort(key=lambda s: (s.study_date, s.study_time), reverse=True)
        return studies[: self.settings.max_priors]

    def image_series(self, study_uid: str) -> list[PriorSeries]:
        """The PET and CT series of a study, with their instance counts when the PACS says."""
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = ""
        query.Modality = ""
        query.NumberOfSeriesRelatedInstances = ""
        out = []
        for answer in self._find(query):
            modality = str(answer.get("Modality", "") or "")
            if modality not in IMAGE_MODALITIES:
                continue
            count = answer.get("NumberOfSeriesRelatedInstances")
            out.append(PriorSeries(str(answer.SeriesInstanceUID), modality,
                                   int(count) if count not in (None, "") else None))
        return out

    def move_series(self, study_uid: str, series_uid: str, destination: str) -> int:
        """C-MOVE one series to ``destination``; returns the instances moved.

        Raises
        ------
        PacsError
            The move failed, or some of its sub-operations did.
        """
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID = study_uid
        query.SeriesInstanceUID = series_uid
        final: Dataset | None = None
        with self._association(StudyRootQueryRetrieveInformationModelMove) as assoc:
            for status, _identifier in assoc.send_c_move(
                    query, destination, StudyRootQueryRetrieveInformationModelMove):
                final = status
        code = int(final.Status) if final is not None and "Status" in final else None
        if code is None:
            raise PacsError(f"no C-MOVE response from {self.where}")
        failed = int(final.get("NumberOfFailedSuboperations", 0) or 0) if final else 0
        if code != 0 or failed:
            hint = f" (does the PACS know AE title {destination}?)" if code == 0xA801 else ""
            raise PacsError(f"C-MOVE from {self.where} to {destination}: status 0x{code:04X},"
                            f" {failed} sub-operation(s) failed{hint}")
        return int(final.get("NumberOfCompletedSuboperations", 0) or 0) if final else 0
