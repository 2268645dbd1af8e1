"""Disk floor: below ``node.min_free_mb`` a C-STORE is refused with 0xA700, nothing half-stored.

``hypoxnode serve`` runs as a subprocess with the floor set far above the free space of any
disk; DCMTK ``storescu`` is the scanner.
"""

from __future__ import annotations

import contextlib
import copy
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydicom import examples
from pydicom.uid import generate_uid

from service.config import load_config
from service.receive._pynetdicom.spool_files import FLOOR_CHUNK_BYTES
from service.receive.listener import start_listener
from service.storage.index import Index
from service.storage.store import InstanceStore
from service.synthetic import make_study, write_study
from tests.peers import storescu
from tests.reliability import dimse_statuses, index_rows, start_test_node

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


MB = 1024 * 1024


@contextlib.contextmanager
def _small_disk(directory: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` at ``directory`` (root only; skips where mounting is not
    permitted: the floor is then shown by the test above, not by this one)."""
    directory.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                              str(directory)], capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def _large_ct(path: Path, megabytes: int) -> Path:
    ds = copy.deepcopy(examples.ct)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Rows, ds.Columns = 1024, megabytes * 512  # int16: 1 MB per 512 columns
    ds.PixelData = bytes(megabytes * MB)
    ds.save_as(path, enforce_file_format=True)
    return path


def _free(directory: Path) -> int:
    return shutil.disk_usage(directory).free


def test_three_large_instances_at_the_floor_are_refused_before_they_fill_the_disk(
    tmp_path: Path,
) -> None:
    """Three 40 MB instances at once, the disk 8 MB above the floor: each is refused at its
    start (or within its first chunks), and the disk never goes more than a chunk per
    instance below the floor (before: all three spooled in full, free space 0)."""
    files = [_large_ct(tmp_path / f"big{i}.dcm", 40) for i in range(3)]
    with _small_disk(tmp_path / "disk", 100) as disk:
        config = load_config(None, node={"host": "127.0.0.1", "port": 0, "data_dir": disk})
        index = Index(disk / "index.sqlite")
        floor = _free(disk) - 8 * MB
        store = InstanceStore(disk, min_free_bytes=floor)
        server = start_listener(config, store, index)
        lowest = [_free(disk)]
        sending = threading.Event()

        def watch() -> None:
            while not sending.wait(0.01):  # sample the free space until sending ends
                lowest.append(_free(disk))

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(3) as pool:
                outputs = list(pool.map(
                    lambda f: storescu([f], int(server.server_address[1]), "HYPOXNODE",
                                       extra=["-d", "-nh"]),
                    files))
        finally:
            sending.set()
            watcher.join()
            server.shutdown()
            index.close()
        statuses = [dimse_statuses(o.stdout + o.stderr) for o in outputs]
        spooled = [p for p in store.tmp_dir.iterdir() if p.stat().st_size]
        instances = [p for p in store.instances_dir.rglob("*") if p.is_file()]
    print(f"lowest free {min(lowest) / MB:.1f} MB, floor {floor / MB:.1f} MB")  # pytest -s
    assert statuses == [[OUT_OF_RESOURCES]] * 3, statuses
    assert min(lowest) >= floor - 3 * FLOOR_CHUNK_BYTES, (min(lowest) / MB, floor / MB)
    assert min(lowest) > 0
    assert spooled == [] and instances == []
