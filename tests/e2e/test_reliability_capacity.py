"""Capacity: several scanners at once, and the configured maximum of associations.

Four DCMTK ``storescu`` processes send two studies each at the same time to
``hypoxnode serve`` configured for four associations: every instance is stored, every study
processed, and no association refused. A fifth association while four are open is refused
(transient, local limit exceeded) and accepted again once one of them ended.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from service.synthetic import make_study, write_study
from tests.peers import require_tool, wait_for
from tests.reliability import http_json, index_rows, start_test_node, store_results

SENDERS = 4
STUDIES_PER_SENDER = 2


@pytest.fixture(autouse=True)
def _storescu_without_nagle(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TCP_NODELAY", "1")


def test_four_senders_two_studies_each_at_once(tmp_path: Path) -> None:
    batches: list[list[Path]] = []
    study_uids: dict[str, int] = {}
    for sender in range(SENDERS):
        files: list[Path] = []
        for number in range(STUDIES_PER_SENDER):
            study = make_study(field_of_view="pelvis", seed=100 + 10 * sender + number,
                               patient_id=f"CONC{sender}{number}")
            written = write_study(study, tmp_path / f"scanner{sender}" / f"study{number}")
            study_uids[str(study.pet[0].StudyInstanceUID)] = len(written)
            files += written
        batches.append(files)
    assert len(study_uids) == SENDERS * STUDIES_PER_SENDER

    node = start_test_node(tmp_path / "node", stable_seconds=2.0,
                           node_extra=f"max_associations = {SENDERS}")
    try:
        senders = [
            subprocess.Popen(
                [require_tool("storescu"), "-v", "-aet", f"SCANNER{n}", "-aec", node.ae_title,
                 "127.0.0.1", str(node.port), *map(str, files)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
            for n, files in enumerate(batches)
        ]
        outputs = [sender.communicate(timeout=300)[0] for sender in senders]
        assert [sender.returncode for sender in senders] == [0] * SENDERS, outputs
        for files, output in zip(batches, outputs, strict=True):
            answered = store_results(output)
            assert [answered.get(str(f)) for f in files] == ["Success"] * len(files)
        assert node.http_port is not None
        port = node.http_port

        def all_processed() -> bool:
            states = {uid: http_json(port, f"/api/studies/{uid}") for uid in study_uids}
            failed = {uid: s["error"] for uid, s in states.items() if s["state"] == "failed"}
            assert not failed, failed
            return all(s["state"] == "done" for s in states.values())

        wait_for(all_processed, 180, "all eight studies to be processed")
        infos = {uid: http_json(port, f"/api/studies/{uid}") for uid in study_uids}
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    for uid, count in study_uids.items():
        assert infos[uid]["processed_count"] == count
        assert infos[uid]["generation"] == 1
    rows = index_rows(node.data_dir, "SELECT COUNT(*) FROM instances")
    assert rows[0][0] == sum(study_uids.values())
    assert "association rejected" not in node.log()
    assert node.log().count("association accepted from SCANNER") == SENDERS
    print(f"\nconcurrency: {SENDERS} senders x {STUDIES_PER_SENDER} studies,"
          f" {sum(study_uids.values())} instances stored, {len(infos)} studies done,"
          " 0 associations refused")


def _associate(port: int) -> Association:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="HYPOXNODE")


@pytest.mark.parametrize("receiver_processes", [1, 2])
def test_association_beyond_the_maximum_is_refused_until_one_ends(
    tmp_path: Path, receiver_processes: int
) -> None:
    """The limit holds for the whole node, also when receiver processes share the work."""
    node = start_test_node(tmp_path / "node", http=False,
                           node_extra=f"max_associations = 2\nreceiver_processes = "
                           f"{receiver_processes}\n")
    held: list[Association] = []
    try:
        held = [_associate(node.port) for _ in range(2)]
        assert all(a.is_established for a in held)
        extra = _associate(node.port)
        assert extra.is_rejected
        held.pop().release()

        def accepted_again() -> bool:
            assoc = _associate(node.port)
            if assoc.is_established:
                assoc.release()
                return True
            return False

        wait_for(accepted_again, 10, "an association once one of the two ended")
    finally:
        for assoc in held:
            assoc.release()
        assert node.stop() == 0
    assert "Local limit exceeded" in node.log()
