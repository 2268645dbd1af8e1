"""``hypoxnode demo``: the whole path on loopback with the embedded defaults.

A node (SQLite index, local folder) starts on a free loopback port, a small demo PACS (a
pynetdicom storage SCP) starts beside it, a synthetic 64Cu-ATSM PET/CT made by the project's
generator (``service/synthetic``, so the demo runs from a source checkout) is pushed by C-STORE,
and the demo waits until the node has quantified it and the PACS has the SEG, SR and summary.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE, AllStoragePresentationContexts, StoragePresentationContexts, evt
from pynetdicom.events import Event

from service.config import Config, Destination
from service.node import Node
from service.report.report_text import format_table
from service.storage.index_exports import ExportState
from service.storage.study_state import StudyState
from service.synthetic import make_study, write_study

DEMO_PACS_AE = "DEMOPACS"
TIMEOUT_S = 300.0


def _start_demo_pacs(folder: Path) -> tuple[AE, int]:
    folder.mkdir(parents=True, exist_ok=True)

    def on_store(event: Event) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        dataset.save_as(folder / f"{dataset.Modality}-{dataset.SOPInstanceUID}.dcm")
        return 0x0000

    ae = AE(ae_title=DEMO_PACS_AE)
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None
    return ae, int(server.server_address[1])


def _push(paths: list[Path], port: int, called_ae: str) -> int:
    ae = AE(ae_title="DEMOSCANNER")
    for context in StoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_requested_context(context.abstract_syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        raise RuntimeError("the node refused the demo scanner's association")
    sent = 0
    try:
        for path in paths:
            status = assoc.send_c_store(dcmread(path))
            if status and status.Status == 0:
                sent += 1
    finally:
        assoc.release()
    return sent


def run_demo(base: Config) -> int:
    """Run the demo and print the figures and result paths; returns the exit status.

    Everything it writes stays in ``<data_dir>/demo`` (replaced by the next demo run).
    """
    workdir = base.data_dir / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    pacs_dir = workdir / "demo-pacs"
    pacs_ae, pacs_port = _start_demo_pacs(pacs_dir)
    config = base.model_copy(
        update={
            "node": base.node.model_copy(
                update={"host": "127.0.0.1", "port": 0, "data_dir": workdir / "node"}
            ),
            "study": base.study.model_copy(
                update={"stable_seconds": 2.0, "check_interval_seconds": 0.5}
            ),
            "export": base.export.model_copy(update={"check_interval_seconds": 0.5}),
            "destinations": [Destination(ae_title=DEMO_PACS_AE, host="127.0.0.1", port=pacs_port)],
        }
    )
    node = Node(config)
    node.start()
    try:
        study = make_study(field_of_view="pelvis", tracer="64Cu-ATSM")
        files = write_study(study, workdir / "scanner")
        print(f"demo: pushing {len(files)} instances (PET + CT) by C-STORE to "
              f"{config.node.ae_title}@127.0.0.1:{node.port}")
        sent = _push(files, node.port, config.node.ae_title)
        print(f"demo: {sent} acknowledged; waiting for the node to quantify and export")
        study_uid = str(study.pet[0].StudyInstanceUID)
        info = _wait_for_delivery(node, study_uid)
        if info["state"] == StudyState.FAILED.value:
            print(f"demo: the study could not be quantified: {info['error']}")
            return 2
        print()
        print(format_table(info["result"]))
        print()
        print("result objects kept by the node:")
        for row in info["results"]:
            print(f"  {row['kind']:<4}{row['path']}")
        print(f"received by the demo PACS ({DEMO_PACS_AE}):")
        for path in sorted(pacs_dir.iterdir()):
            print(f"  {path}")
        return 0
    finally:
        node.stop()
        pacs_ae.shutdown()
        print(f"demo: everything it wrote is in {workdir}")


def _wait_for_delivery(node: Node, study_uid: str) -> dict:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        info = node.index.study(study_uid)
        if info is not None:
            if info["state"] == StudyState.FAILED.value:
                return info
            exports = info["exports"]
            if (
                info["state"] == StudyState.DONE.value
                and exports
                and all(e["state"] != ExportState.PENDING.value for e in exports)
            ):
                return info
        time.sleep(0.25)
    raise TimeoutError(f"study {study_uid} was not quantified and delivered in {TIMEOUT_S:.0f} s")
