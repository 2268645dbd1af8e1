"""Security over real associations with ``hypoxnode serve``: allow-lists, DICOM TLS, UIDs that
try to become paths, the audit log, and no patient identifiers in the log at INFO.

TLS certificates are generated at test time with ``trustme`` (a CA, the node's certificate and
client certificates), never committed. DCMTK ``storescu``/``echoscu`` are the TLS clients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
import trustme
from pydicom import examples
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from service.config import ConfigError, load_config
from service.synthetic import make_study, write_study
from tests.peers import echoscu, result_object_count, storescu, wait_for
from tests.reliability import http_json, index_rows, snapshot, start_test_node, store_results


@dataclass
class Pki:
    """PEM files of one test PKI."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    """A client certificate from another CA."""
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA(organization_name="hypoxnode test CA")
    other_ca = trustme.CA(organization_name="somebody else")
    server = ca.issue_cert("127.0.0.1", "localhost", common_name="HYPOXNODE")
    client = ca.issue_cert("scanner.test", common_name="SCANNER")
    stranger = other_ca.issue_cert("stranger.test", common_name="STRANGER")
    paths = {
        "ca": root / "ca.pem",
        "server_cert": root / "server.pem",
        "server_key": root / "server.key",
        "client_cert": root / "client.pem",
        "client_key": root / "client.key",
        "stranger_cert": root / "stranger.pem",
        "stranger_key": root / "stranger.key",
    }
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for name, cert in (("server", server), ("client", client), ("stranger", stranger)):
        cert.private_key_pem.write_to_path(str(paths[f"{name}_key"]))
        with paths[f"{name}_cert"].open("wb") as handle:
            for blob in cert.cert_chain_pems:
                handle.write(blob.bytes())
    return Pki(**paths)


def _tls_client(pki: Pki) -> list[str]:
    return ["+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca)]


def _ct_file(directory: Path, **changes: str) -> Path:
    ds = examples.ct.copy()
    ds.SOPInstanceUID = generate_uid()
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{generate_uid()}.dcm"
    ds.save_as(path)
    return path


# -- allow-lists --------------------------------------------------------------------------------


def test_unknown_calling_ae_is_refused(tmp_path: Path) -> None:
    node = start_test_node(
        tmp_path / "node", http=False,
        node_extra='allowed_calling_ae_titles = ["SCANNER", "ECHOSCU"]',
    )
    try:
        assert not echoscu(node.port, node.ae_title, calling_ae="INTRUDER")
        refused = storescu([_ct_file(tmp_path / "in")], node.port, node.ae_title,
                           calling_ae="INTRUDER")
        assert refused.returncode != 0
        accepted = storescu([_ct_file(tmp_path / "ok")], node.port, node.ae_title)
        assert accepted.returncode == 0, accepted.stderr
    finally:
        assert node.stop() == 0
    rows = index_rows(node.data_dir, "SELECT calling_ae_title FROM instances")
    assert [r[0] for r in rows] == ["SCANNER"]
    assert "association rejected from INTRUDER@127.0.0.1" in node.log()
    assert "Calling AE title not recognised" in node.log()


def _associate_from(source: str, port: int) -> bool:
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="HYPOXNODE", bind_address=(source, 0))
    established = bool(assoc.is_established)
    if established:
        assoc.release()
    return established


@pytest.mark.parametrize("receiver_processes", [1, 2])
def test_host_outside_the_allow_list_is_refused(tmp_path: Path, receiver_processes: int) -> None:
    node = start_test_node(
        tmp_path / "node", http=False,
        node_extra='allowed_calling_hosts = ["127.0.0.1/32", "127.0.0.2"]\n'
                   f"receiver_processes = {receiver_processes}",
    )
    try:
        assert _associate_from("127.0.0.2", node.port)
        assert not _associate_from("127.0.0.3", node.port)
        assert echoscu(node.port, node.ae_title)  # from 127.0.0.1
    finally:
        assert node.stop() == 0
    log = node.log()
    # closed at accept, before its A-ASSOCIATE-RQ was read
    assert "connection refused at accept from 127.0.0.3" in log
    assert "host not in node.allowed_calling_hosts" in log
    assert "127.0.0.2" not in log.split("connection refused at accept", 1)[-1].split("\n")[0]
    assert "association rejected from SCANNER@127.0.0.2" not in log


def test_host_allow_list_is_validated() -> None:
    with pytest.raises(ConfigError, match="allowed_calling_hosts"):
        load_config(None, node={"allowed_calling_hosts": ["scanner.example.org"]})
    config = load_config(None, node={"allowed_calling_hosts": ["10.1.0.0/16", "::1"]})
    assert config.node.host_allowed("10.1.2.3")
    assert config.node.host_allowed("::ffff:10.1.2.3")
    assert config.node.host_allowed("::1")
    assert not config.node.host_allowed("10.2.0.1")
    assert not config.node.host_allowed("not an address")
    assert load_config(None).node.host_allowed("192.0.2.1")  # no list: anyone


# -- TLS ----------------------------------------------------------------------------------------


def _tls_section(pki: Pki, require_client_certificate: bool = True) -> str:
    return f"""
