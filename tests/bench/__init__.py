"""``make bench``: ingest throughput, end-to-end latency and memory of hypoxnode, measured
side by side with DCMTK ``storescp`` and Orthanc on loopback.

Scripts only: nothing here is collected by pytest (no ``test_*.py``). Entry point:
``python -m tests.bench.run_bench [--quick]``.
"""
