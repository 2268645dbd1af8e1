"""Start-up reconciliation: make the index and the instance files agree after any stop.

- ``tmp/`` holds writes that never completed: removed (never acknowledged).
- An index row whose file is gone: dropped (the study is re-checked when due).
- A file with no index row: the node stopped between the rename and the index commit, or a
  power cut lost the row (instance rows are written ``synchronous=NORMAL``). It is indexed
  again; a study already done whose processed count covers it stays done
  (:meth:`service.storage.index.Index.recover_instance`), so a lost row never sends results out
  again.
- A file that does not read as the instance its path names, or whose SOPInstanceUID is
  indexed elsewhere, is never deleted (it may have been acknowledged): it is moved to
  ``quarantine/`` with its reason, audited, and listed on the status page.
- Studies left queued or processing go back to receiving and are processed again.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pydicom import dcmread

from service.runtime.audit import audit
from service.storage.index import Index, InstanceRecord
from service.storage.store import InstanceConflictError, InstanceStore

log = logging.getLogger("hypoxnode.node")


def reconcile(store: InstanceStore, index: Index, requeue: bool = True) -> None:
    """Reconcile ``index`` with the files of ``store`` (module docstring). ``requeue``: put
    studies left queued or processing back to receiving (not in a cluster, where they may be
    another node's work: the job queue runs a dead node's jobs again)."""
    removed = store.clear_tmp()
    if removed:
        log.warning("removed %d partial file(s) left by an interrupted write", removed)
    indexed = index.all_instance_paths()
    missing = [uid for uid, path in indexed.items() if not Path(path).is_file()]
    if missing:
        log.error("%d indexed instance(s) missing on disk; dropped from the index",
                  len(missing))
        index.forget_instances(missing)
    known = set(indexed.values())
    recovered = due = quarantined = 0
    for path in store.instance_files():
        if str(path) in known:
            continue
        record, why = record_for_orphan(store, path)
        if record is not None:
            try:
                due += index.recover_instance(record)
                recovered += 1
                continue
            except InstanceConflictError as exc:
                why = str(exc)
        moved = store.quarantine(path, why)
        quarantined += 1
        audit.warning("instance file %s quarantined as %s: %s", path.name, moved, why)
    if recovered or quarantined:
        log.warning(
            "%d instance file(s) on disk were not in the index: %d indexed again (%d of"
            " them make their study due), %d quarantined in %s", recovered + quarantined,
            recovered, due, quarantined, store.quarantine_dir,
        )
    requeued = index.requeue_interrupted() if requeue else []
    if requeued:
        log.warning("requeued %d study(ies) interrupted by the last stop", len(requeued))


def record_for_orphan(store: InstanceStore, path: Path) -> tuple[InstanceRecord | None, str]:
    """The index row of an unindexed instance file, or None and why it is not a sound one
    (no patient data in the reason)."""
    try:
        dataset = dcmread(path, stop_before_pixels=True)
        uids = (str(dataset.StudyInstanceUID), str(dataset.SeriesInstanceUID),
                str(dataset.SOPInstanceUID))
        if store.instance_path(*uids) != path:
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
