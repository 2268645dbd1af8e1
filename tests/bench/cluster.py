"""Ingest into a cluster: haproxy in front of three nodes on one PostgreSQL and one folder,
12 associations, against one embedded node (SQLite) with 4 associations, side by side.

Each run starts everything fresh: the single node, then a throwaway PostgreSQL, three nodes in
cluster mode and haproxy (``mode tcp``, least connections). The study is sent by parallel
``storescu`` processes; the clock runs from the first sender's start to the last one's exit,
and every instance must be indexed. All processes share this machine's cores, so the ratio
says what the cluster's coordination costs here, not what three machines would give.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from tests.bench.ingest import measure_once
from tests.bench.receivers import (
    Running,
    node_config_toml,
    remove_tree,
    send_study,
    start_hypoxnode,
)
from tests.peers import free_port, start_haproxy
from tests.postgres import postgres_cluster

NODES = 3
CLUSTER_ASSOCIATIONS = 12
SINGLE_ASSOCIATIONS = 4


def _cluster_once(files: list[Path], workdir: Path, code_dir: Path) -> dict[str, Any]:
    """One send of ``files`` through haproxy to three fresh cluster nodes."""
    with postgres_cluster(port=55441) as postgres:
        url = postgres.create_database("bench")
        ports = [free_port() for _ in range(NODES)]
        proxy = start_haproxy(workdir / "haproxy", ports, proxy_protocol=False)
        nodes: list[Running] = []
        try:
            for number, port in enumerate(ports, 1):
                toml = node_config_toml(workdir / "shared", port) + (
                    f'[cluster]\ndatabase_url = "{url}"\nnode_id = "node{number}"\n')
                nodes.append(start_hypoxnode(workdir / f"node{number}", code_dir, toml, port))
            result = send_study(files, proxy.port, "HYPOXNODE",
                                associations=CLUSTER_ASSOCIATIONS)
            with psycopg.connect(url) as db:
                row = db.execute("SELECT count(*) FROM instances").fetchone()
            stored = int(row[0]) if row is not None else 0
        finally:
            for node in nodes:
                node.stop()
            proxy.stop()
    error = "; ".join(result.errors)[-500:] if result.errors else ""
    if stored != len(files):
        error = (error + f"; indexed {stored} of {len(files)}").strip("; ")
    return {"seconds": round(result.seconds, 3),
            "instances_per_s": round(len(files) / result.seconds, 1),
            "stored": stored, "ok": not error, "error": error}


def cluster_ingest(files: list[Path], workdir: Path, code_dir: Path, *, runs: int,
                   progress: Callable[[str], None] = print) -> dict[str, Any]:
    """``runs`` alternating pairs: one node with 4 associations, three with 12."""
    rows = []
    for run in range(runs):
        single = measure_once("hypoxnode", files, workdir / f"single-{run}", code_dir,
                              mode="default", associations=SINGLE_ASSOCIATIONS, run=run)
        cluster = _cluster_once(files, workdir / f"cluster-{run}", code_dir)
        remove_tree(workdir / f"cluster-{run}")
        rows.append({"run": run, "single_per_s": single.instances_per_s,
                     "single_ok": single.ok, "cluster_per_s": cluster["instances_per_s"],
                     "cluster_ok": cluster["ok"], "cluster_error": cluster["error"]})
        progress(f"  cluster run {run + 1}/{runs}: one node x{SINGLE_ASSOCIATIONS} "
                 f"{single.instances_per_s:7.1f}/s, {NODES} nodes x{CLUSTER_ASSOCIATIONS} "
                 f"{cluster['instances_per_s']:7.1f}/s"
                 + ("" if cluster["ok"] else f"  FAILED: {cluster['error']}"))
    single_median = statistics.median(r["single_per_s"] for r in rows)
    cluster_median = statistics.median(r["cluster_per_s"] for r in rows)
    return {
        "instances": len(files), "runs": rows, "nodes": NODES,
        "single_associations": SINGLE_ASSOCIATIONS,
        "cluster_associations": CLUSTER_ASSOCIATIONS,
        "single_median_per_s": single_median, "cluster_median_per_s": cluster_median,
        "ratio_cluster_to_single": round(cluster_median / single_median, 2),
        "all_ok": all(r["single_ok"] and r["cluster_ok"] for r in rows),
    }


def markdown_lines(cluster: dict[str, Any]) -> list[str]:
    """The report's cluster section."""
    return [
        f"## Cluster ingest ({cluster['instances']} instances)",
        "",
        f"| receiver | associations | instances/s (median of {len(cluster['runs'])}) |",
        "|---|---:|---:|",
        f"| one node, SQLite | {cluster['single_associations']} | "
        f"{cluster['single_median_per_s']:.1f} |",
        f"| {cluster['nodes']} nodes behind haproxy, PostgreSQL | "
        f"{cluster['cluster_associations']} | {cluster['cluster_median_per_s']:.1f} |",
        "",
        f"Ratio cluster / one node: {cluster['ratio_cluster_to_single']:.2f} "
        f"({'every instance indexed' if cluster['all_ok'] else '**a run failed**'}). "
        "All processes share this machine's cores: the ratio is the cost of the cluster's "
        "coordination here, not what three machines give.",
        "",
    ]
