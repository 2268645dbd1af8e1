"""HTTP interface: status pages for people, a JSON API, ``/healthz`` and ``/metrics``.

Bound to loopback by default. When a token is configured every request but ``/healthz`` must
carry it (``Authorization: Bearer <token>``, a ``token`` query parameter, or the cookie a
browser gets after using the query parameter once; the cookie holds a value derived from the
token, not the token, and its name carries the port so other services on the host never get
it).

Even on loopback, where no token is needed, two checks keep a web page in the user's browser
from using the node (see :func:`request_guard`): the Host header must name this node (a
rebound DNS name gets 421), and a state-changing request from another origin gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import threading
from io import BytesIO
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydicom import dcmread

from service.report import pages
from service.report.cohort import cohort_statistics, statistics_json
from service.report.http_limits import bounded_h11
from service.storage.store import is_valid_uid

if TYPE_CHECKING:
    from service.node import Node

TOKEN_COOKIE = "hypoxnode_session"
OPEN_PATHS = {"/healthz"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def session_value(token: str) -> str:
    """What the cookie holds: an HMAC of a fixed label under the token (never the token)."""
    return hmac.new(token.encode(), b"hypoxnode-session", hashlib.sha256).hexdigest()


def cookie_name(port: int) -> str:
    """The session cookie's name for the node's HTTP port (cookies are not scoped by port)."""
    return f"{TOKEN_COOKIE}_{port}"


def host_name(header: str) -> str:
    """The host part of a Host or Origin authority (port and IPv6 brackets removed)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def allowed_host_names(bound_host: str, extra: list[str]) -> set[str] | None:
    """Host names accepted in the Host header, or None for any (wildcard bind, no list)."""
    names = {name.lower() for name in extra}
    try:
        wildcard = ipaddress.ip_address(bound_host).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard and not names:
        return None
    return names | LOOPBACK_NAMES | ({bound_host.lower()} if not wildcard else set())


def request_guard(request: Request, allowed: set[str] | None) -> Response | None:
    """421 for a Host this node does not answer to; 403 for a state-changing request from a
    browser page of another origin (Origin, or Sec-Fetch-Site: cross-site). None: go on."""
    host = request.headers.get("host", "")
    if allowed is not None and host_name(host) not in allowed:
        return JSONResponse({"error": "this node does not answer to that Host"},
                            status_code=421)
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("origin")
    if origin is not None:
        authority = origin.split("://", 1)[-1].rstrip("/")
        if origin == "null" or authority.lower() != host.lower():
            return JSONResponse({"error": "cross-origin request refused"}, status_code=403)
    if request.headers.get("sec-fetch-site", "") == "cross-site":
        return JSONResponse({"error": "cross-site request refused"}, status_code=403)
    return None


def create_app(node: Node) -> FastAPI:
    """The FastAPI application serving ``node``'s state."""
    app = FastAPI(title="hypoxnode", version=pages.software_version(), docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)
    http = node.config.http
    token = http.token
    allowed = allowed_host_names(http.host, http.allowed_hosts)

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Response:
        if not token or request.url.path in OPEN_PATHS:
            return await call_next(request)  # type: ignore[no-any-return]
        name = cookie_name(request.url.port or http.port)
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = given or request.query_params.get("token", "")
        valid = bool(given) and hmac.compare_digest(given.encode(), token.encode())
        cookie = request.cookies.get(name, "")
        valid = valid or (bool(cookie) and hmac.compare_digest(
            cookie.encode(), session_value(token).encode()))
        if not valid:
            return JSONResponse({"error": "missing or wrong token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        response: Response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(name, session_value(token), httponly=True, samesite="strict",
                                path="/", secure=request.url.scheme == "https")
        return response

    # added last, so it runs first: nothing is answered to a foreign Host or Origin
    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        refused = request_guard(request, allowed)
        if refused is not None:
            return refused
        return await call_next(request)  # type: ignore[no-any-return]

    def study_or_404(study_uid: str) -> dict[str, Any]:
        info = node.index.study(study_uid) if is_valid_uid(study_uid) else None
        if info is None:
            raise HTTPException(404, f"no study {study_uid}")
        return info

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "listening": node.listening, "version": pages.software_version()}

    @app.get("/metrics")
    def metrics() -> Response:
        node.refresh_gauges()
        return Response(generate_latest(node.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/status")
    def status() -> dict[str, Any]:
        return node.status()

    def cohort() -> list[Any]:
        return cohort_statistics(node.index.all_facts(), node.config.follow_up.test_retest_days)

    @app.get("/api/repeatability")
    def repeatability() -> dict[str, Any]:
        """Test-retest statistics per tracer and figure over the index's pairs."""
        return {
            "test_retest_days": node.config.follow_up.test_retest_days,
            "statistics": statistics_json(cohort()),
        }

    @app.get("/api/studies")
    def studies(limit: int = 200) -> list[dict[str, Any]]:
        return node.index.studies(limit=limit)

    @app.get("/api/studies/{study_uid}")
    def study(study_uid: str) -> dict[str, Any]:
        return study_or_404(study_uid)

    @app.post("/api/studies/{study_uid}/reprocess")
    def reprocess(study_uid: str) -> dict[str, Any]:
        study_or_404(study_uid)
        if not node.reprocess(study_uid):
            raise HTTPException(409, "the study is being received or processed; try later")
        return {"study_instance_uid": study_uid, "state": "queued"}

    @app.post("/api/studies/{study_uid}/send")
    def send(study_uid: str, destination: str | None = None) -> dict[str, Any]:
        study_or_404(study_uid)
        try:
            queued = node.send(study_uid, destination)
        except KeyError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"study_instance_uid": study_uid, "queued": queued}

    @app.get("/studies/{study_uid}/summary.png")
    def summary_png(study_uid: str) -> Response:
        info = study_or_404(study_uid)
        summaries = [r for r in info["results"] if r["kind"] == "SC"]
        if not summaries:
            raise HTTPException(404, "no summary for this study")
        dataset = dcmread(summaries[-1]["path"])
        buffer = BytesIO()
        Image.fromarray(dataset.pixel_array).save(buffer, format="PNG")
        return Response(buffer.getvalue(), media_type="image/png")

    @app.get("/", response_class=HTMLResponse)
    def home() -> str:
        return pages.study_list(node.index.studies(with_results=True), node.status(), cohort())

    @app.get("/studies/{study_uid}", response_class=HTMLResponse)
    def study_page(study_uid: str) -> str:
        return pages.study_detail(study_or_404(study_uid))

    return app


class HttpServer:
    """Uvicorn serving the app in a background thread."""

    def __init__(self, node: Node) -> None:
        http = node.config.http
        config = uvicorn.Config(create_app(node), host=http.host, port=http.port,
                                log_level="warning", access_log=False, lifespan="off",
                                http=bounded_h11(http.request_header_timeout_s),
                                limit_concurrency=http.max_connections)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    def start(self, timeout_s: float = 10.0) -> None:
        """Start serving; returns once the socket is bound."""
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout_s / 0.05)):
            if self._server.started:
                return
            deadline.wait(0.05)
        raise TimeoutError("the HTTP interface did not start")

    @property
    def port(self) -> int:
        """The bound port."""
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(10)
