"""The C-STORE-RSP command set, encoded without pydicom.

A receiving association answers every instance with the same seven-element command set. In
pynetdicom that is a pydicom ``Dataset`` built element by element and encoded twice (once to
measure the group length, once to send): 17 % of the samples holding the GIL in a
``py-spy record --gil`` of one association, the largest single Python cost of receiving
then. This module encodes exactly what pynetdicom's ``C_STORE_RSP`` message encodes for a
response without optional fields (``tests/integration/test_store_response.py`` compares
the bytes), and says None for anything else, which then goes the upstream way.
"""

from __future__ import annotations

import struct
from typing import Any

C_STORE_RSP_COMMAND_FIELD = 0x8001
NO_DATA_SET = 0x0101
"""(0000,0800) Command Data Set Type: no data set follows."""


def _element(tag: int, value: bytes) -> bytes:
    """One element, implicit VR little endian (PS3.7 6.3.1: always, for command sets)."""
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _uid(value: Any) -> bytes:
    encoded = str(value).encode("ascii")
    return encoded + b"\x00" if len(encoded) % 2 else encoded


def c_store_rsp_command(response: Any) -> bytes | None:
    """The encoded command set of a C-STORE response primitive, or None when it carries
    anything beyond the required elements (error comment, offending element) or lacks one."""
    if response.OffendingElement is not None or response.ErrorComment is not None:
        return None
    if response.MessageIDBeingRespondedTo is None or response.Status is None:
        return None
    try:
        elements = []
        if response.AffectedSOPClassUID is not None:
            elements.append(_element(0x00000002, _uid(response.AffectedSOPClassUID)))
        elements += [
            _element(0x00000100, struct.pack("<H", C_STORE_RSP_COMMAND_FIELD)),
            _element(0x00000120, struct.pack("<H", response.MessageIDBeingRespondedTo)),
            _element(0x00000800, struct.pack("<H", NO_DATA_SET)),
            _element(0x00000900, struct.pack("<H", response.Status)),
        ]
        if response.AffectedSOPInstanceUID is not None:
            elements.append(_element(0x00001000, _uid(response.AffectedSOPInstanceUID)))
    except (UnicodeEncodeError, struct.error):
        return None
    body = b"".join(elements)
    return _element(0x00000000, struct.pack("<I", len(body))) + body
