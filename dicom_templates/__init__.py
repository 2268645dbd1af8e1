"""Builders of the DICOM objects the node sends back: the SEG, the TID 1500 SR (and its
follow-up comparison) and the rendered summary (Secondary Capture), with their codes, colours
and deterministic UIDs. They build data sets; writing and sending is the service's job."""
