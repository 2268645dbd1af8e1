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


@pytest.mark.parametrize(("shipped", "instance"), [
    ("hypoxnode.service", "hypoxnode.service"),
    ("hypoxnode@.service", "hypoxnode@node1.service"),
])
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path, shipped: str,
                                                    instance: str) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze missing: `make test` installs systemd"
    executable = str(Path(sys.executable).parent / "hypoxnode")  # this environment's install
    assert Path(executable).exists(), executable
    # The unit as shipped, with ExecStart pointing at this checkout's install of hypoxnode
    # instead of /opt/hypoxnode (systemd-analyze checks that the binary exists).
    unit = (DEPLOY / shipped).read_text()
    unit = unit.replace("/opt/hypoxnode/.venv/bin/hypoxnode", executable)
    (tmp_path / shipped).write_text(unit)
    target = tmp_path / instance
    if shipped != instance:  # a template is verified as one of its instances
        target.symlink_to(tmp_path / shipped)
    result = subprocess.run([analyze, "verify", "--man=no", str(target)],
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "hypoxnode" in line and ".service" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


@pytest.mark.parametrize("shipped", ["hypoxnode.service", "hypoxnode@.service"])
def test_systemd_unit_is_hardened(shipped: str) -> None:
    unit = (DEPLOY / shipped).read_text()
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


def test_cluster_compose_runs_three_distinct_nodes_on_one_database(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compose = yaml.safe_load((DEPLOY / "cluster" / "compose.yaml").read_text())
    nodes = {name: s for name, s in compose["services"].items() if name.startswith("node")}
    assert len(nodes) == 3
    configs = []
    for service in nodes.values():
        with monkeypatch.context() as env:
            for key, value in service["environment"].items():
                env.setenv(key, str(value))
            configs.append(load_config())
    assert {c.cluster.node_name for c in configs} == {"node1", "node2", "node3"}
    assert len({c.cluster.database_url for c in configs}) == 1
    assert all(c.cluster.enabled and c.node.proxy_from for c in configs)
    assert all(c.destinations[0].host == "orthanc" for c in configs)


def test_cluster_haproxy_configuration_is_valid(tmp_path: Path) -> None:
    """``haproxy -c`` on the shipped file, the compose service names replaced by loopback."""
    text = (DEPLOY / "cluster" / "haproxy.cfg").read_text()
    text = re.sub(r"server (node\d) node\d:", r"server \1 127.0.0.1:", text)
    (tmp_path / "haproxy.cfg").write_text(text)
    for shipped in (tmp_path / "haproxy.cfg", DEPLOY / "haproxy.cfg"):
        result = subprocess.run(["haproxy", "-c", "-f", str(shipped)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
