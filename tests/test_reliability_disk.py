"""Disk floor: below ``node.min_free_mb`` a C-STORE is refused with 0xA700, nothing half-stored.

``hypoxnode serve`` runs as a subprocess with the floor set far above the free space of any
disk; DCMTK ``storescu`` is the scanner.
"""

from __future__ import annotations

from pathlib import Path

from tests.peers import storescu
from tests.reliability import dimse_statuses, index_rows, start_test_node
from tests.synthetic import make_study, write_study

OUT_OF_RESOURCES = 0xA700


def test_floor_above_free_space_answers_out_of_resources(tmp_path: Path) -> None:
    files = write_study(make_study(field_of_view="pelvis"), tmp_path / "scanner")[:3]
    node = start_test_node(tmp_path / "node", http=False,
                           node_extra="min_free_mb = 1e12")  # an exabyte: above any disk
    try:
        sent = storescu(files, node.port, node.ae_title, extra=["-d", "-nh"])
    finally:
        assert node.stop() == 0, node.log()[-3000:]
    output = sent.stdout + sent.stderr
    assert dimse_statuses(output) == [OUT_OF_RESOURCES] * len(files), output[-3000:]
    assert "0xa700" in output.lower()
    data = node.data_dir
    assert [p for p in (data / "instances").rglob("*") if p.is_file()] == []
    assert list((data / "tmp").iterdir()) == []
    assert index_rows(data, "SELECT * FROM instances") == []
    assert index_rows(data, "SELECT * FROM studies") == []
    assert "free disk space below the floor" in node.log()
