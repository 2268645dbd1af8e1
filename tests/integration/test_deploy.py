"""Deploy files: the systemd unit (systemd-analyze verify), the compose and container files."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.config import load_config
from tests.peers import REPO

DEPLOY = REPO / "deploy"


def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: `make test` installs systemd"
    executable = str(Path(sys.executable).parent / "hypoxnode")  # this environment's install
    assert Path(executable).exists(), executable
    # The unit as shipped, with ExecStart pointing at this checkout's install of hypoxnode
    # instead of /opt/hypoxnode (systemd-analyze checks that the binary exists).
    unit = (DEPLOY / "hypoxnode.service").read_text()
    unit = unit.replace("/opt/hypoxnode/.venv/bin/hypoxnode", executable)
    target = tmp_path / "hypoxnode.service"
    target.write_text(unit)
    result = subprocess.run([analyze, "verify", "--man=no", str(target)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "hypoxnode.service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_systemd_unit_is_hardened() -> None:
    unit = (DEPLOY / "hypoxnode.service").read_text()
    for setting in ("User=hypoxnode", "NoNewPrivileges=yes", "ProtectSystem=strict",
                    "ReadWritePaths=/var/lib/hypoxnode", "ProtectHome=yes", "KillSignal=SIGTERM",
                    "LimitNOFILE=65536"):
        assert setting in unit


def test_compose_file_parses_and_its_environment_is_a_valid_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(compose["services"]) == {"hypoxnode", "orthanc"}
    service = compose["services"]["hypoxnode"]
    assert service["build"]["dockerfile"] == "deploy/Containerfile"
    assert (REPO / service["build"]["context"].replace("..", ".")).exists()
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, str(value))
    config = load_config()
    assert config.destinations[0].host == "orthanc"
    orthanc_env = compose["services"]["orthanc"]["environment"]
    assert config.destinations[0].ae_title == orthanc_env["ORTHANC__DICOM_AET"]
    assert config.destinations[0].port == int(orthanc_env["ORTHANC__DICOM_PORT"])


def test_containerfile_copies_what_exists() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    for source in re.findall(r"^COPY (\S+)", text, re.MULTILINE):
        for part in source.split():
            assert (REPO / part).exists(), part
    assert 'ENTRYPOINT ["hypoxnode", "serve"]' in text