[tls]
enabled = true
certificate_file = "{pki.server_cert}"
private_key_file = "{pki.server_key}"
ca_file = "{pki.ca}"
require_client_certificate = {str(require_client_certificate).lower()}
"""


@pytest.mark.parametrize("receiver_processes", [1, 2])
def test_tls_with_client_certificate_succeeds_and_without_is_refused(
    tmp_path: Path, pki: Pki, receiver_processes: int
) -> None:
    """In the node process, and in receiver processes (TLS handshake after the hand-over)."""
    files = [_ct_file(tmp_path / "scanner") for _ in range(3)]
    node = start_test_node(tmp_path / "node", http=False, sections=_tls_section(pki),
                           echo_extra=_tls_client(pki),
                           node_extra=f"receiver_processes = {receiver_processes}\n")
    try:
        good = storescu(files, node.port, node.ae_title, extra=["-v", *_tls_client(pki)])
        assert good.returncode == 0, good.stdout + good.stderr
        assert set(store_results(good.stdout + good.stderr).values()) == {"Success"}

        no_cert = storescu([_ct_file(tmp_path / "anon")], node.port, node.ae_title,
                           extra=["+tla", "+cf", str(pki.ca)])
        assert no_cert.returncode != 0
        stranger = storescu(
            [_ct_file(tmp_path / "stranger")], node.port, node.ae_title,
            extra=["+tls", str(pki.stranger_key), str(pki.stranger_cert), "+cf", str(pki.ca)],
        )
        assert stranger.returncode != 0
        plain = storescu([_ct_file(tmp_path / "plain")], node.port, node.ae_title)
        assert plain.returncode != 0
        # The refused attempts did not disturb the listener.
        assert echoscu(node.port, node.ae_title, extra=_tls_client(pki))
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    rows = index_rows(node.data_dir, "SELECT sop_instance_uid FROM instances")
    assert sorted(r[0] for r in rows) == sorted(
        str(pydicom.dcmread(f).SOPInstanceUID) for f in files
    )
    assert "over TLS (client certificate CN=SCANNER)" in node.log()
    assert "closed before any association request" in node.log()


def test_tls_without_client_verification_accepts_anonymous_clients(
    tmp_path: Path, pki: Pki
) -> None:
    node = start_test_node(tmp_path / "node", http=False,
                           sections=_tls_section(pki, require_client_certificate=False),
                           echo_extra=["+tla", "+cf", str(pki.ca)])
    try:
        sent = storescu([_ct_file(tmp_path / "anon")], node.port, node.ae_title,
                        extra=["+tla", "+cf", str(pki.ca)])
        assert sent.returncode == 0, sent.stdout + sent.stderr
    finally:
        assert node.stop() == 0


def test_tls_configuration_is_validated(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(ConfigError, match="certificate_file"):
        load_config(None, tls={"enabled": True})
    with pytest.raises(ConfigError, match="ca_file"):
        load_config(None, tls={"enabled": True, "certificate_file": pki.server_cert,
                               "private_key_file": pki.server_key,
                               "require_client_certificate": True})
    with pytest.raises(ConfigError, match="no such file"):
        load_config(None, tls={"enabled": True, "certificate_file": tmp_path / "missing.pem",
                               "private_key_file": pki.server_key})


# -- UIDs never become paths --------------------------------------------------------------------

HOSTILE_UIDS = ["../../x", "..", "../../../../tmp/owned", "1.2/../../x", "/etc/passwd",
                "1.2.3\\..\\x", "1.2.3\x00.4", "1." + "9" * 80]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_hostile_uids_never_become_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Our SCU must send what a hostile peer would: switch off its own UID validation.
    monkeypatch.setitem(pynetdicom_config.VALIDATORS, "UI", lambda _value: (True, ""))
    workdir = tmp_path / "node"
    node = start_test_node(workdir, http=False)
    before = snapshot(tmp_path, exclude=workdir)
    statuses: dict[tuple[str, str], int | None] = {}
    try:
        for uid in HOSTILE_UIDS:
            for attribute in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID"):
                if attribute == "SOPInstanceUID" and "\\" in uid:
                    continue  # multi-valued: pynetdicom refuses to send it at all
                ds = examples.ct.copy()
                ds.SOPInstanceUID = generate_uid()
                setattr(ds, attribute, uid)
                statuses[(attribute, uid)] = _send_one(node.port, ds)
        assert echoscu(node.port, node.ae_title)
    finally:
        assert node.stop() == 0
    # The dataset's UIDs are checked by the node: 0xC210. An over-long Affected SOP Instance
    # UID in the *command* makes pynetdicom abort the association (no status) instead.
    too_long = ("SOPInstanceUID", HOSTILE_UIDS[-1])
    assert statuses.pop(too_long) is None
    assert set(statuses.values()) == {0xC210}, statuses
    assert snapshot(tmp_path, exclude=workdir) == before
    stored = [p for p in (node.data_dir / "instances").rglob("*") if p.is_file()]
    assert stored == []
    for path in node.data_dir.rglob("*"):
        assert path.resolve().is_relative_to(node.data_dir.resolve())


def _send_one(port: int, dataset: pydicom.Dataset) -> int | None:
    """C-STORE on a fresh association; the status, or None when the peer aborted."""
    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="HYPOXNODE")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(dataset)
        return int(status.Status) if "Status" in status else None
    finally:
        if assoc.is_established:
            assoc.release()


# -- audit log and patient identifiers ----------------------------------------------------------

PATIENT_NAME = "Qwertzuiop^Xanthippe"
PATIENT_ID = "PHI-7741-ZQX"


def test_audit_log_and_no_patient_identifiers_at_info(
    tmp_path: Path, pacs: tuple[int, list[str]]
) -> None:
    pacs_port, received = pacs
    study = make_study(field_of_view="pelvis", patient_id=PATIENT_ID)
    files = write_study(study, tmp_path / "scanner")
    for path in files:
        ds = pydicom.dcmread(path)
        ds.PatientName = PATIENT_NAME
        ds.save_as(path)
    study_uid = str(study.pet[0].StudyInstanceUID)
    audit_file = tmp_path / "audit" / "audit.log"
    node = start_test_node(
        tmp_path / "node",
        sections=f"""
[log]
level = "INFO"
audit_file = "{audit_file}"
[[destinations]]
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
""",
    )
    try:
        sent = storescu(files, node.port, node.ae_title)
        assert sent.returncode == 0, sent.stderr
        assert node.http_port is not None
        port = node.http_port

        objects: list[int] = []

        def delivered() -> bool:
            info = http_json(port, f"/api/studies/{study_uid}")
            assert info["state"] != "failed", info["error"]
            if info["state"] != "done":
                return False
            objects[:] = [result_object_count(info["result"])]
            return len(received) == objects[0]

        wait_for(delivered, 120, "the study processed and its results delivered")
        wait_for(lambda: audit_file.read_text().count("export ") == objects[0], 10,
                 "an export audit line per result")
    finally:
        assert node.stop() == 0
    audit = audit_file.read_text()
    assert "association accepted from SCANNER@127.0.0.1" in audit
    assert f"{len(files)} instances stored" in audit
    assert f"studies: {study_uid} ({len(files)})" in audit
    assert audit.count("to PACS: 0x0000 Success") == objects[0]
    for text in (node.log(), audit):
        for identifier in (PATIENT_ID, "Qwertzuiop", "Xanthippe"):
            assert identifier.lower() not in text.lower(), f"{identifier} in the log"
