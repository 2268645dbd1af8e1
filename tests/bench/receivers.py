"""The receivers compared by the benchmark, and the one sender they all get: DCMTK ``storescu``.

Every receiver runs as a subprocess on loopback, is started fresh for each measured run (so
none deduplicates a study it has already seen) and is stopped by its PID. Readiness is a
C-ECHO (or Orthanc's REST API), never a bare sleep.

- ``hypoxnode``: ``python -m service serve`` with the production durability (fsync of file and
  directory, SQLite ``synchronous=FULL``), run from ``code_dir`` so a clean snapshot of the
  code can be measured while the working tree is being edited.
- ``storescp``: DCMTK ``storescp --fork -od DIR`` as installed (no fsync).
- ``orthanc``: Orthanc as installed (index in SQLite, storage synchronised per file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers import echoscu, free_port, require_tool, start_orthanc, stop_process, wait_for

RECEIVERS = ("hypoxnode", "storescp", "orthanc")
"""The receivers of ``make bench``; ``pynetdicom-bare`` (see ``bare_scp.py``) is a reference."""
SENDER_AE = "BENCHSCU"


@dataclass
class Running:
    """One started receiver."""

    kind: str
    ae_title: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    http_port: int | None = None
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        """PID of the receiver's main process."""
        return int(self.process.pid)

    def log(self) -> str:
        """The receiver's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 30 s; returns the exit status."""
        return stop_process(self.process)


def node_config_toml(
    data_dir: Path,
    port: int,
    *,
    stable_seconds: float = 30.0,
    check_interval_seconds: float = 2.0,
    export_interval_seconds: float = 2.0,
    destination: tuple[str, int] | None = None,
) -> str:
    """A ``hypoxnode serve`` configuration: production defaults except ports and paths.

    The HTTP interface stays on (as in production) on an ephemeral loopback port; logs are JSON
    lines so the benchmark can read millisecond timestamps.
    """
    text = f"""
[node]
ae_title = "HYPOXNODE"
host = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"
[study]
stable_seconds = {stable_seconds}
check_interval_seconds = {check_interval_seconds}
[export]
check_interval_seconds = {export_interval_seconds}
[http]
host = "127.0.0.1"
port = 0
[log]
level = "INFO"
json_lines = true
"""
    if destination is not None:
        text += f"""
[[destinations]]
ae_title = "{destination[0]}"
host = "127.0.0.1"
port = {destination[1]}
"""
    return text


