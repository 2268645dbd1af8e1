"""The running node: listener, scheduler, worker processes and sender wired together.

Start-up order: reconcile the index with the disk and requeue interrupted studies, start the
worker pool and the scheduler, then open the DICOM port. Shut-down: close the port, let
in-flight associations finish, stop the scheduler and the workers.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from pynetdicom.transport import ThreadedAssociationServer

from service.config import Config
from service.export.sender import Sender
from service.pipeline.cluster_jobs import ClusterJobs, NodeStoppingError
from service.pipeline.prior_lookup import follow_up_input
from service.pipeline.processing import ProcessingOutcome
from service.pipeline.worker_pool import WorkerPool
from service.receive.listener import start_listener
from service.receive.receivers import ReceiverPool
from service.report.http_api import HttpServer
from service.report.metrics import Metrics
from service.routing.priors_from_pacs import PriorsFromPacs
from service.routing.router import Router
from service.runtime.audit import audit, open_audit_file
from service.storage.index import IndexUnavailableError
from service.storage.index_open import open_index
from service.storage.reconcile import reconcile
from service.storage.retention import purge_delivered
from service.storage.store import InstanceStore
from service.storage.study_state import StudyState

log = logging.getLogger("hypoxnode.node")


RECORD_GRACE_S = 30.0
"""How long a cluster job waits for a study that left the worker pool to be recorded before
handing the job back."""


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
        self.store = InstanceStore(config.data_dir, min_free_bytes=config.node.min_free_bytes,
                                   tmp_name=config.cluster.tmp_name)
        try:
            self.index = open_index(config)
        except IndexUnavailableError as exc:
            log.critical("cannot start: %s", exc)  # one line, no traceback
            raise SystemExit(1) from None
        self.sender = Sender(config, self.index, self.metrics)
        self.router = Router(config, self.index, self.store)
        self.priors = PriorsFromPacs(config, self.index, self.router, self.reprocess)
        self.scheduler = BackgroundScheduler(daemon=True)
        self.workers = WorkerPool(config.quant.workers, config.quant.worker_max_studies,
                                  self._process_again)
        self._server: ThreadedAssociationServer | None = None
        self._receivers = ReceiverPool(config, self.metrics)
        self._http: HttpServer | None = None
        self._audit_handler: logging.Handler | None = None
        self._finished = threading.Condition()
        self._stopping = False
        self.jobs = ClusterJobs(
            config.cluster.database_url, config.cluster.node_name, self._process_job,
            lambda: self.sender.run_once(wait=True), concurrency=config.quant.workers,
            stalled_after_s=config.cluster.stalled_after_s,
        ) if config.cluster.enabled else None

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
        self.workers.start()
        if self.jobs is not None:
            self.jobs.start()
        self.scheduler.add_job(
            self.check_studies, "interval", seconds=self.config.study.check_interval_seconds,
            id="check-studies", max_instances=1, coalesce=True,
        )
        if self.jobs is not None:
            self.scheduler.add_job(self.jobs.heartbeat, "interval", seconds=5,
                                   id="cluster-heartbeat", max_instances=1, coalesce=True)
        if self.jobs is None:  # in a cluster, delivery is a job (service.pipeline.cluster_jobs)
            self.scheduler.add_job(
                self.sender.run_once, "interval",
                seconds=self.config.export.check_interval_seconds,
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
        self._stopping = True
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
        if self.jobs is not None:
            self.jobs.stop()
        if self._http is not None:
            self._http.stop()
            self._http = None
        self.workers.stop()
        self.index.close()
        self.router.close()
        self.priors.close()
        log.info("stopped")
        if self._audit_handler is not None:
            audit.removeHandler(self._audit_handler)
            self._audit_handler.close()
            self._audit_handler = None

    def _reconcile(self) -> None:
        """Make the index and the disk agree after any stop (:mod:`service.storage.reconcile`)."""
        reconcile(self.store, self.index, requeue=self.jobs is None)

    # -- jobs --------------------------------------------------------------------------------

    def check_studies(self) -> None:
        """Scheduler job: queue studies quiet for ``stable_seconds`` and collect finished ones.

        A study is complete when no instance of it arrived for ``study.stable_seconds``; it is
        then queued once (compare-and-set on its state), routed, and processed.
        """
        self._collect_finished()
        quiet_before = time.time() - self.config.study.stable_seconds
        for study_uid in self.index.due_studies(quiet_before):
            if not self.workers.may_start(study_uid):
                continue
            if self.index.set_study_state(
                study_uid, StudyState.QUEUED, expected=StudyState.RECEIVING
            ) and not self.router.take(study_uid):  # routing: ignored or forwarded only
                self._queue(study_uid)

    def _wake(self, job_id: str) -> None:
        """Run a scheduler job now instead of at its next interval."""
        # Not scheduled (stopping): the interval run will do.
        with contextlib.suppress(JobLookupError, RuntimeError):
            self.scheduler.modify_job(job_id, next_run_time=datetime.now(UTC))

    def _queue(self, study_uid: str) -> None:
        """Process a study just moved to queued: here, or as a job any node of the cluster
        takes."""
        if self.jobs is None:
            self._submit(study_uid)
            return
        try:
            self.jobs.queue_processing(study_uid)
        except Exception as exc:  # the queue unreachable: due again at a later check
            self.index.set_study_state(study_uid, StudyState.RECEIVING,
                                       expected=StudyState.QUEUED)
            log.error("study %s: could not queue its processing job (%s); trying again",
                      study_uid, exc)

    def _process_job(self, study_uid: str, taken_over: bool) -> None:
        """A cluster's ``process_study`` job: the study in this node's worker pool, returning
        once it is recorded. ``taken_over``: the job of a node that went silent, whose study is
        still processing: this node takes it over at the same generation."""
        generation = self.index.start_processing(study_uid)
        if generation is None and taken_over:
            study = self.index.study(study_uid)
            if study is not None and study["state"] == StudyState.PROCESSING.value:
                generation = int(study["generation"])
                log.warning("study %s: taking over generation %d from a silent node",
                            study_uid, generation)
        if generation is None:
            return  # moved on meanwhile (new instances, another job)
        self._submit(study_uid, generation)
        left_pool_at: float | None = None
        while True:  # until the study is recorded (done or failed) or moved on
            study = self.index.study(study_uid)
            if study is None or study["state"] != StudyState.PROCESSING.value \
                    or int(study["generation"]) != generation:
                return
            if self._stopping:
                raise NodeStoppingError(f"node stopping while processing study {study_uid}")
            if study_uid not in self.workers.in_flight():  # being recorded, or lost
                left_pool_at = left_pool_at or time.monotonic()
                if time.monotonic() - left_pool_at > RECORD_GRACE_S:
                    raise NodeStoppingError(f"study {study_uid} left the worker pool unrecorded")
            with self._finished:
                self._finished.wait(0.5)

    def _submit(self, study_uid: str, generation: int | None = None) -> None:
        if generation is None:
            generation = self.index.start_processing(study_uid)
        if generation is None or not self.workers.running:
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
        self.workers.submit(study_uid, arguments, generation, self._collect_finished)

    def _collect_finished(self) -> None:
        for finished in self.workers.collect():
            self._record(finished.outcome, finished.generation)
        with self._finished:
            self._finished.notify_all()

    def _process_again(self, study_uid: str) -> None:
        """A study whose worker died goes back to receiving, to be processed again."""
        if self.index.set_study_state(
            study_uid, StudyState.RECEIVING, expected=StudyState.PROCESSING
        ):
            log.warning("study %s: worker process died; processing it again", study_uid)

    def _record(self, outcome: ProcessingOutcome, generation: int) -> None:
        """Record a finished job under the generation it ran for (not the study's current one,
        which new instances may already have moved on)."""
        study_uid = outcome.study_instance_uid
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
            # deliver now rather than at the next sender tick
            if self.jobs is not None:
                self.jobs.wake_delivery()
            else:
                self._wake("send-results")
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
                self._queue(study_uid)
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
        if self.jobs is not None:
            jobs = self.jobs.overview()["jobs"]
            assert isinstance(jobs, dict)
            for key, count in jobs.items():
                queue, status = key.split("/", 1)
                self.metrics.cluster_jobs.labels(queue=queue, status=status).set(count)

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
            "in_flight": self.workers.in_flight(),
            "cluster": self.jobs.overview() if self.jobs is not None else None,
            "routing": self.router.recent(),
            "priors_from_pacs": self.priors.recent(),
            "quarantined": self.store.quarantined(),
        }
