"""DICOM status codes the node answers with, in one place (PS3.4 Annex B, PS3.7 Annex C)."""

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
"""Storage: refused, out of resources (disk below the free-space floor, write failure)."""
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
"""Storage: the dataset could not be parsed."""
INVALID_UID = 0xC210
"""Storage (Cannot understand, specialised): a required UID is missing or is not a valid UID."""

DESCRIPTIONS = {
    SUCCESS: "Success",
    OUT_OF_RESOURCES: "Refused: out of resources",
    DATASET_DOES_NOT_MATCH_SOP_CLASS: "Error: data set does not match SOP class",
    CANNOT_UNDERSTAND: "Error: cannot understand",
    INVALID_UID: "Error: missing or invalid UID",
}


def describe(status: int | None) -> str:
    """Human-readable text for a status (hex code included)."""
    if status is None:
        return "no status"
    return f"0x{status:04X} {DESCRIPTIONS.get(status, '')}".rstrip()
