"""The node's side of routing: decide each complete study, act on the decision.

:meth:`Router.take` runs in the scheduler thread when a study is complete (``queued``), before
it would go to a worker:

- ``process``: the study goes to a worker with its profile (:meth:`Router.config_for`) and its
  results to the profile's destinations (:meth:`Router.result_destinations`);
- ``forward``: not processed; its originals are queued for the rule's destinations and the
  study is purged once every one was delivered (kept, and said so, when one is given up);
- ``ignore``: not processed; stored, then purged at once (the instances were acknowledged on
  receipt: a study is decided when complete, and the C-STORE path decides nothing).

``forward_to`` with ``process`` forwards the originals as well. Forwarding is per instance:
every instance of the study at the time it was decided, and those of later arrivals when the
study is decided again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from service.config import Config
from service.routing.forward import Forwarder
from service.routing.rules import (
    DEFAULT_RULE,
    Decision,
    SeriesHeaders,
    StudyHeaders,
    evaluate,
    profile_config,
    read_header,
    result_destinations,
    series_headers,
)
from service.routing.store import FAILED, PENDING, SENT, RoutingStore
from service.storage.index import Index
from service.storage.retention import purge_study
from service.storage.store import InstanceStore
from service.storage.study_state import StudyState

log = logging.getLogger("hypoxnode.routing")
audit = logging.getLogger("hypoxnode.audit")

class Router:
    """Routing decisions for one node.

    Parameters
    ----------
    config
        ``[routing]`` and the rest of the configuration.
    index, store
        The node's index and instance store.
    """

    def __init__(self, config: Config, index: Index, store: InstanceStore) -> None:
        self.config = config
        self.index = index
        self.store = store
        self.db = RoutingStore(config.data_dir / "routing.sqlite")
        self.forwarder = Forwarder(config, self.db)
        self.overrides: list[Callable[[str], Decision | None]] = []
        """Consulted before the rules: a decision they return wins (priors from PACS)."""
        self.no_results_rules: set[str] = set()
        """Rules of overrides whose studies send no results (priors from PACS)."""

    def close(self) -> None:
        """Close the routing database."""
        self.db.close()

    def study_headers(self, study_uid: str) -> StudyHeaders:
        """What the rules see of a study held by the node (one header read per series)."""
        records = self.index.study_instances(study_uid)
        by_series: dict[str, list[Any]] = {}
        for record in records:
            by_series.setdefault(record.series_instance_uid, []).append(record)
        series = []
        for series_uid, items in by_series.items():
            first = items[0]
            try:
                headers = series_headers(read_header(first.path), len(items))
            except Exception as exc:  # unreadable header: what the index holds still routes
                log.warning("study %s: header of series %s unreadable (%s)", study_uid,
                            series_uid, exc)
                headers = SeriesHeaders(series_uid, first.modality, first.sop_class_uid,
                                        instances=len(items))
            series.append(headers)
        calling = tuple(sorted({r.calling_ae_title for r in records if r.calling_ae_title}))
        return StudyHeaders(study_uid, calling, (self.config.node.ae_title,), tuple(series))

    def decide(self, study_uid: str) -> Decision:
        """Evaluate (overrides, then the rules) and record the decision."""
        decision = None
        for override in self.overrides:
            decision = override(study_uid)
            if decision is not None:
                break
        if decision is None:
            decision = evaluate(self.config.routing, self.study_headers(study_uid))
        self.db.record_decision(study_uid, decision)
        log.info("study %s: rule %r, %s%s", study_uid, decision.rule, decision.action,
                 f" (profile {decision.profile})" if decision.profile else "")
        log.debug("study %s routed because %s", study_uid, decision.why)
        return decision

    def take(self, study_uid: str) -> bool:
        """Decide a study that just became complete (state ``queued``) and act on it.

        Returns
        -------
        bool
            True when routing dealt with the study (ignored or forwarded only): it is not to
            be processed. False: process it.
        """
        try:
            decision = self.decide(study_uid)
        except Exception:  # a defect in routing must not lose a study: process it as before
            log.exception("study %s: routing failed; processed with the defaults", study_uid)
            decision = Decision(DEFAULT_RULE, "process", None, (),
                                "routing failed (see the log): processed with the defaults")
            self.db.record_decision(study_uid, decision)
        if decision.forward_to:
            instances = [(r.sop_instance_uid, r.path)
                         for r in self.index.study_instances(study_uid)]
            queued = self.db.queue_forwards(study_uid, instances, decision.forward_to)
            log.info("study %s: %d original(s) queued for %s", study_uid, queued,
                     ", ".join(decision.forward_to))
        if decision.action == "process":
            return False
        if not self.index.set_study_state(study_uid, StudyState.DONE,
                                          expected=StudyState.QUEUED):
            return True  # new instances arrived meanwhile: it will be decided again
        if decision.action == "ignore":
            purge_study(self.index, self.store, study_uid)
            self.db.set_outcome(study_uid, "purged: ignored, not processed")
            audit.info("study %s ignored by routing rule %r and purged", study_uid,
                       decision.rule)
        return True

    def config_for(self, study_uid: str) -> Config:
        """The configuration a study is processed with (its profile applied)."""
        decision = self.db.decision(study_uid)
        return profile_config(self.config, decision.profile if decision else None)

    def result_destinations(self, study_uid: str) -> list[str]:
        """Keys of the destinations that receive a study's results."""
        decision = self.db.decision(study_uid)
        if decision is not None and decision.rule in self.no_results_rules:
            return []
        return result_destinations(self.config, decision.profile if decision else None)

    def run_once(self, wait: bool = False) -> int:
        """Scheduler job: send due forwards (each destination in its own thread; ``wait`` for
        them or not), purge forward-only studies whose forwards are all delivered."""
        delivered = self.forwarder.run_once(wait=wait)
        for study_uid in self.db.studies_awaiting_purge():
            states = self.db.forward_states(study_uid)
            if states.get(PENDING):
                continue
            if states.get(FAILED):
                self.db.set_outcome(study_uid, f"forwarding of {states[FAILED]} instance(s)"
                                               " given up: originals kept")
            elif states.get(SENT) and purge_study(self.index, self.store, study_uid):
                self.db.set_outcome(study_uid, "purged: forwarded, not processed")
        return delivered

    def recent(self, limit: int = 200) -> list[dict[str, Any]]:
        """The latest decisions, for the status page and the API."""
        return self.db.recent(limit)
