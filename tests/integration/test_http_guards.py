"""The HTTP interface refuses what a web page in the user's browser could make it do:
DNS rebinding (a foreign Host) and cross-site requests that change state, even on loopback
without a token; with a token, the cookie holds no token and is scoped to the node's port."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.node import Node
from service.report.http_api import cookie_name, session_value
from tests.reliability import start_in_process_node


def _request(port: int, method: str, path: str, headers: dict[str, str]
             ) -> tuple[int, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.putrequest(method, path, skip_host=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    running = start_in_process_node(tmp_path)
    yield running
    running.stop()


def test_dns_rebinding_gets_421(node: Node) -> None:
    port = node.http_port
    assert port is not None
    own = {"Host": f"127.0.0.1:{port}"}
    assert _request(port, "GET", "/api/studies", own)[0] == 200
    assert _request(port, "GET", "/api/studies", {"Host": f"localhost:{port}"})[0] == 200
    assert _request(port, "GET", "/api/studies", {"Host": "attacker.example"})[0] == 421
    assert _request(port, "GET", "/", {"Host": f"attacker.example:{port}"})[0] == 421


def test_cross_site_state_change_gets_403(node: Node) -> None:
    port = node.http_port
    assert port is not None
    path = "/api/studies/1.2.3/reprocess"
    host = f"127.0.0.1:{port}"
    # a form on a foreign page posting to the node: refused before anything runs
    foreign = {"Host": host, "Origin": "http://attacker.example",
               "Content-Type": "application/x-www-form-urlencoded", "Content-Length": "0"}
    assert _request(port, "POST", path, foreign)[0] == 403
    assert _request(port, "POST", path, {"Host": host, "Sec-Fetch-Site": "cross-site",
                                         "Content-Length": "0"})[0] == 403
    assert _request(port, "POST", path, {"Host": host, "Origin": "null",
                                         "Content-Length": "0"})[0] == 403
    # the same request from the node's own page, or from a tool without Origin, goes through
    # (404: no such study)
    same = {"Host": host, "Origin": f"http://{host}", "Content-Length": "0"}
    assert _request(port, "POST", path, same)[0] == 404
    assert _request(port, "POST", path, {"Host": host, "Content-Length": "0"})[0] == 404


def test_cookie_holds_no_token_and_is_scoped_to_the_port(tmp_path: Path) -> None:
    token = "s3cret-token-value"
    node = start_in_process_node(tmp_path, host="0.0.0.0", token=token)
    try:
        port = node.http_port
        assert port is not None
        status, headers = _request(port, "GET", f"/?token={token}",
                                   {"Host": f"127.0.0.1:{port}"})
        assert status == 200
        cookie = headers["set-cookie"]
        assert cookie.startswith(f"{cookie_name(port)}={session_value(token)}")
        assert token not in cookie
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        assert "path=/" in cookie.lower()
        sent = {"Host": f"127.0.0.1:{port}",
                "Cookie": f"{cookie_name(port)}={session_value(token)}"}
        assert _request(port, "GET", "/api/studies", sent)[0] == 200
        # the raw token in the cookie, or the cookie of another port, is no session
        raw = {"Host": f"127.0.0.1:{port}", "Cookie": f"{cookie_name(port)}={token}"}
        assert _request(port, "GET", "/api/studies", raw)[0] == 401
        other = {"Host": f"127.0.0.1:{port}",
                 "Cookie": f"{cookie_name(port + 1)}={session_value(token)}"}
        assert _request(port, "GET", "/api/studies", other)[0] == 401
    finally:
        node.stop()
