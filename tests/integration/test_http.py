"""The HTTP interface of a running node: health, metrics, API, token."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import examples

from service.node import Node
from tests.peers import storescu, wait_for
from tests.reliability import start_in_process_node


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    running = start_in_process_node(tmp_path)
    yield running
    running.stop()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_health_status_and_metrics_move(node: Node, tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{node.http_port}"
    status, body = _get(base + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    _, before = _get(base + "/metrics")
    path = tmp_path / "ct.dcm"
    examples.ct.save_as(path)
    assert storescu([path], node.port, "HYPOXNODE").returncode == 0
    # Receiver processes send their counts to the node process as associations end
    wait_for(lambda: _metric(_get(base + "/metrics")[1].decode(),
                             "hypoxnode_instances_received_total")
             > _metric(before.decode(), "hypoxnode_instances_received_total"), 5,
             "/metrics to count the instance")
    _, after = _get(base + "/metrics")
    for name in ("hypoxnode_instances_received_total", "hypoxnode_received_bytes_total"):
        assert _metric(after.decode(), name) > _metric(before.decode(), name)
    assert _metric(after.decode(), 'hypoxnode_associations_total{outcome="accepted"}') >= 1
    studies = json.loads(_get(base + "/api/studies")[1])
    assert [s["state"] for s in studies] == ["receiving"]
    assert studies[0]["instances"] == 1
    status, page = _get(base + "/")
    assert status == 200 and studies[0]["study_instance_uid"].encode() in page
    assert _get(base + "/api/studies/1.2.3.4")[0] == 404
    assert _get(base + "/api/studies/..%2F..%2Fetc")[0] == 404


def test_token_required_beyond_loopback(tmp_path: Path) -> None:
    node = start_in_process_node(tmp_path, host="0.0.0.0", token="s3cret-token")
    try:
        base = f"http://127.0.0.1:{node.http_port}"
        assert _get(base + "/api/studies")[0] == 401
        assert _get(base + "/")[0] == 401
        assert _get(base + "/metrics")[0] == 401
        assert _get(base + "/api/studies", token="wrong")[0] == 401
        assert _get(base + "/api/studies", token="s3cret-token")[0] == 200
        assert _get(base + "/?token=s3cret-token")[0] == 200
        assert _get(base + "/healthz")[0] == 200  # probes need no token
    finally:
        node.stop()
