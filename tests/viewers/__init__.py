"""Real DICOM readers for tests/integration/test_viewers_*.py: dcmjs and the prebuilt OHIF
viewer (npm)."""