def start_hypoxnode(
    workdir: Path,
    code_dir: Path,
    config_toml: str,
    port: int,
    *,
    variant: str = "",
    env_overrides: dict[str, str] | None = None,
) -> Running:
    """``python -m service serve`` from ``code_dir``; waits until it answers C-ECHO.

    ``variant`` (see :mod:`tests.bench.node_variant`) starts the node through that launcher
    with the named levers patched in; ``env_overrides`` adds ``HYPOXNODE_*`` settings.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "hypoxnode.toml"
    config_path.write_text(config_toml)
    log_path = workdir / "node.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HYPOXNODE_", "HXBENCH_"))}
    env["PYTHONPATH"] = str(code_dir)
    env.update(env_overrides or {})
    launcher = ["-m", "service"]
    if variant:
        env["HXBENCH_VARIANT"] = variant
        launcher = [str(Path(__file__).with_name("node_variant.py"))]
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, *launcher, "serve", "--config", str(config_path)],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=code_dir, env=env,
        )
    running = Running("hypoxnode", "HYPOXNODE", port, workdir, process, log_path)
    _await_echo(running, 60)
    # Measure the node as it runs, not while its receiver processes are still starting.
    wait_for(lambda: "receiving processes take connections" in running.log()
             or "receiving in this process" in running.log(), 60,
             "every receiving process to take connections")
    return running


def start_storescp(workdir: Path, port: int) -> Running:
    """DCMTK ``storescp`` (one forked child per association) writing to ``workdir/out``."""
    out = workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "storescp.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [require_tool("storescp"), "--fork", "-aet", "STORESCP", "-od", str(out),
             str(port)],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir,
        )
    running = Running("storescp", "STORESCP", port, workdir, process, log_path)
    _await_echo(running, 30)
    return running


def start_bare_scp(workdir: Path, port: int, code_dir: Path | None = None,
                   prompt: bool = False) -> Running:
    """The bare pynetdicom SCP of ``bare_scp.py`` writing to ``workdir/out`` (no fsync).

    ``prompt``: with the event-driven reactor of ``service/receive/_pynetdicom/prompt_reactor.py``
    in
    ``code_dir``.
    """
    out = workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "bare.log"
    env = dict(os.environ)
    if code_dir is not None:
        env["PYTHONPATH"] = str(code_dir)
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("bare_scp.py")), str(port), str(out),
             "BARESCP", *(["--prompt"] if prompt else [])],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=workdir, env=env,
        )
    kind = "pynetdicom-bare-prompt" if prompt else "pynetdicom-bare"
    running = Running(kind, "BARESCP", port, workdir, process, log_path)
    _await_echo(running, 30)
    return running


def start_orthanc_receiver(workdir: Path, port: int) -> Running:
    """Orthanc with a private configuration (see :func:`tests.peers.start_orthanc`)."""
    orthanc = start_orthanc(workdir, "ORTHANC", dicom_port=port)
    running = Running("orthanc", "ORTHANC", port, workdir, orthanc.process, orthanc.log_path,
                      http_port=orthanc.http_port, extra={"orthanc": orthanc})
    _await_echo(running, 30)
    return running


def start_receiver(kind: str, workdir: Path, code_dir: Path) -> Running:
    """Start a fresh receiver of ``kind`` (one of :data:`RECEIVERS`) on a free port."""
    port = free_port()
    if kind == "hypoxnode":
        config = node_config_toml(workdir / "data", port)
        return start_hypoxnode(workdir, code_dir, config, port)
    if kind == "storescp":
        return start_storescp(workdir, port)
    if kind == "orthanc":
        return start_orthanc_receiver(workdir, port)
    if kind == "pynetdicom-bare":
        return start_bare_scp(workdir, port, code_dir)
    if kind == "pynetdicom-bare-prompt":
        return start_bare_scp(workdir, port, code_dir, prompt=True)
    raise ValueError(f"kind must be one of {RECEIVERS}, not {kind!r}")


def stored_count(running: Running) -> int:
    """How many instances the receiver holds now."""
    if running.kind == "hypoxnode":
        root = running.workdir / "data" / "instances"
        return sum(1 for _ in root.rglob("*.dcm")) if root.is_dir() else 0
    if running.kind in ("storescp", "pynetdicom-bare", "pynetdicom-bare-prompt"):
        return sum(1 for p in (running.workdir / "out").iterdir() if p.is_file())
    orthanc = running.extra["orthanc"]
    stats = orthanc.get("/statistics")  # type: ignore[attr-defined]
    return int(stats["CountInstances"])


def _await_echo(running: Running, timeout_s: float) -> None:
    def ready() -> bool:
        if running.process.poll() is not None:
            raise RuntimeError(f"{running.kind} exited early:\n{running.log()[-3000:]}")
        return echoscu(running.port, running.ae_title, calling_ae=SENDER_AE)

    try:
        wait_for(ready, timeout_s, f"{running.kind} to answer C-ECHO", interval_s=0.2)
    except BaseException:
        running.stop()
        raise


@dataclass
class SendResult:
    """One send of a study by ``associations`` parallel ``storescu`` processes."""

    seconds: float
    started_at: float
    finished_at: float
    return_codes: list[int]
    errors: list[str]


def send_study(
    files: list[Path],
    port: int,
    called_ae: str,
    *,
    associations: int = 1,
    tcp_nodelay: bool = False,
    timeout_s: float = 900.0,
) -> SendResult:
    """Send ``files`` with ``associations`` parallel ``storescu`` processes, one association each.

    Files are dealt round-robin (``files[i::n]``), so each process sends a quarter of the CT
    and a quarter of the PET. ``tcp_nodelay`` sets ``TCP_NODELAY=1`` in the senders' environment
    (DCMTK's run-time switch that disables Nagle's algorithm; see DCMTK ``envvars.txt``).
    The clock runs from the first process start to the last exit.
    """
    if associations < 1:
        raise ValueError("associations must be >= 1")
    binary = require_tool("storescu")
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if tcp_nodelay:
        env["TCP_NODELAY"] = "1"
    shares = [files[i::associations] for i in range(associations)]
    started = time.time()
    t0 = time.perf_counter()
    processes = [
        subprocess.Popen(
            [binary, "-aet", SENDER_AE, "-aec", called_ae, "127.0.0.1", str(port),
             *map(str, share)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        for share in shares
    ]
    codes: list[int] = []
    errors: list[str] = []
    try:
        for process in processes:
            _, err = process.communicate(timeout=timeout_s)
            codes.append(int(process.returncode))
            if process.returncode != 0:
                errors.append(err.decode(errors="replace")[-1000:])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    seconds = time.perf_counter() - t0
    return SendResult(seconds, started, started + seconds, codes, errors)


def remove_tree(path: Path) -> None:
    """Delete a run's working directory (receivers are stopped first)."""
    shutil.rmtree(path, ignore_errors=True)
