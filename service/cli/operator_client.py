"""``hypoxnode status | reprocess | send``: operator commands talking to the running node.

They use the node's HTTP API at ``http.host``/``http.port`` from the same configuration
(with ``http.token`` when one is set).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from service.config import Config

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_REFUSED = 2


class ApiError(Exception):
    """The node answered with an error status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


def call(config: Config, method: str, path: str) -> Any:
    """One request to the node's API; returns the decoded JSON."""
    host = config.http.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    request = urllib.request.Request(f"http://{host}:{config.http.port}{path}", method=method)
    if config.http.token:
        request.add_header("Authorization", f"Bearer {config.http.token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        try:
            detail = json.loads(body).get("detail") or json.loads(body).get("error") or body
        except (ValueError, AttributeError):
            detail = body
        raise ApiError(exc.code, str(detail)) from None


def run_operator(command: str, config: Config, study_uid: str | None = None,
                 destination: str | None = None, as_json: bool = False) -> int:
    """Run one operator command and print its answer; returns the exit status."""
    quoted = urllib.parse.quote(study_uid or "", safe="")
    try:
        if command == "status":
            answer: Any = {"node": call(config, "GET", "/api/status"),
                           "studies": call(config, "GET", "/api/studies?limit=20")}
        elif command == "reprocess":
            answer = call(config, "POST", f"/api/studies/{quoted}/reprocess")
        elif command == "send":
            query = f"?destination={urllib.parse.quote(destination)}" if destination else ""
            answer = call(config, "POST", f"/api/studies/{quoted}/send{query}")
        else:
            raise ValueError(f"unknown operator command {command!r}")
    except ApiError as exc:
        print(f"hypoxnode {command}: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (urllib.error.URLError, OSError) as exc:
        print(f"hypoxnode {command}: the node's HTTP interface at {config.http.host}:"
              f"{config.http.port} does not answer ({exc}); is `hypoxnode serve` running?",
              file=sys.stderr)
        return EXIT_UNREACHABLE
    if as_json or command != "status":
        print(json.dumps(answer, indent=2))
    else:
        print(_status_text(answer))
    return EXIT_OK


def _status_text(answer: dict[str, Any]) -> str:
    node = answer["node"]
    lines = [
        f"{node['ae_title']} on port {node['port']}: "
        f"{'listening' if node['listening'] else 'not listening'}",
        "studies: " + (", ".join(f"{k} {v}" for k, v in sorted(node["studies"].items()))
                       or "none"),
        "exports: " + (", ".join(f"{k} {v}" for k, v in sorted(node["exports"].items()))
                       or "none"),
    ]
    for study in answer["studies"]:
        reason = f"  ({study['error']})" if study.get("error") else ""
        lines.append(f"  {study['state']:<10} {study['instances']:>5}  "
                     f"{study['study_instance_uid']}{reason}")
    return "\n".join(lines)
