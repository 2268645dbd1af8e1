"""Real DICOM peers for tests: Orthanc as the PACS, ``hypoxnode serve``, DCMTK tools.

Every process is started here and stopped by its PID in the fixture's teardown. Readiness is
awaited with a probe (REST call, C-ECHO) and a deadline, never a bare sleep.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def result_object_count(result: dict[str, Any]) -> int:
    """How many objects the node sends for a result (its JSON document): the regions SEG, one
    SEG per hypoxic threshold at which some lesion has voxels, the SR and the summary."""
    levels = {float(sub["threshold"]) for lesion in result.get("lesions") or []
              for sub in lesion.get("hypoxic", []) if float(sub["volume_ml"]) > 0}
    return 3 + len(levels)


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(probe: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2
             ) -> None:
    """Poll ``probe`` until it is true; TimeoutError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(interval_s)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def stays(probe: Callable[[], bool], duration_s: float, what: str,
          interval_s: float = 0.2) -> None:
    """Poll ``probe`` for ``duration_s``: AssertionError naming ``what`` as soon as it is false
    (a thing that must not happen is checked all along, not once at the end)."""
    deadline = time.monotonic() + duration_s
    while True:
        assert probe(), f"{what} did not hold"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval_s)


def require_tool(name: str) -> str:
    """Path of a required external tool; fails (not skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run `make test` (it installs it as root)")
    return path


def echoscu(port: int, called_ae: str, calling_ae: str = "ECHOSCU",
            extra: list[str] | None = None) -> bool:
    """True when DCMTK echoscu gets a C-ECHO success from 127.0.0.1:port.

    ``extra``: more echoscu options, e.g. ``["+tls", KEY, CERT, "+cf", CA]``.
    """
    result = subprocess.run(
        [require_tool("echoscu"), "-aet", calling_ae, "-aec", called_ae, "-to", "5",
         *(extra or []), "127.0.0.1", str(port)],
        capture_output=True, timeout=30,
    )
    return result.returncode == 0


def storescu(files: list[Path], port: int, called_ae: str, calling_ae: str = "SCANNER",
             extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Send files with DCMTK storescu in one association."""
    return subprocess.run(
        [require_tool("storescu"), "-aet", calling_ae, "-aec", called_ae, *(extra or []),
         "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=600,
    )


ORTHANC_DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


@dataclass
class Orthanc:
    """A real Orthanc started for one test, reachable on loopback."""

    ae_title: str
    dicom_port: int
    http_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.loads(response.read())

    def get_bytes(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return bytes(response.read())

    def alive(self) -> bool:
        try:
            self.get("/system")
            return True
        except (urllib.error.URLError, ConnectionError, OSError):
            return False

    def instances_by_modality(self) -> dict[str, list[str]]:
        """Instance IDs grouped by the Modality of their series."""
        out: dict[str, list[str]] = {}
        for series_id in self.get("/series"):
            series = self.get(f"/series/{series_id}")
            modality = series["MainDicomTags"].get("Modality", "")
            out.setdefault(modality, []).extend(series["Instances"])
        return out

    def stop(self) -> None:
        stop_process(self.process)


def start_orthanc(workdir: Path, ae_title: str = "ORTHANC", *,
                  allow_any_store: bool = True, dicom_port: int | None = None,
                  modalities: dict[str, list[Any]] | None = None,
                  dicomweb: bool = False) -> Orthanc:
    """Start Orthanc with a private config; ``allow_any_store=False`` refuses unknown AEs.

    ``modalities``: Orthanc's ``DicomModalities`` (name -> [AE title, host, port]), the peers
    it answers C-FIND from and moves studies to (C-MOVE). The storage stays in ``workdir``, so
    an Orthanc started again on the same folder holds what the last one held.
    ``dicomweb``: load the DICOMweb plugin (Debian ``orthanc-dicomweb``) at ``/dicom-web/``.
    """
    binary = require_tool("Orthanc")
    workdir.mkdir(parents=True, exist_ok=True)
    dicom_port = dicom_port or free_port()
    http_port = free_port()
    config = {
        "Name": "hypoxnode-test-pacs",
        "StorageDirectory": str(workdir / "storage"),
        "IndexDirectory": str(workdir / "storage"),
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAlwaysAllowStore": allow_any_store,
        "DicomCheckCalledAet": True,
        "DicomModalities": modalities or {},
        "Plugins": [],
        "StorageCompression": False,
        "HttpServerEnabled": True,
    }
    if dicomweb:
        config["Plugins"] = [ORTHANC_DICOMWEB_PLUGIN]
        config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
    config_path = workdir / "orthanc.json"
    config_path.write_text(json.dumps(config))
    log_path = workdir / "orthanc.log"
    process = subprocess.Popen(
        [binary, str(config_path)], stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    orthanc = Orthanc(ae_title, dicom_port, http_port, process, log_path)
    try:
        wait_for(orthanc.alive, 60, "Orthanc's REST API")
    except TimeoutError:
        orthanc.stop()
        raise TimeoutError(f"Orthanc did not start: {log_path.read_text()[-2000:]}") from None
    return orthanc


@dataclass
class NodeProcess:
    """``hypoxnode serve`` running as a subprocess."""

    process: subprocess.Popen[bytes]
    port: int
    ae_title: str
    config_path: Path
    data_dir: Path
    log_path: Path
    http_port: int | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.process)

    def kill(self) -> int:
        """SIGKILL, as the OOM killer or a power cut would; returns the exit status."""
        if self.process.poll() is None:
            self.process.kill()
        return int(self.process.wait(30))


def start_node(workdir: Path, config_toml: str, port: int, ae_title: str = "HYPOXNODE",
               env: dict[str, str] | None = None, echo_extra: list[str] | None = None,
               echo_port: int | None = None) -> NodeProcess:
    """Write ``config_toml`` and start ``hypoxnode serve`` on it; wait for C-ECHO.

    ``echo_extra``: options of the readiness echoscu (TLS options for a TLS node).
    ``echo_port``: where the readiness echoscu connects (a load balancer in front of the
    node); the node's own ``port`` by default.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "hypoxnode.toml"
    config_path.write_text(config_toml)
    log_path = workdir / "node.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "serve", "--config", str(config_path)],
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT, cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    node = NodeProcess(process, port, ae_title, config_path, workdir / "data", log_path)

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"hypoxnode serve exited early:\n{node.log()[-3000:]}")
        return echoscu(echo_port or port, ae_title, extra=echo_extra)

    try:
        wait_for(ready, 60, "hypoxnode serve to answer C-ECHO", interval_s=0.5)
    except TimeoutError:
        node.stop()
        raise
    return node


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    """SIGTERM, wait, then SIGKILL if needed; returns the exit status."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return int(process.returncode)


@dataclass
class Haproxy:
    """A real haproxy (Debian package) in ``mode tcp`` in front of nodes, sending PROXY v2."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def stop(self) -> None:
        stop_process(self.process)


def start_haproxy(workdir: Path, backends: list[int], port: int | None = None,
                  proxy_protocol: bool = True) -> Haproxy:
    """haproxy on loopback ``port`` balancing over the node ports ``backends`` (fewest
    connections first), with ``send-proxy-v2`` unless ``proxy_protocol`` is False
    (``deploy/haproxy.cfg`` is the production form); foreground, by PID."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    options = " send-proxy-v2 check check-send-proxy inter 500ms" if proxy_protocol \
        else " check inter 500ms"
    servers = "\n".join(f"    server node{i} 127.0.0.1:{backend}{options}"
                        for i, backend in enumerate(backends, 1))
    config = workdir / "haproxy.cfg"
    config.write_text(f"""global
    maxconn 256
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend dicom
    bind 127.0.0.1:{port}
    default_backend nodes
backend nodes
    balance leastconn
{servers}
""")
    log_path = workdir / "haproxy.log"
    process = subprocess.Popen([require_tool("haproxy"), "-db", "-f", str(config)],
                               stdout=log_path.open("ab"), stderr=subprocess.STDOUT)
    proxy = Haproxy(process, port, log_path)

    def listening() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited: {log_path.read_text()[-2000:]}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, 20, "haproxy to listen")
    except TimeoutError:
        proxy.stop()
        raise
    return proxy
