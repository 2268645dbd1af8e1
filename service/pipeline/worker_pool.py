"""The worker processes that quantify studies, and what happens when one of them dies.

Studies run in spawned processes (:func:`service.pipeline.processing.process_study`), never in the
node process: a crash in native code or the OOM killer takes a worker, not the node. A pool
that breaks is replaced at once. A study alone in a broken pool is the culprit and gets a
strike; studies that shared a broken pool cannot be blamed and are retried one at a time
(they become *suspects*), so that a second crash identifies the culprit instead of failing
everything queued with it. A study whose worker died more than :data:`MAX_WORKER_CRASHES`
times fails with that reason. The pool is recycled after ``worker_max_studies`` studies to
bound the workers' memory.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from service.pipeline.processing import ProcessingOutcome, process_study, warm_up
from service.runtime.lifeline import die_with_parent

log = logging.getLogger("hypoxnode.node")

MAX_WORKER_CRASHES = 1
"""A study whose worker process died is processed again this many times before it fails."""


@dataclass(frozen=True)
class _Job:
    """One study handed to the worker pool."""

    future: Future[ProcessingOutcome]
    pool: ProcessPoolExecutor
    generation: int


@dataclass(frozen=True)
class Finished:
    """A job the pool is done with."""

    outcome: ProcessingOutcome
    generation: int
    """The generation it ran for (new instances may have moved the study on since)."""


class WorkerPool:
    """Worker processes, the studies in flight in them, and their crash accounting.

    Parameters
    ----------
    workers
        ``quant.workers``: processes in the pool.
    max_studies
        ``quant.worker_max_studies``: the pool is replaced, when idle, after this many.
    retry
        Called with a study whose worker died and which is to be processed again (the node
        puts it back to *receiving*).
    """

    def __init__(self, workers: int, max_studies: int, retry: Callable[[str], None]) -> None:
        self.workers = workers
        self.max_studies = max_studies
        self._retry = retry
        self._executor: ProcessPoolExecutor | None = None
        self._in_flight: dict[str, _Job] = {}
        self._studies_in_pool = 0
        self._lock = threading.Lock()
        self._crashes: dict[str, int] = {}
        self._suspects: set[str] = set()
        self._shared_pools: set[int] = set()
        self._stopping = False

    @property
    def running(self) -> bool:
        """Whether the pool was started and not stopped."""
        return self._executor is not None

    def start(self) -> None:
        """Start the worker processes."""
        self._executor = self._new_executor()

    def stop(self) -> None:
        """Cancel what is queued, wait for what runs, end the processes."""
        self._stopping = True
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def in_flight(self) -> list[str]:
        """Studies in the pool now."""
        with self._lock:
            return sorted(self._in_flight)

    def may_start(self, study_uid: str) -> bool:
        """Whether a due study may be submitted now: not already in flight, and no suspect
        (a study that shared a pool with a crash) running or waiting to run alone."""
        with self._lock:
            if study_uid in self._in_flight:
                return False  # new instances arrived while processing: after it finishes
            busy = bool(self._in_flight)
            suspect_running = any(uid in self._suspects for uid in self._in_flight)
        return not (suspect_running or (study_uid in self._suspects and busy))

    def submit(self, study_uid: str, arguments: tuple[Any, ...], generation: int,
               on_done: Callable[[], None]) -> None:
        """Run :func:`~service.pipeline.processing.process_study` on ``arguments`` in a worker."""
        with self._lock:  # the pool may be recycled or replaced concurrently
            if self._executor is None:
                return
            try:
                future = self._executor.submit(process_study, *arguments)
            except BrokenProcessPool:  # a worker died since the last collection: fresh pool
                broken, self._executor = self._executor, self._new_executor()
                broken.shutdown(wait=False, cancel_futures=True)
                log.error("a worker process died; started a new worker pool")
                future = self._executor.submit(process_study, *arguments)
            self._in_flight[study_uid] = _Job(future, self._executor, generation)
        future.add_done_callback(lambda _f: on_done())
        if study_uid in self._suspects:
            log.warning("study %s runs alone: it was in the pool when a worker died", study_uid)

    def collect(self) -> list[Finished]:
        """The jobs finished since the last call, crashes turned into retries or failures."""
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
        results = []
        for study_uid, job in finished:
            try:
                outcome = job.future.result()
            except CancelledError:
                # Cancelled by a stop: the study stays "processing" and is requeued at start-up.
                continue
            except BrokenProcessPool as exc:
                # A worker died (OOM killer, a crash in native code). Alone in the pool, the
                # study is the culprit and gets a strike; with others, nobody can tell, so each
                # is retried alone (see may_start) and only a crash while alone counts.
                self._replace_executor(job.pool)
                if self._retry_after_crash(study_uid, strike=id(job.pool) not in
                                           self._shared_pools):
                    continue
                outcome = ProcessingOutcome(
                    study_uid, ok=False,
                    error=f"the worker process died twice while processing this study ({exc})",
                )
            except Exception as exc:
                outcome = ProcessingOutcome(
                    study_uid, ok=False, error=f"worker process failed: {exc!r}"
                )
            with self._lock:
                self._crashes.pop(study_uid, None)
                self._suspects.discard(study_uid)
                self._studies_in_pool += 1
            results.append(Finished(outcome, job.generation))
        if finished and not self._stopping:
            self._recycle()
        return results

    def _new_executor(self) -> ProcessPoolExecutor:
        """Worker pool of spawned processes, warmed up at once so that the first study does not
        pay for the imports. (Not ``max_tasks_per_child``: on Python 3.11 it deadlocks when
        several tasks are queued; :meth:`_recycle` bounds the workers' memory instead.)"""
        executor = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
        executor.submit(warm_up)
        self._studies_in_pool = 0
        return executor

    def _recycle(self) -> None:
        """Replace the worker pool, when idle, after ``max_studies`` studies."""
        with self._lock:
            if (
                self._executor is None
                or self._in_flight
                or self._studies_in_pool < self.max_studies
            ):
                return
            old, self._executor = self._executor, self._new_executor()
        old.shutdown(wait=False)
        log.info("worker pool recycled after %d studies", self.max_studies)

    def _replace_executor(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is not broken:
                return  # already replaced
            self._executor = self._new_executor()
        broken.shutdown(wait=False, cancel_futures=True)
        log.error("a worker process died; started a new worker pool")

    def _retry_after_crash(self, study_uid: str, strike: bool) -> bool:
        with self._lock:
            crashes = self._crashes.get(study_uid, 0) + (1 if strike else 0)
            self._crashes[study_uid] = crashes
            self._suspects.add(study_uid)
        if crashes > MAX_WORKER_CRASHES:
            return False
        self._retry(study_uid)
        return True
