"""Processing and delivery as jobs any node of a cluster runs, with Procrastinate.

With ``[cluster] database_url`` several nodes share one PostgreSQL index and one data folder.
Procrastinate (a PostgreSQL-only job queue: ``FOR UPDATE SKIP LOCKED`` fetching, locks,
heartbeats) decides which node does what; there is no other broker and nothing home-made:

- ``process_study``: queued by the node whose "study complete" compare-and-set won
  (:meth:`ClusterJobs.queue_processing`), with the study's UID as lock, so two jobs of one
  study never run at once. The node that takes it runs the study in its own worker pool and
  waits for it. A node that dies with the job stops heartbeating; ``retry_stalled`` (below)
  puts the job back and another node takes over the study at the same generation.
- ``deliver``: every node's periodic deferrer proposes it every couple of seconds; one job per
  timestamp exists whatever the number of nodes, and its lock lets one node at a time run the
  delivery loop (:meth:`service.export.sender.Sender.run_once`), whose retries and back-off
  live in the ``exports`` table: they survive every node restarting.
- ``retry_stalled``: periodic, puts the jobs of nodes silent for ``stalled_after_s`` back;
  ``prune_jobs``: hourly, deletes the periodic passes older than a day.

Each node runs one Procrastinate worker in a thread of its own (an asyncio loop); tasks are
plain functions run in Procrastinate's task threads. Jobs are deferred through a second,
synchronous app, by task name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from procrastinate import (
    App,
    JobContext,
    PsycopgConnector,
    RetryStrategy,
    SyncPsycopgConnector,
)
from procrastinate.exceptions import AlreadyEnqueued, AppNotOpen, ConnectorException

log = logging.getLogger("hypoxnode.cluster")

SCHEMA_LOCK = (7016, 3)
"""``pg_advisory_lock`` key under which one node installs Procrastinate's schema."""
PROCESSING_QUEUE = "processing"
DELIVERY_QUEUE = "delivery"


class NodeStoppingError(RuntimeError):
    """The node cannot finish a job's study (it is stopping, or the study left its worker
    pool unrecorded): the job goes back to the queue for another node (or this one, started
    again) to take over."""


