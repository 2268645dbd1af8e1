"""Priors from PACS: a processed study with no prior at the node gets one from the PACS.

Off by default (``[follow_up.pacs] enabled``). When a study is done and its result holds no
comparison, a request is recorded (``priors.sqlite``) and a scheduler job, never the study's
own processing, works through it:

1. C-FIND (STUDY level) at the PACS: PatientID (and IssuerOfPatientID when the study has one),
   ModalitiesInStudy PT, StudyDate within ``max_age_days`` before the scan; studies the node
   already holds are left out (the node's own follow-up saw them); the ``max_priors`` most
   recent are kept.
2. C-FIND (SERIES level): their PET and CT series; a prior with more than ``max_instances``
   instances is not fetched.
3. C-MOVE of those series to the node itself. They arrive as any study does; routing
   recognises them (rule ``prior from PACS``): processed with the requesting study's profile,
   their results kept at the node and sent nowhere, no PACS look-up of their own. A prior whose
   received instances exceed ``max_mb`` is purged without being processed.
4. When every fetched prior is done, the requesting study is processed again: the node's
   follow-up now finds the prior, and the new SR (which supersedes the first) carries the
   comparison.

A PACS that is down or slow delays only this: the study's first SR goes out without the
comparison; the request stays pending (retried on the ``retry_*`` schedule, with the last
reason on the status page) until ``give_up_after_seconds``. Reading a prior's earlier hypoxnode
SR instead of re-quantifying it is not implemented: the prior is always quantified here.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from quant.longitudinal.pairing import StudyFacts
from service.config import Config
from service.export.sender import next_delay_s
from service.routing.priors_pacs import Pacs, PacsError
from service.routing.router import Router
from service.routing.rules import Decision
from service.storage import sqlite_db
from service.storage.index import Index
from service.storage.retention import purge_study
from service.storage.study_state import StudyState

log = logging.getLogger("hypoxnode.priors")

PRIOR_RULE = "prior from PACS"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    study_instance_uid   TEXT PRIMARY KEY,
    patient_id           TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    scan_time            TEXT NOT NULL,
    state                TEXT NOT NULL,
    detail               TEXT NOT NULL DEFAULT '',
    priors               TEXT NOT NULL DEFAULT '[]',
    attempts             INTEGER NOT NULL DEFAULT 0,
    next_attempt_at      REAL NOT NULL,
    generation           INTEGER NOT NULL DEFAULT 0,
    created_at           REAL NOT NULL,
    updated_at           REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS fetched (
    prior_study_instance_uid TEXT PRIMARY KEY,
    for_study_instance_uid   TEXT NOT NULL
);
"""

PENDING = "pending"
"""Waiting for the PACS (first query, or a retry after a failure)."""
WAITING = "waiting for prior"
"""Moved to the node; waiting until the prior is quantified."""
REPROCESSING = "reprocessing"
"""The requesting study is being processed again with the prior."""
COMPARED = "compared"
NONE = "no prior in PACS"
GAVE_UP = "not compared"
ACTIVE = (PENDING, WAITING, REPROCESSING)


