"""The C-STORE-RSP command set of ``service/receive/_pynetdicom/store_response.py`` is byte for byte
what
pynetdicom encodes, and the node answers real C-STORE requests with it."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import _config as pynetdicom_config
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import CTImageStorage, PositronEmissionTomographyImageStorage  # type: ignore[attr-defined]

from service.config import load_config
from service.receive._pynetdicom.store_response import c_store_rsp_command
from service.receive.listener import start_listener
from service.runtime.logs import set_levels
from service.storage.index import Index
from service.storage.store import InstanceStore
from tests.peers import storescu
from tests.reliability import ct_study, dimse_statuses


def _response(status: int, message_id: int, sop_class: str, sop_instance: str) -> C_STORE:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = message_id
    response.AffectedSOPClassUID = sop_class
    response.AffectedSOPInstanceUID = sop_instance
    response.Status = status
    return response


def _pynetdicom_encoding(response: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    (p_data,) = list(message.encode_msg(1, 16384))
    ((_context, value),) = p_data.presentation_data_value_list
    assert value[0] == 0x03  # command, last fragment
    return bytes(value[1:])


@pytest.mark.parametrize("status", [0x0000, 0xA700, 0xA900, 0xC000, 0xC210, 0xB000])
@pytest.mark.parametrize("message_id", [1, 255, 65535])
@pytest.mark.parametrize("sop_class,sop_instance", [
    (CTImageStorage, generate_uid()),
    (PositronEmissionTomographyImageStorage, "1.2.3"),
    (CTImageStorage, "1.2.34"),
    (CTImageStorage, "1." + "9" * 62),
])
def test_the_command_set_is_what_pynetdicom_encodes(
    status: int, message_id: int, sop_class: str, sop_instance: str,
) -> None:
    response = _response(status, message_id, sop_class, sop_instance)
    assert c_store_rsp_command(response) == _pynetdicom_encoding(response)


def test_responses_with_more_than_the_required_elements_go_the_upstream_way() -> None:
    response = _response(0xC000, 1, CTImageStorage, generate_uid())
    response.ErrorComment = "cannot understand"
    assert c_store_rsp_command(response) is None
    response = _response(0xA900, 1, CTImageStorage, generate_uid())
    response.OffendingElement = [0x00080016]
    assert c_store_rsp_command(response) is None


def test_the_node_switches_pynetdicom_logging_handlers_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pynetdicom_config, "LOG_HANDLER_LEVEL", "standard")
    root_level = logging.getLogger().level
    try:
        set_levels("INFO")
        assert pynetdicom_config.LOG_HANDLER_LEVEL == "none"
    finally:
        set_levels(logging.getLevelName(root_level))


def test_the_node_answers_storescu_with_it(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With the node's logging set-up (pynetdicom's logging handlers off) every answer of a
    real association is the short encoding, and storescu reads each as success."""
    monkeypatch.setattr(pynetdicom_config, "LOG_HANDLER_LEVEL", "none")  # as set_levels
    encoded: list[bytes | None] = []

    def counting(response: C_STORE) -> bytes | None:
        encoded.append(c_store_rsp_command(response))
        return encoded[-1]

    monkeypatch.setattr("service.receive._pynetdicom.spool.c_store_rsp_command", counting)
    config = load_config(None, node={"host": "127.0.0.1", "port": 0,
                                     "data_dir": tmp_path / "data"})
    index = Index(tmp_path / "data" / "index.sqlite")
    server = start_listener(config, InstanceStore(tmp_path / "data"), index)
    try:
        files = ct_study(tmp_path / "study", 5)
        result = storescu(files, int(server.server_address[1]), "HYPOXNODE", extra=["-d"])
    finally:
        server.shutdown()
        index.close()
    assert result.returncode == 0, result.stderr[-2000:]
    assert dimse_statuses(result.stdout + result.stderr) == [0x0000] * len(files)
    assert len(encoded) == len(files) and all(encoded)
