"""DICOM status codes the node answers with, in one place (PS3.4 Annex B, PS3.7 Annex C).

The meaning of a code is pynetdicom's (its Storage Service Class and general status tables);
only the specialisations of 0xC000 "Cannot understand" this node uses (0xC210-0xC212, PS3.4
B.2.3 leaves their meaning to the implementation) are described here.
"""

from pynetdicom.status import GENERAL_STATUS, STORAGE_SERVICE_CLASS_STATUS

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
"""Storage: refused, out of resources (disk below the free-space floor, write failure)."""
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
"""Storage: the dataset could not be parsed."""
INVALID_UID = 0xC210
"""Storage (Cannot understand, specialised): a required UID is missing or is not a valid UID."""
SOP_INSTANCE_MISMATCH = 0xC211
"""Storage (Cannot understand, specialised): the data set's SOPInstanceUID is not the
command's AffectedSOPInstanceUID."""
INSTANCE_CONFLICT = 0xC212
"""Storage (Cannot understand, specialised): the SOPInstanceUID is already stored with other
content, or in another study or series; the stored instance is kept."""
SOP_CLASS_NOT_SUPPORTED = 0x0122
"""Refused: SOP class not supported (PS3.7 C.4.2), e.g. a C-STORE on the Verification
context."""

SPECIALISED = {
    INVALID_UID: "Error: missing or invalid UID",
    SOP_INSTANCE_MISMATCH: "Error: data set SOPInstanceUID differs from the command's",
    INSTANCE_CONFLICT: "Error: SOPInstanceUID already stored with other content",
}
"""What this node means by the codes pynetdicom can only call "Cannot Understand"."""


def describe(status: int | None) -> str:
    """Human-readable text for a status (hex code included)."""
    if status is None:
        return "no status"
    text = SPECIALISED.get(status)
    if text is None:
        entry = STORAGE_SERVICE_CLASS_STATUS.get(status) or GENERAL_STATUS.get(status)
        text = (f"{entry[0]}: {entry[1]}" if entry[1] else entry[0]) if entry else ""
    return f"0x{status:04X} {text}".rstrip()
