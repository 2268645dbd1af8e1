"""Real DICOM readers for tests/test_viewers_*.py (dcmjs and the prebuilt OHIF viewer, npm)."""