class ClusterJobs:
    """The Procrastinate worker of one node, and how the node queues jobs.

    Parameters
    ----------
    database_url
        ``[cluster] database_url``.
    node_id
        This node's name (its worker's name in the logs, its row in ``hypoxnode_nodes``).
    process
        Runs one study in this node's worker pool and returns when it is recorded;
        ``(study_instance_uid, taken_over)``: ``taken_over`` when the job was put back after
        its node went silent.
    deliver
        One pass of the delivery loop, waiting for the attempts it starts.
    concurrency
        Processing jobs this node runs at once (``quant.workers``).
    stalled_after_s
        A node silent this long is taken for dead and its jobs run elsewhere.
    """

    def __init__(self, database_url: str, node_id: str,
                 process: Callable[[str, bool], None], deliver: Callable[[], object], *,
                 concurrency: int = 1, stalled_after_s: float = 30.0) -> None:
        self.node_id = node_id
        self.stalled_after_s = stalled_after_s
        self._concurrency = concurrency
        self._url = database_url
        self.app = App(connector=PsycopgConnector(conninfo=database_url))
        self._defer_app = App(connector=SyncPsycopgConnector(conninfo=database_url))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._register(process, deliver)

    def _register(self, process: Callable[[str, bool], None],
                  deliver: Callable[[], object]) -> None:
        app = self.app
        stalled_after_s = self.stalled_after_s

        @app.task(name="process_study", queue=PROCESSING_QUEUE, pass_context=True,
                  retry=RetryStrategy(max_attempts=20, wait=1,
                                      retry_exceptions={NodeStoppingError}))
        def process_study(context: JobContext, study_instance_uid: str) -> None:
            attempts = context.job.attempts if context.job is not None else 0
            process(study_instance_uid, attempts > 0)

        @app.periodic(cron="* * * * * */2", periodic_id="deliver")
        @app.task(name="deliver", queue=DELIVERY_QUEUE, queueing_lock="deliver", lock="deliver")
        def deliver_task(timestamp: int) -> None:
            deliver()

        @app.periodic(cron="* * * * * */2", periodic_id="retry_stalled")
        @app.task(name="retry_stalled", queue=DELIVERY_QUEUE, queueing_lock="retry_stalled",
                  lock="retry_stalled", pass_context=True)
        async def retry_stalled(context: JobContext, timestamp: int) -> None:
            manager = context.app.job_manager
            now = datetime.now(UTC)
            for job in await manager.get_stalled_jobs(
                    seconds_since_heartbeat=stalled_after_s):
                log.warning("job %s (%s) of a silent node: running it again", job.id,
                            job.task_name)
                assert job.id is not None
                await manager.retry_job_by_id_async(job.id, retry_at=now)

        @app.periodic(cron="17 * * * *", periodic_id="prune_jobs")
        @app.task(name="prune_jobs", queue=DELIVERY_QUEUE, queueing_lock="prune_jobs",
                  lock="prune_jobs", pass_context=True)
        async def prune_jobs(context: JobContext, timestamp: int) -> None:
            # the periodic passes (two every 2 s) once a day old; processing jobs are kept
            await context.app.job_manager.delete_old_jobs(nb_hours=24, queue=DELIVERY_QUEUE)

    def heartbeat(self) -> None:
        """Say this node is alive (``hypoxnode_nodes``, for the status page)."""
        with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
            conn.execute("INSERT INTO hypoxnode_nodes (node_id, last_seen) VALUES (%s, now())"
                         " ON CONFLICT (node_id) DO UPDATE SET last_seen = now()",
                         (self.node_id,))

    def install_schema(self) -> None:
        """Create Procrastinate's tables once, whichever node starts first."""
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s, %s)", SCHEMA_LOCK)
            try:
                found = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
                conn.execute("CREATE TABLE IF NOT EXISTS hypoxnode_nodes (node_id TEXT PRIMARY"
                             " KEY, last_seen TIMESTAMPTZ NOT NULL)")
                if found is None or found[0] is None:
                    with self._defer_app.open():
                        self._defer_app.schema_manager.apply_schema()
                    log.info("installed the job queue's tables")
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s, %s)", SCHEMA_LOCK)

    def start(self) -> None:
        """Install the schema if needed, open the deferring app, start the worker thread."""
        self.install_schema()
        self.heartbeat()
        self._defer_app.open()
        self._thread = threading.Thread(target=self._run, name="cluster-jobs", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """The worker, started again after a failure (PostgreSQL restarted) until stopped."""
        while not self._stopping.is_set():
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._task = loop.create_task(self._work())
            try:
                loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("the job worker stopped; starting it again")
            finally:
                loop.close()
            self._stopping.wait(2.0)

    async def _work(self) -> None:
        heartbeat = max(0.5, self.stalled_after_s / 3)
        async with self.app.open_async():
            await self.app.run_worker_async(
                queues=[PROCESSING_QUEUE, DELIVERY_QUEUE], concurrency=self._concurrency + 2,
                name=self.node_id, install_signal_handlers=False, listen_notify=True,
                update_heartbeat_interval=heartbeat, stalled_worker_timeout=self.stalled_after_s,
                fetch_job_polling_interval=1.0, delete_jobs="never",
            )

    def queue_processing(self, study_instance_uid: str) -> None:
        """Queue the processing of a study whose state this node just moved to queued."""
        with contextlib.suppress(AlreadyEnqueued):  # a job for it is waiting already
            self._defer_app.configure_task(
                "process_study", queue=PROCESSING_QUEUE, lock=study_instance_uid,
                queueing_lock=study_instance_uid,
            ).defer(study_instance_uid=study_instance_uid)

    def wake_delivery(self) -> None:
        """Deliver now rather than at the next periodic pass (best effort: when the queue
        cannot be reached or this node is stopping, the periodic pass delivers)."""
        with contextlib.suppress(AlreadyEnqueued, AppNotOpen, ConnectorException):
            self._defer_app.configure_task(
                "deliver", queue=DELIVERY_QUEUE, queueing_lock="deliver", lock="deliver",
            ).defer(timestamp=0)

    def overview(self) -> dict[str, object]:
        """What the whole cluster is doing: jobs per ``queue/status``, and every node that ever
        started with the seconds since it last said it was alive (:meth:`heartbeat`)."""
        connector = self._defer_app.connector
        jobs = connector.execute_query_all(
            "SELECT queue_name, status::text AS status, count(*) AS n FROM procrastinate_jobs"
            " GROUP BY 1, 2 ORDER BY 1, 2")
        workers = connector.execute_query_all(
            "SELECT node_id AS name, extract(epoch FROM now() - last_seen)::float AS silent_s"
            " FROM hypoxnode_nodes ORDER BY node_id")
        return {
            "node_id": self.node_id,
            "jobs": {f"{row['queue_name']}/{row['status']}": int(row["n"]) for row in jobs},
            "nodes": [{"name": row["name"], "silent_s": round(float(row["silent_s"]), 1)}
                      for row in workers],
        }

    def stop(self) -> None:
        """Stop the worker; a processing job running here raises :class:`NodeStoppingError`
        (the node sees to it) and goes back to the queue."""
        self._stopping.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        if self._thread is not None:
            self._thread.join(30)
        self._defer_app.close()

