"""The running node: listener, scheduler, worker processes and sender wired together.

Start-up order: reconcile the index with the disk and requeue interrupted studies, start the
worker pool and the scheduler, then open the DICOM port. Shut-down: close the port, let
in-flight associations finish, stop the scheduler and the workers.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sqlite3
import threading
import time
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from pydicom import dcmread
from pynetdicom.transport import ThreadedAssociationServer

from service.audit import audit, open_audit_file
from service.config import Config
from service.http_api import HttpServer
from service.index import Index, IndexUnavailableError, InstanceRecord
from service.lifeline import die_with_parent
from service.listener import start_listener
from service.metrics import Metrics
from service.prior_lookup import follow_up_input
from service.priors_from_pacs import PriorsFromPacs
from service.processing import ProcessingOutcome, process_study, warm_up
from service.receivers import ReceiverPool
from service.retention import purge_delivered
from service.routing_node import Router
from service.sender import Sender
from service.store import InstanceConflictError, InstanceStore
from service.study_state import StudyState

log = logging.getLogger("hypoxnode.node")

MAX_WORKER_CRASHES = 1


@dataclass(frozen=True)
class _Job:
    """One study handed to the worker pool."""

    future: Future[ProcessingOutcome]
    pool: ProcessPoolExecutor
    generation: int
"""A study whose worker process died is processed again this many times before it fails."""


class Node:
    """One hypoxnode instance.

    Parameters
    ----------
    config
        The validated configuration.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics()
        self.store = InstanceStore(config.data_dir, min_free_bytes=config.node.min_free_bytes)
        try:
            self.index = Index(config.data_dir / "index.sqlite")
        except IndexUnavailableError as exc:
            log.critical("cannot start: %s", exc)  # one line, no traceback
            raise SystemExit(1) from None
        self.sender = Sender(config, self.index, self.metrics)
        self.router = Router(config, self.index, self.store)
        self.priors = PriorsFromPacs(config, self.index, self.router, self.reprocess)
        self.scheduler = BackgroundScheduler(daemon=True)
        self._executor: ProcessPoolExecutor | None = None
        self._server: ThreadedAssociationServer | None = None
        self._receivers = ReceiverPool(config, self.metrics)
        self._http: HttpServer | None = None
        self._in_flight: dict[str, _Job] = {}
        self._studies_in_pool = 0
        self._lock = threading.Lock()
        self._audit_handler: logging.Handler | None = None
        self._crashes: dict[str, int] = {}
        self._suspects: set[str] = set()
        self._shared_pools: set[int] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        """The bound DICOM port (useful when configured as 0)."""
        if self._receivers.active:
            return self._receivers.port
        if self._server is None:
            raise RuntimeError("node not started")
        return int(self._server.server_address[1])

    @property
    def listening(self) -> bool:
        """Whether the DICOM port is open."""
        return self._server is not None or self._receivers.active

    @property
    def http_port(self) -> int | None:
        """The bound HTTP port, when the HTTP interface runs."""
        return self._http.port if self._http is not None else None

    def start(self) -> None:
        """Reconcile, then start workers, scheduler, HTTP interface and listener."""
        if self.config.log.audit_file is not None and self._audit_handler is None:
            self._audit_handler = open_audit_file(self.config.log.audit_file)
        try:
            self._reconcile()
        except sqlite3.DatabaseError as exc:  # corrupt pages, read-only file, disk gone
            raise IndexUnavailableError(
                f"the index {self.index.path} cannot be read or written: {exc}") from exc
        self._executor = self._new_executor()
        self.scheduler.add_job(
            self.check_studies, "interval", seconds=self.config.study.check_interval_seconds,
            id="check-studies", max_instances=1, coalesce=True,
        )
        self.scheduler.add_job(
            self.sender.run_once, "interval", seconds=self.config.export.check_interval_seconds,
            kwargs={"wait": False}, id="send-results", max_instances=1, coalesce=True,
        )
        self.scheduler.add_job(
            self.router.run_once, "interval", seconds=self.config.routing.check_interval_seconds,
            id="routing", max_instances=1, coalesce=True,
        )
        if self.priors.enabled:
            self.scheduler.add_job(
                self.priors.run_once, "interval",
                seconds=self.config.follow_up.pacs.check_interval_seconds,
                id="priors-from-pacs", max_instances=1, coalesce=True,
            )
        retention = self.config.retention
        if retention.delivered_after_days is not None:
            self.scheduler.add_job(
                self.purge_delivered, "interval", seconds=retention.check_interval_seconds,
                id="retention", max_instances=1, coalesce=True,
            )
        self.scheduler.start()
        if self.config.http.enabled:
            self._http = HttpServer(self)
            self._http.start()
            log.info("status page on http://%s:%d/", self.config.http.host, self._http.port)
        if self._receivers.size > 0:
            self._receivers.start()
        else:
            self._server = start_listener(self.config, self.store, self.index, self.metrics)
        log.info(
            "listening as %s on %s:%d (%s), data in %s, %d destination(s)",
            self.config.node.ae_title, self.config.node.host, self.port,
            f"{self._receivers.size} receiving processes" if self._receivers.active
            else "receiving in this process", self.config.data_dir,
            len(self.config.destinations),
        )

    def stop(self, grace_s: float = 30.0) -> None:
        """Stop receiving, let in-flight associations finish, stop jobs and workers."""
        self._receivers.stop(grace_s)
        if self._server is not None:
            server, self._server = self._server, None
            active = server.active_associations
            server.shutdown()
            deadline = time.monotonic() + grace_s
            for assoc in active:
                assoc.join(max(0.0, deadline - time.monotonic()))
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        if self._http is not None:
            self._http.stop()
            self._http = None
        self._stopping = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.index.close()
        self.router.close()
        self.priors.close()
        log.info("stopped")
        if self._audit_handler is not None:
            audit.removeHandler(self._audit_handler)
            self._audit_handler.close()
            self._audit_handler = None

    def _reconcile(self) -> None:
        """Make the index and the disk agree after any stop, clean or not.

        - ``tmp/`` holds writes that never completed: removed (never acknowledged).
        - An index row whose file is gone: dropped (the study is re-checked when due).
        - A file with no index row: the node stopped between the rename and the index commit,
          or a power cut lost the row (instance rows are written ``synchronous=NORMAL``).
          It is indexed again; a study already done whose processed count covers it stays
          done (:meth:`Index.recover_instance`), so a lost row never sends results out again.
        - A file that does not read as the instance its path names, or whose SOPInstanceUID
          is indexed elsewhere, is never deleted (it may have been acknowledged): it is moved
          to ``quarantine/`` with its reason, audited, and listed on the status page.
        - Studies left queued or processing go back to receiving and are processed again.
        """
        removed = self.store.clear_tmp()
        if removed:
            log.warning("removed %d partial file(s) left by an interrupted write", removed)
        indexed = self.index.all_instance_paths()
        missing = [uid for uid, path in indexed.items() if not Path(path).is_file()]
        if missing:
            log.error("%d indexed instance(s) missing on disk; dropped from the index",
                      len(missing))
            self.index.forget_instances(missing)
        known = set(indexed.values())
        recovered = due = quarantined = 0
        for path in self.store.instance_files():
            if str(path) in known:
                continue
            record, why = self._record_for_orphan(path)
            if record is not None:
                try:
                    due += self.index.recover_instance(record)
                    recovered += 1
                    continue
                except InstanceConflictError as exc:
                    why = str(exc)
            moved = self.store.quarantine(path, why)
            quarantined += 1
            audit.warning("instance file %s quarantined as %s: %s", path.name, moved, why)
        if recovered or quarantined:
            log.warning(
                "%d instance file(s) on disk were not in the index: %d indexed again (%d of"
                " them make their study due), %d quarantined in %s", recovered + quarantined,
                recovered, due, quarantined, self.store.quarantine_dir,
            )
        requeued = self.index.requeue_interrupted()
        if requeued:
            log.warning("requeued %d study(ies) interrupted by the last stop", len(requeued))

    def _record_for_orphan(self, path: Path) -> tuple[InstanceRecord | None, str]:
        """The index row of an unindexed instance file, or None and why it is not a sound
        one (no patient data in the reason)."""
        try:
            dataset = dcmread(path, stop_before_pixels=True)
            uids = (str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID),
                    str(dataset.SOPInstanceUID))
            if self.store.instance_path(*uids) != path:
                return None, "its UIDs do not name the path it is stored under"
            return InstanceRecord(
                sop_instance_uid=uids[2],
                sop_class_uid=str(dataset.file_meta.MediaStorageSOPClassUID),
                study_instance_uid=uids[0],
                series_instance_uid=uids[1],
                modality=str(dataset.get("Modality", "")),
                path=str(path),
                size_bytes=path.stat().st_size,
                calling_ae_title="",
                received_at=time.time(),
            ), ""
        except Exception as exc:  # any unreadable or inconsistent file: not indexed
            return None, f"unreadable as a DICOM instance ({type(exc).__name__})"

    # -- jobs --------------------------------------------------------------------------------

    def check_studies(self) -> None:
        """Scheduler job: queue studies quiet for ``stable_seconds`` and collect finished ones."""
        self._collect_finished()
        quiet_before = time.time() - self.config.study.stable_seconds
        for study_uid in self.index.due_studies(quiet_before):
            with self._lock:
                if study_uid in self._in_flight:
                    continue  # new instances arrived while processing: queue after it finishes
                # A study that was in a pool when a worker died runs alone, so that a second
                # crash identifies the culprit instead of failing everything queued with it.
                busy = bool(self._in_flight)
                suspect_running = any(uid in self._suspects for uid in self._in_flight)
            if suspect_running or (study_uid in self._suspects and busy):
                continue
            if self.index.set_study_state(
                study_uid, StudyState.QUEUED, expected=StudyState.RECEIVING
            ) and not self.router.take(study_uid):  # routing: ignored or forwarded only
                self._submit(study_uid)

    def _new_executor(self) -> ProcessPoolExecutor:
        """Worker pool of spawned processes, warmed up at once so that the first study does not
        pay for the imports. (Not ``max_tasks_per_child``: on Python 3.11 it deadlocks when
        several tasks are queued; :meth:`_recycle_pool` bounds the workers' memory instead.)"""
        executor = ProcessPoolExecutor(
            max_workers=self.config.quant.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        executor.submit(warm_up)
        self._studies_in_pool = 0
        return executor

    def _recycle_pool(self) -> None:
        """Replace the worker pool, when idle, after ``worker_max_studies`` studies."""
        with self._lock:
            if (
                self._executor is None
                or self._in_flight
                or self._studies_in_pool < self.config.quant.worker_max_studies
            ):
                return
            old, self._executor = self._executor, self._new_executor()
        old.shutdown(wait=False)
        log.info("worker pool recycled after %d studies",
                 self.config.quant.worker_max_studies)

    def _wake(self, job_id: str) -> None:
        """Run a scheduler job now instead of at its next interval."""
        # Not scheduled (stopping): the interval run will do.
        with contextlib.suppress(JobLookupError, RuntimeError):
            self.scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))

    def _submit(self, study_uid: str) -> None:
        generation = self.index.start_processing(study_uid)
        if generation is None or self._executor is None:
            return
        paths = [record.path for record in self.index.study_instances(study_uid)]
        log.info("processing study %s (%d instances, generation %d)",
                 study_uid, len(paths), generation)
        previous_sr = [(uid, path) for kind, uid, path
                       in self.index.previous_results(study_uid, generation) if kind == "SR"]
        previous_report_path = (
            previous_sr[0][1] if previous_sr and Path(previous_sr[0][1]).is_file() else None
        )
        if previous_sr:
            log.info("study %s generation %d will supersede SR %s",
                     study_uid, generation, previous_sr[0][0])
        config = self.router.config_for(study_uid)  # the routing profile applied
        try:
            follow_up = follow_up_input(self.index, study_uid, config.follow_up,
                                        self.priors.origin)
        except Exception:  # pairing is an extra: a fault in it must not stop the study
            log.exception("study %s: looking up earlier studies failed", study_uid)
            follow_up = None
        if follow_up is not None:
            log.info("study %s: %d earlier study(ies) of the subject known",
                     study_uid, len(follow_up.candidates))
        arguments = (config, study_uid, paths, generation, previous_report_path, follow_up)
        with self._lock:  # the pool may be recycled or replaced concurrently
            try:
                future = self._executor.submit(process_study, *arguments)
            except BrokenProcessPool:  # a worker died since the last collection: fresh pool
                broken, self._executor = self._executor, self._new_executor()
                broken.shutdown(wait=False, cancel_futures=True)
                log.error("a worker process died; started a new worker pool")
                future = self._executor.submit(process_study, *arguments)
            self._in_flight[study_uid] = _Job(future, self._executor, generation)
        future.add_done_callback(lambda _f: self._collect_finished())
        if study_uid in self._suspects:
            log.warning("study %s runs alone: it was in the pool when a worker died", study_uid)

    def _replace_executor(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken:
                return  # already replaced
            self._executor = self._new_executor()
        broken.shutdown(wait=False, cancel_futures=True)
        log.error("a worker process died; started a new worker pool")

    def _collect_finished(self) -> None:
        with self._lock:
            finished = [(uid, job) for uid, job in self._in_flight.items() if job.future.done()]
            for uid, _ in finished:
                del self._in_flight[uid]
            # A pool that broke while holding several studies: none of them can be blamed.
            # Its futures may be collected in separate calls, so remember the pool.
            for _, job in finished:
                sharing = sum(1 for _, other in finished if other.pool is job.pool) + sum(
                    1 for other in self._in_flight.values() if other.pool is job.pool)
                if sharing > 1:
                    self._shared_pools.add(id(job.pool))
        for study_uid, job in finished:
            try:
                outcome = job.future.result()
            except CancelledError:
                # Cancelled by a stop: the study stays "processing" and is requeued at start-up.
                continue
            except BrokenProcessPool as exc:
                # A worker died (OOM killer, a crash in native code). Alone in the pool, the
                # study is the culprit and gets a strike; with others, nobody can tell, so each
                # is retried alone (see check_studies) and only a crash while alone counts.
                self._replace_executor(job.pool)
                alone = id(job.pool) not in self._shared_pools
                if self._retry_after_crash(study_uid, strike=alone):
                    continue
                outcome = ProcessingOutcome(
                    study_uid, ok=False,
                    error=f"the worker process died twice while processing this study ({exc})",
                )
            except Exception as exc:
                outcome = ProcessingOutcome(
                    study_uid, ok=False, error=f"worker process failed: {exc!r}"
                )
            self._record(outcome, job.generation)
            with self._lock:
                self._studies_in_pool += 1
        if finished and not self._stopping:
            self._recycle_pool()

    def _retry_after_crash(self, study_uid: str, strike: bool) -> bool:
        with self._lock:
            crashes = self._crashes.get(study_uid, 0) + (1 if strike else 0)
            self._crashes[study_uid] = crashes
            self._suspects.add(study_uid)
        if crashes > MAX_WORKER_CRASHES:
            return False
        if self.index.set_study_state(
            study_uid, StudyState.RECEIVING, expected=StudyState.PROCESSING
        ):
            log.warning("study %s: worker process died; processing it again", study_uid)
        return True

    def _record(self, outcome: ProcessingOutcome, generation: int) -> None:
        """Record a finished job under the generation it ran for (not the study's current one,
        which new instances may already have moved on)."""
        study_uid = outcome.study_instance_uid
        with self._lock:
            self._crashes.pop(study_uid, None)
            self._suspects.discard(study_uid)
        if outcome.timings_s:
            self.metrics.processing_seconds.observe(sum(outcome.timings_s.values()))
        if outcome.ok:
            self.metrics.studies_processed.inc()
            self.index.record_results(
                study_uid, outcome.outputs, self.router.result_destinations(study_uid), generation
            )
            self.index.set_study_state(
                study_uid, StudyState.DONE, expected=StudyState.PROCESSING, result=outcome.result,
                processed_count=len(self.index.study_instances(study_uid)),
            )
            if outcome.result is not None:
                self.index.record_study_facts(outcome.result)
            self.priors.study_done(study_uid, outcome.result)  # none here: ask the PACS
            self._wake("send-results")  # deliver now rather than at the next sender tick
            log.info(
                "study %s done: %d lesion(s), %d result object(s) queued for %d destination(s)"
                " (%s)",
                study_uid, len((outcome.result or {}).get("lesions", [])), len(outcome.outputs),
                len(self.config.destinations),
                ", ".join(f"{k} {v:.2f}" for k, v in outcome.timings_s.items()),
            )
        else:
            self.metrics.studies_failed.inc()
            self.index.set_study_state(
                study_uid, StudyState.FAILED, expected=StudyState.PROCESSING, error=outcome.error
            )
            log.error("study %s not quantified: %s", study_uid, outcome.error)

    def purge_delivered(self) -> list[str]:
        """Scheduler job: purge studies delivered more than ``retention`` days ago."""
        days = self.config.retention.delivered_after_days
        if days is None:
            return []
        purged = purge_delivered(self.index, self.store, days)
        if purged:
            log.info("retention: purged %d delivered study(ies)", len(purged))
        return purged

    # -- operator actions (HTTP API and CLI) ------------------------------------------------

    def reprocess(self, study_uid: str) -> bool:
        """Quantify a done or failed study again now; False while it is busy."""
        for state in (StudyState.DONE, StudyState.FAILED):
            if self.index.set_study_state(study_uid, StudyState.QUEUED, expected=state):
                self._submit(study_uid)
                return True
        return False

    def send(self, study_uid: str, destination: str | None = None) -> int:
        """(Re)queue a study's latest results for one destination (all when None)."""
        keys = [d.key for d in self.config.destinations]
        if destination is not None:
            if destination not in keys:
                raise KeyError(f"no destination {destination!r}; configured: {keys}")
            keys = [destination]
        return self.index.queue_exports(study_uid, keys)

    def refresh_gauges(self) -> None:
        """Update the gauges /metrics reports from the index."""
        counts = self.index.count_studies()
        self.metrics.queue_length.set(
            counts.get(StudyState.QUEUED.value, 0) + counts.get(StudyState.PROCESSING.value, 0)
        )
        self.metrics.exports_pending.set(self.index.export_counts().get("pending", 0))

    def _in_flight_uids(self) -> list[str]:
        with self._lock:
            return sorted(self._in_flight)

    def status(self) -> dict[str, object]:
        """Node-level status for the API and the home page."""
        return {
            "ae_title": self.config.node.ae_title,
            "port": self.port if self.listening else None,
            "listening": self.listening,
            "receiver_processes": {
                "configured": max(1, self._receivers.size),
                "running": self._receivers.ready_count if self._receivers.active
                else int(self._server is not None),
                "restarts": self._receivers.restarts,
                "pids": self._receivers.pids,
                "connections": self._receivers.loads(),
            },
            "studies": self.index.count_studies(),
            "exports": self.index.export_counts(),
            "destinations": [d.key for d in self.config.destinations],
            "in_flight": self._in_flight_uids(),
            "routing": self.router.recent(),
            "priors_from_pacs": self.priors.recent(),
            "quarantined": self.store.quarantined(),
        }