class PriorsFromPacs:
    """Requests of priors from the PACS, worked through by :meth:`run_once`.

    Parameters
    ----------
    config
        ``[follow_up.pacs]`` and the node's AE title.
    index
        The node's index.
    router
        Routing: fetched priors are recognised through one of its overrides.
    reprocess
        Processes a done study again (``Node.reprocess``); False while it is busy.
    clock
        Time source, replaceable in tests.
    """

    def __init__(self, config: Config, index: Index, router: Router,
                 reprocess: Callable[[str], bool], clock: Callable[[], float] = time.time
                 ) -> None:
        self.config = config
        self.settings = config.follow_up.pacs
        self.index = index
        self.router = router
        self.reprocess = reprocess
        self.clock = clock
        self.pacs = Pacs(self.settings, config.node.ae_title)
        path = config.data_dir / "priors.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite_db.connect(path)
        self._db.executescript(_SCHEMA)
        router.overrides.append(self._route_prior)
        router.no_results_rules.add(PRIOR_RULE)

    @property
    def enabled(self) -> bool:
        """Whether priors are looked up at all."""
        return bool(self.settings.enabled and self.config.follow_up.enabled)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_db.transaction(self._db, self._lock)

    def _row(self, study_uid: str) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._db.execute(
                "SELECT * FROM requests WHERE study_instance_uid = ?", (study_uid,)).fetchone()
        return row

    def _update(self, study_uid: str, **values: Any) -> None:
        values["updated_at"] = self.clock()
        sets = ", ".join(f"{key} = ?" for key in values)
        with self._transaction() as db:
            db.execute(f"UPDATE requests SET {sets} WHERE study_instance_uid = ?",
                       (*values.values(), study_uid))

    def requesting_study(self, prior_uid: str) -> str | None:
        """The study a fetched prior was retrieved for, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT for_study_instance_uid FROM fetched WHERE prior_study_instance_uid = ?",
                (prior_uid,)).fetchone()
        return str(row[0]) if row else None

    def origin(self, prior_uid: str) -> str | None:
        """``"prior study ... retrieved from PACS ..."`` for a fetched prior, else None."""
        if self.requesting_study(prior_uid) is None:
            return None
        return f"prior study {prior_uid} retrieved from PACS {self.settings.ae_title} by this node"

    def _route_prior(self, study_uid: str) -> Decision | None:
        """Routing override: a prior fetched from the PACS is processed with the requesting
        study's profile and sends no results."""
        requester = self.requesting_study(study_uid)
        if requester is None:
            return None
        decision = self.router.db.decision(requester)
        return Decision(PRIOR_RULE, "process", decision.profile if decision else None, (),
                        f"retrieved from PACS {self.pacs.where} as the prior of study"
                        f" {requester}: quantified here, results not sent")

    # -- requests --------------------------------------------------------------------------

    def study_done(self, study_uid: str, result: dict[str, Any] | None) -> None:
        """A study was processed: request its prior from the PACS when it has none here."""
        if not self.enabled or result is None or result.get("comparison"):
            return
        if self.requesting_study(study_uid) is not None or self._row(study_uid) is not None:
            return  # a prior fetched for another study, or already requested
        if not self.router.config_for(study_uid).follow_up.enabled:
            return  # its routing profile compares nothing
        facts = StudyFacts.from_result_json(result)
        if not facts.patient_id or facts.scan_time is None:
            log.info("study %s: no PatientID or scan time: no PACS look-up", study_uid)
            return
        now = self.clock()
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO requests (study_instance_uid, patient_id,"
                " issuer_of_patient_id, scan_time, state, next_attempt_at, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (study_uid, facts.patient_id, facts.issuer_of_patient_id,
                 facts.scan_time.isoformat(), PENDING, now, now, now))
        log.info("study %s: looking for a prior in PACS %s", study_uid, self.pacs.where)

    def run_once(self) -> None:
        """Scheduler job: advance every active request by one step."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM requests WHERE state IN (?, ?, ?) ORDER BY created_at",
                ACTIVE).fetchall()
        for row in rows:
            try:
                if row["state"] == PENDING and row["next_attempt_at"] <= self.clock():
                    self._query_and_move(row)
                elif row["state"] == WAITING:
                    self._check_priors(row)
                elif row["state"] == REPROCESSING:
                    self._check_comparison(row)
            except Exception as exc:  # one request's fault must not stop the others
                log.exception("priors of study %s: unexpected failure", row["study_instance_uid"])
                self._retry(row, f"internal error: {exc!r}")

    def _retry(self, row: sqlite3.Row, reason: str) -> None:
        now = self.clock()
        s = self.settings
        if now - row["created_at"] >= s.give_up_after_seconds:
            self._update(row["study_instance_uid"], state=GAVE_UP,
                         detail=f"gave up after {s.give_up_after_seconds:.0f} s: {reason}")
            log.error("study %s: no prior from PACS: %s", row["study_instance_uid"], reason)
            return
        delay = next_delay_s(row["attempts"] + 1, s.retry_initial_seconds, s.retry_max_seconds)
        self._update(row["study_instance_uid"], state=PENDING, attempts=row["attempts"] + 1,
                     next_attempt_at=now + delay,
                     detail=f"comparison pending: {reason}; next try in {delay:.0f} s")
        log.warning("study %s: prior look-up failed (attempt %d): %s", row["study_instance_uid"],
                    row["attempts"] + 1, reason)

    def _query_and_move(self, row: sqlite3.Row) -> None:
        study_uid = row["study_instance_uid"]
        def held(uid: str) -> bool:
            return uid == study_uid or self.index.study(uid) is not None

        try:
            studies = self.pacs.earlier_studies(
                row["patient_id"], row["issuer_of_patient_id"],
                datetime.fromisoformat(row["scan_time"]), held)
        except PacsError as exc:
            self._retry(row, str(exc))
            return
        if not studies:
            self._update(study_uid, state=NONE, detail=f"PACS {self.pacs.where} holds no"
                         f" earlier PET study of the patient within"
                         f" {self.settings.max_age_days:g} days")
            return
        moved, notes = [], []
        destination = self.settings.move_destination or self.config.node.ae_title
        for prior in studies:
            try:
                series = self.pacs.image_series(prior.study_instance_uid)
                if not any(s.modality == "PT" for s in series):
                    notes.append(f"{prior.study_instance_uid}: no PET series")
                    continue
                total = sum(s.instances or 0 for s in series)
                if total > self.settings.max_instances:
                    notes.append(f"{prior.study_instance_uid}: {total} instances, more than"
                                 f" max_instances {self.settings.max_instances}")
                    continue
                with self._transaction() as db:
                    db.execute("INSERT OR REPLACE INTO fetched VALUES (?, ?)",
                               (prior.study_instance_uid, study_uid))
                for one in series:
                    self.pacs.move_series(prior.study_instance_uid, one.series_instance_uid,
                                          destination)
            except PacsError as exc:
                self._retry(row, str(exc))
                return
            moved.append(prior.study_instance_uid)
        if not moved:
            self._update(study_uid, state=GAVE_UP, detail="; ".join(notes))
            return
        generation = (self.index.study(study_uid) or {}).get("generation", 0)
        self._update(study_uid, state=WAITING, priors=json.dumps(moved), generation=generation,
                     detail=f"retrieved {len(moved)} prior(s) from {self.pacs.where};"
                     " comparison pending until quantified" + "".join(f"; {n}" for n in notes))
        log.info("study %s: %d prior(s) retrieved from PACS", study_uid, len(moved))

    def _check_priors(self, row: sqlite3.Row) -> None:
        study_uid = row["study_instance_uid"]
        priors = json.loads(row["priors"])
        states = {}
        for prior in priors:
            info = self.index.study(prior)
            states[prior] = info["state"] if info else "missing"
            size = sum(r.size_bytes for r in self.index.study_instances(prior))
            if size > self.settings.max_mb * 1024 * 1024 and self.index.set_study_state(
                    prior, StudyState.DONE, expected=StudyState.RECEIVING):
                purge_study(self.index, self.router.store, prior)  # before it is processed
                states[prior] = (f"dropped: {size / 2**20:.3g} MB received, more than max_mb"
                                 f" {self.settings.max_mb:g}")
        if any(s in (StudyState.RECEIVING.value, StudyState.QUEUED.value,
                     StudyState.PROCESSING.value) for s in states.values()):
            return
        if not any(s == StudyState.DONE.value for s in states.values()):
            self._update(study_uid, state=GAVE_UP, detail="prior(s) not quantified: " + "; ".join(
                f"{uid}: {self._reason(uid, s)}" for uid, s in states.items()))
            return
        if self.reprocess(study_uid):
            self._update(study_uid, state=REPROCESSING,
                         detail="prior(s) quantified; processing the study again to compare")

    def _reason(self, prior_uid: str, state: str) -> str:
        info = self.index.study(prior_uid)
        return f"{state} ({info['error']})" if info and info.get("error") else state

    def _check_comparison(self, row: sqlite3.Row) -> None:
        study_uid = row["study_instance_uid"]
        info = self.index.study(study_uid)
        if info is None:
            self._update(study_uid, state=GAVE_UP, detail="the study is no longer held")
            return
        if info["generation"] <= row["generation"] or info["state"] not in (
                StudyState.DONE.value, StudyState.FAILED.value):
            return
        comparison = (info.get("result") or {}).get("comparison")
        if comparison:
            self._update(study_uid, state=COMPARED,
                         detail=f"compared with prior {comparison['prior_study_instance_uid']}"
                         f" from {self.pacs.where} (generation {info['generation']} SR)")
        else:
            self._update(study_uid, state=GAVE_UP,
                         detail="prior(s) retrieved and quantified, but none pairs with this"
                         " study (another tracer, or not earlier)")

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest requests, newest first (no patient identifiers)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT study_instance_uid, state, detail, priors, attempts, next_attempt_at,"
                " updated_at FROM requests ORDER BY created_at DESC LIMIT ?",
                (limit,)).fetchall()
        out = []
        for row in rows:
            entry = dict(row)
            entry["priors"] = json.loads(entry["priors"])
            out.append(entry)
        return out
