"""A throwaway PostgreSQL cluster the tests own (Debian's ``postgresql`` package binaries).

``initdb`` into a temporary folder, the server on a Unix socket in that folder only (no TCP),
stopped by ``pg_ctl stop -m immediate`` at the end and the folder removed. As root the server
runs as the ``postgres`` user (``initdb`` refuses root). ``fsync=off``: the tests kill nodes,
never the database host.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass
class PostgresCluster:
    """A running throwaway cluster."""

    directory: Path
    port: int
    user: str

    def url(self, database: str) -> str:
        """libpq URL of ``database`` in this cluster."""
        return f"postgresql:///{database}?host={self.directory}&port={self.port}&user={self.user}"

    def restart(self) -> None:
        """Stop at once (``-m immediate``: every connection cut, as in a crash) and start."""
        _run(self, [_binary("pg_ctl"), "-D", str(self.directory / "data"), "-m", "immediate",
                    "-l", str(self.directory / "log"), "-w", "restart", "-o", self._options])

    @property
    def _options(self) -> str:
        return (f"-k {self.directory} -p {self.port} -c listen_addresses='' -c fsync=off"
                " -c max_connections=100")

    def create_database(self, name: str) -> str:
        """Create ``name``; its URL."""
        _run(self, [_binary("createdb"), "-h", str(self.directory), "-p", str(self.port),
                    "-U", self.user, name])
        return self.url(name)


def _binary(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"{name} not found: install the Debian package postgresql"
                                " (make system-deps does)")
    return found[-1]


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(cluster: PostgresCluster | None, command: list[str]) -> None:
    result = subprocess.run(_as_owner(command), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stdout}{result.stderr}")


@contextlib.contextmanager
def postgres_cluster(port: int = 55432) -> Iterator[PostgresCluster]:
    """Start a cluster on a Unix socket; stop it and remove its folder afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="hypoxnode-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    directory.chmod(0o700)
    user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "postgres")
    data = directory / "data"
    cluster = PostgresCluster(directory, port, user)
    started = False
    try:
        _run(None, [_binary("initdb"), "-D", str(data), "-U", user, "-A", "trust",
                    "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])
        _run(None, [_binary("pg_ctl"), "-D", str(data), "-l", str(directory / "log"), "-w",
                    "-o", cluster._options, "start"])
        started = True
        yield cluster
    finally:
        if started:
            _run(None, [_binary("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(directory, ignore_errors=True)
