"""Receiving: the DICOM port (C-ECHO, C-STORE), who may connect and how many, the receiver processes
the node hands connections to, and instance identity checks. Everything that overrides
pynetdicom's internals is fenced in ``_pynetdicom``."""
