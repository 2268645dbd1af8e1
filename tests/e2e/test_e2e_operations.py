"""Operating the node: metrics move, operator commands work, the web page shows the result.

The web page is driven in a real headless Chromium (Debian ``chromium`` + ``chromium-driver``
through Selenium); the screenshot it takes is what docs/status-page.png shows.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from service.synthetic import make_study, write_study
from tests.peers import (
    REPO,
    NodeProcess,
    Orthanc,
    require_tool,
    result_object_count,
    storescu,
    wait_for,
)

pytestmark = pytest.mark.e2e

SCREENSHOT = REPO / "docs" / "status-page.png"


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _get(http_port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{path}", timeout=10) as response:
        return str(response.read().decode())


def _cli(node: NodeProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args, "--config", str(node.config_path)],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )


def test_metrics_operator_commands_and_web_page(
    node_and_pacs: tuple[NodeProcess, Orthanc, int], tmp_path: Path
) -> None:
    node, pacs, http_port = node_and_pacs
    before = _get(http_port, "/metrics")
    study = make_study(field_of_view="pelvis", seed=7)
    study_uid = str(study.pet[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "scanner")
    assert storescu(files, node.port, "HYPOXNODE").returncode == 0

    def delivered() -> bool:
        info = json.loads(_get(http_port, f"/api/studies/{study_uid}"))
        return info["state"] == "done" and len(info["exports"]) == result_object_count(
            info["result"]) and all(e["state"] == "sent" for e in info["exports"])

    wait_for(delivered, 180, "the study processed and its results delivered")
    count = result_object_count(json.loads(_get(http_port, f"/api/studies/{study_uid}"))["result"])

    after = _get(http_port, "/metrics")
    moved = {
        "hypoxnode_instances_received_total": len(files),
        "hypoxnode_studies_processed_total": 1,
        "hypoxnode_exports_sent_total": count,
        'hypoxnode_associations_total{outcome="accepted"}': 1,
        "hypoxnode_processing_seconds_count": 1,
    }
    for name, at_least in moved.items():
        assert _metric(after, name) - _metric(before, name) >= at_least, name

    status = _cli(node, "status")
    assert status.returncode == 0, status.stderr
    assert study_uid in status.stdout and "done" in status.stdout

    resend = _cli(node, "send", study_uid, "ORTHANC")
    assert resend.returncode == 0, resend.stderr
    assert json.loads(resend.stdout)["queued"] == count
    assert _cli(node, "send", study_uid, "NOSUCHPACS").returncode == 2

    reprocess = _cli(node, "reprocess", study_uid)
    assert reprocess.returncode == 0, reprocess.stderr
    wait_for(lambda: json.loads(_get(http_port, f"/api/studies/{study_uid}"))["generation"] == 2
             and json.loads(_get(http_port, f"/api/studies/{study_uid}"))["state"] == "done",
             120, "the study reprocessed")
    wait_for(lambda: len(pacs.instances_by_modality().get("SR", [])) == 2, 60,
             "the re-processed SR in the PACS")

    _check_page_in_chromium(http_port, study_uid, tmp_path)


def _check_page_in_chromium(http_port: int, study_uid: str, tmp_path: Path) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = require_tool("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1600",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=require_tool("chromedriver")))
    try:
        driver.get(f"http://127.0.0.1:{http_port}/")
        table = driver.find_element(By.ID, "studies")
        assert study_uid in table.text and "done" in table.text
        assert "SUVmax" in table.text
        driver.find_element(By.LINK_TEXT, study_uid).click()
        figures = driver.find_element(By.ID, "figures").text
        assert "Lesion 1" in figures
        image = driver.find_element(By.ID, "summary")
        wait_for(lambda: bool(driver.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth > 0", image)),
            20, "the summary image to load")
        assert int(driver.execute_script("return arguments[0].naturalWidth", image)) >= 512
        exports = driver.find_element(By.ID, "exports").text
        assert "ORTHANC" in exports and "sent" in exports
        height = int(driver.execute_script("return document.body.scrollHeight"))
        driver.set_window_size(1280, min(max(height + 40, 800), 2400))
        shot = tmp_path / "status-page.png"
        assert driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 10_000
        if os.environ.get("HYPOXNODE_UPDATE_DOCS") == "1":  # refresh the README picture
            SCREENSHOT.write_bytes(shot.read_bytes())
    finally:
        driver.quit()
