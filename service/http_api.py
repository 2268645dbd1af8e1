"""HTTP interface: status pages for people, a JSON API, ``/healthz`` and ``/metrics``.

Bound to loopback by default. When a token is configured every request but ``/healthz`` must
carry it (``Authorization: Bearer <token>``, a ``token`` query parameter, or the cookie a
browser gets after using the query parameter once).
"""

from __future__ import annotations

import hmac
import threading
from io import BytesIO
from typing import TYPE_CHECKING, Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydicom import dcmread

from service import pages
from service.cohort import cohort_statistics, statistics_json
from service.store import is_valid_uid

if TYPE_CHECKING:
    from service.node import Node

TOKEN_COOKIE = "hypoxnode_token"
OPEN_PATHS = {"/healthz"}


def create_app(node: Node) -> FastAPI:
    """The FastAPI application serving ``node``'s state."""
    app = FastAPI(title="hypoxnode", version=pages.software_version(), docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)
    token = node.config.http.token

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Response:
        if not token or request.url.path in OPEN_PATHS:
            return await call_next(request)  # type: ignore[no-any-return]
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = given or request.query_params.get("token", "") or request.cookies.get(
            TOKEN_COOKIE, "")
        if not hmac.compare_digest(given.encode(), token.encode()):
            return JSONResponse({"error": "missing or wrong token"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        response: Response = await call_next(request)
        if request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

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
                                log_level="warning", access_log=False, lifespan="off")
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
