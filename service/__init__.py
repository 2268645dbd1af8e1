"""hypoxnode's DICOM node: receive, store, decide when a study is complete, route, process,
export and report. ``node.py`` wires the stages together; each stage is a subpackage (see
``docs/ARCHITECTURE.md``)."""
