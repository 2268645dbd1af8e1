"""DICOM status codes the node answers with, in one place (PS3.4 Annex B, PS3.7 Annex C)."""

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

DESCRIPTIONS = {
    SUCCESS: "Success",
    OUT_OF_RESOURCES: "Refused: out of resources",
    DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: data set does not match SOP class",
    CANNOT_UNDERSTAND: "Error: cannot understand",
    INVALID_UID: "Error: missing or invalid UID",
    SOP_INSTANCE_MISMATCH: "Error: data set SOPInstanceUID differs from the command's",
    INSTANCE_CONFLICT: "Error: SOPInstanceUID already stored with other content",
    SOP_CLASS_NOT_SUPPORTED: "Refused: SOP class not supported",
}


def describe(status: int | None) -> str:
    """Human-readable text for a status (hex code included)."""
    if status is None:
        return "no status"
    return f"0x{status:04X} {DESCRIPTIONS.get(status, '')}".rstrip()
