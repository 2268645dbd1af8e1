"""The worker pool is recycled when idle after worker_max_studies studies, without losing any."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from service.config import load_config
from service.node import Node
from tests.peers import storescu, wait_for
from tests.synthetic import make_study, write_study


def test_pool_recycled_between_studies_and_every_study_processed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(
        None,
        node={"host": "127.0.0.1", "port": 0, "data_dir": tmp_path / "data"},
        study={"stable_seconds": 0.5, "check_interval_seconds": 0.25},
        quant={"worker_max_studies": 1},
        http={"enabled": False},
    )
    node = Node(config)
    node.start()
    caplog.set_level(logging.INFO, logger="hypoxnode.node")
    try:
        uids = []
        for seed in range(3):  # two arrive together, one after the pool was recycled
            study = make_study(field_of_view="pelvis", seed=40 + seed, patient_id=f"POOL{seed}")
            uids.append(str(study.pet[0].StudyInstanceUID))
            assert storescu(write_study(study, tmp_path / f"s{seed}"), node.port,
                            "HYPOXNODE").returncode == 0
            if seed == 1:
                wait_for(lambda: all(node.index.study(u)["state"] == "done" for u in uids),
                         120, "the first two studies processed")
                time.sleep(0.5)
        wait_for(lambda: all(node.index.study(u)["state"] == "done" for u in uids), 120,
                 "every study processed")
    finally:
        node.stop()
    assert "worker pool recycled" in caplog.text
